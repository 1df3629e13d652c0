"""Regenerate the synthetic spoken digits vendored in ``src/xkd/assets/synthetic_digits`` (maintainers only).

    apt-get install espeak-ng        # Debian; the files were made with eSpeak NG 1.51
    python tools/synthesize_voices.py

Each voice is an eSpeak NG language with a voice variant, a pitch and a speed (:data:`VOICES`); each digit is the
numeral read in that language, converted to 16 kHz mono, trimmed of its leading and trailing silence and stored as raw
G.722 like the real recordings beside it. AV-Digits v2 uses these voices for training clips only, never for a test
clip. Running the script again gives the same files for the same eSpeak NG version.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "xkd" / "assets" / "synthetic_digits"
SAMPLE_RATE = 16000
LANGUAGES = {"en": "en-us", "es": "es-419", "fr": "fr-fr", "it": "it", "ru": "ru"}
VARIANTS = ("m1", "m3", "m5", "m7", "f1", "f2", "f4", "klatt2")  # four male-, three female-sounding, one Klatt
PITCHES = (35, 60, 45, 30, 55, 65, 50, 40)  # eSpeak pitch 0-99, one per variant
SPEEDS = (150, 165, 140, 175, 155, 145, 170, 160)  # words per minute, one per variant
VOICES = [
    {"name": f"{lang}_synth_{variant}", "language": lang, "espeak_voice": f"{code}+{variant}", "pitch": pitch,
     "speed": speed}
    for lang, code in LANGUAGES.items()
    for variant, pitch, speed in zip(VARIANTS, PITCHES, SPEEDS)
]


def speak(voice: dict, text: str) -> np.ndarray:
    """eSpeak NG's reading of ``text``: float32 [S] at 16 kHz, leading and trailing silence removed."""
    cmd = ["espeak-ng", "-v", voice["espeak_voice"], "-p", str(voice["pitch"]), "-s", str(voice["speed"]), "--stdout",
           text]
    wav = subprocess.run(cmd, check=True, capture_output=True).stdout
    with av.open(io.BytesIO(wav), format="wav") as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    audio = np.concatenate(chunks).astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    margin = int(0.02 * SAMPLE_RATE)
    return audio[max(loud[0] - margin, 0) : loud[-1] + margin]


def write_g722(path: Path, audio: np.ndarray) -> None:
    """Raw G.722 (16 kHz) of ``audio`` float [S] in [-1, 1]."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="g722") as container:
        stream = container.add_stream("g722", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray((np.clip(audio, -1, 1) * 32767).astype(np.int16)[None], format="s16",
                                           layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    path.write_bytes(buffer.getvalue())


def main() -> int:
    version = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True).stdout
    version = version.split("  Data at")[0].strip()  # drop the local data path
    for voice in VOICES:
        folder = OUT / voice["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for digit in range(10):
            write_g722(folder / f"{digit}.g722", speak(voice, str(digit)))
    (OUT / "voices.json").write_text(json.dumps({"generator": version, "sample_rate": SAMPLE_RATE,
                                                 "voices": VOICES}, indent=2) + "\n")
    print(f"{len(VOICES)} voices x 10 digits -> {OUT} ({version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
