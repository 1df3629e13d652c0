"""xkd: audio-visual self-supervised video representation learning (XKD, CCL) with their evaluation protocols.

    import xkd
    encoders = xkd.load("runs/xkd/weights.safetensors")
    features = encoders.encode_video(clips)  # [B, D]
"""

from xkd.api import Encoders, load
from xkd.version import __version__

__all__ = ["Encoders", "load", "__version__"]
