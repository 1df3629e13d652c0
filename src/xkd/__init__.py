"""xkd: audio-visual self-supervised video representation learning (XKD, CCL) with their evaluation protocols."""

__version__ = "0.1.0"
