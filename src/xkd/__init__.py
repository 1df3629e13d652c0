"""xkd: audio-visual self-supervised video representation learning (XKD, CCL) with their evaluation protocols.

    import xkd
    encoders = xkd.load("runs/xkd/weights.safetensors")
    features = encoders.encode_video(clips)  # [B, D]
"""

__version__ = "0.1.0"

from xkd.api import Encoders, load  # noqa: E402

__all__ = ["Encoders", "load", "__version__"]
