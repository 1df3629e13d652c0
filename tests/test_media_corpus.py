"""Awkward and broken media (tests/bad_media.py) through decoding, `xkd data check`, pretraining, evaluation and
extraction: every file decodes to the right frames and samples or is rejected with a documented reason, and no
pipeline stops because of one file.

A CSV manifest is UTF-8 text and cannot name a file whose name is not UTF-8, so that file is exercised through the
folder inputs of `xkd data check` and extraction (see test_manifest_keeps_non_utf8_names for the manifest side).
"""

import io
import json
import logging
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from bad_media import FPS, HUGE_SIZE, SAMPLE_RATE, VFR_TIMES, WINDOW, build_corpus, non_utf8_name, \
    write_corpus_manifest, write_random_bytes
from eval_fixtures import tiny_config
from media_fixtures import read_index
from xkd.api import random_encoders
from xkd.datasets.check import run_check
from xkd.data.manifest import Manifest, ManifestRow, read_manifest, write_manifest
from xkd.data.media import REASONS, MediaError, decode_clip, probe
from xkd.engine.checkpoint import latest_checkpoint, load_checkpoint
from xkd.engine.weights import load_weights
from xkd.engine.logger import read_metrics
from xkd.engine.pretrain import pretrain
from xkd.eval.extract import ExtractOptions, extract_to_file, manifest_from_target
from xkd.eval.run import EvalOptions, evaluate
from xkd.eval.tasks import tasks_for

SHORT_SIDE = 32
FRAMES = round(WINDOW * FPS)
SAMPLES = round(WINDOW * SAMPLE_RATE)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(folder, cases by file name, manifest CSV of the cases it can hold)."""
    root = tmp_path_factory.mktemp("corpus")
    cases = build_corpus(root)
    return root, {c.name: c for c in cases}, write_corpus_manifest(root, cases)


def listed(cases, source: str) -> list:
    """The cases a ``source`` lists: the corpus "folder" (files on disk) or its "manifest" CSV."""
    return [c for c in cases.values() if (c.on_disk if source == "folder" else c.in_manifest)]


def expected_bad(cases, source: str) -> dict[str, str]:
    """Absolute path -> reason of every case listed by ``source`` that a 2 s audio-visual clip cannot come from."""
    return {str(c.path): c.reason for c in listed(cases, source) if c.reason is not None}


def decode(path, **kwargs):
    args = {"start": 0.0, "duration": WINDOW, "fps": FPS, "short_side": SHORT_SIDE, "sample_rate": SAMPLE_RATE}
    return decode_clip(path, **{**args, **kwargs})


def amplitude(audio, freq: float) -> float:
    """Amplitude of the ``freq`` Hz component of ``audio`` [S] at SAMPLE_RATE (an exact bin for these tones)."""
    audio = np.asarray(audio, dtype=np.float64)
    return 2 * abs(np.fft.rfft(audio)[round(freq * len(audio) / SAMPLE_RATE)]) / len(audio)


# ------------------------------------------------------------------------------------------------ file by file


def test_each_file_decodes_or_is_rejected_with_its_reason(corpus):
    _, cases, _ = corpus
    wrong = []
    for name, case in cases.items():
        try:
            clip = decode(case.path)
        except MediaError as e:
            assert e.reason in REASONS and e.path == str(case.path)
            if e.reason != case.reason:
                wrong.append((name, case.reason, f"{e.reason}: {e.message}"))
            continue
        if case.reason is not None:
            wrong.append((name, case.reason, "decoded"))
            continue
        t, h, w, c = clip.video.shape
        assert (t, min(h, w), c) == (FRAMES, SHORT_SIDE, 3) and clip.video.dtype == torch.uint8, name
        assert clip.audio.shape == (SAMPLES,) and clip.audio.dtype == torch.float32, name
        assert torch.isfinite(clip.audio).all() and clip.audio.abs().max() <= 1.0, name
        assert amplitude(clip.audio, 440.0) > 0.04, name  # every good file carries a 440 Hz component
    assert not wrong, wrong


def test_partial_files_give_the_streams_they_have(corpus):
    _, cases, _ = corpus
    silent = decode(cases["video_only.mp4"].path, missing_audio="silence")
    assert [read_index(f) for f in silent.video] == list(range(FRAMES))
    assert silent.audio.shape == (SAMPLES,) and not silent.audio.any()
    for name in ("audio_only.mp4", "wav_named.mp4"):  # AAC in MP4, and PCM WAV behind an .mp4 name
        clip = decode(cases[name].path, video=False)
        assert clip.video is None and clip.audio.shape == (SAMPLES,)
        assert amplitude(clip.audio, 440.0) == pytest.approx(0.5, rel=0.05), name
    one = decode(cases["one_frame.mp4"].path, duration=1 / FPS, audio=False)
    assert one.video.shape == (1, SHORT_SIDE, 43, 3) and read_index(one.video[0]) == 0
    short = decode(cases["shorter_than_window.mp4"].path, duration=1.0)
    assert [read_index(f) for f in short.video] == list(range(8)) and short.audio.shape == (SAMPLE_RATE,)


def test_variable_frame_rate_picks_the_frame_nearest_each_target(corpus):
    _, cases, _ = corpus
    clip = decode(cases["vfr.mp4"].path)
    times = np.array(VFR_TIMES)
    nearest = [int(np.argmin(np.abs(times - k / FPS))) for k in range(FRAMES)]
    assert nearest[:4] == [0, 2, 2, 3]  # irregular: frame 1 is never nearest, frame 2 is taken twice
    assert [read_index(f) for f in clip.video] == nearest


@pytest.mark.parametrize(
    "name, per_channel",
    [("audio_8k.mp4", [0.5]), ("audio_48k.mp4", [0.5]), ("audio_stereo.mp4", [0.25, 0.25]),
     ("audio_5.1.mp4", [0.5 / 6] * 6)],
)
def test_sample_rates_and_layouts_are_resampled_and_averaged_to_mono(corpus, name, per_channel):
    """Channel c holds a 0.5 tone at 440 (c + 1) Hz; mono is their mean, so each tone keeps 0.5 / channels."""
    _, cases, _ = corpus
    info = probe(cases[name].path)
    assert info.channels == len(per_channel)
    audio = decode(cases[name].path).audio
    assert audio.shape == (SAMPLES,)
    for c, expected in enumerate(per_channel):
        if len(per_channel) == 6 and c == 3:
            continue  # 5.1 channel 3 is the LFE, which the AAC encoder low-passes at 120 Hz
        assert amplitude(audio, 440.0 * (c + 1)) == pytest.approx(expected, rel=0.05), (name, c)


def test_extreme_aspect_ratios_keep_their_shape(corpus):
    _, cases, _ = corpus
    tall = decode(cases["tall_1x2000.mp4"].path, audio=False).video  # 1 px wide: short side 1 -> 32
    wide = decode(cases["wide_2000x2.mp4"].path, audio=False).video
    assert tall.shape == (FRAMES, 2000 * SHORT_SIDE, SHORT_SIDE, 3)
    assert wide.shape == (FRAMES, SHORT_SIDE, 1000 * SHORT_SIDE, 3)
    assert [read_index(f) for f in tall] == list(range(FRAMES))
    assert [read_index(f) for f in wide] == list(range(FRAMES))


_PEAK_SCRIPT = """
import json, resource, sys
from xkd.data.media import decode_clip, probe
probe(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
clip = decode_clip(sys.argv[1], 0.0, 2.0, 8.0, short_side=32)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"shape": list(clip.video.shape), "growth_mb": (after - before) / 1024}))
"""


def test_4k_frames_are_resized_while_decoding_with_bounded_memory(corpus):
    """Two 4096x2160 frames make a 16-frame clip; keeping full-size RGB copies would take 16 x 26 MB."""
    _, cases, _ = corpus
    path = cases["huge_4k.mp4"].path
    clip = decode(path)
    width = round(HUGE_SIZE[1] * SHORT_SIDE / HUGE_SIZE[0])
    assert clip.video.shape == (FRAMES, SHORT_SIDE, width, 3)
    assert [read_index(f) for f in clip.video] == [0] * 5 + [1] * 11  # frames at 0 s and 1 s; ties go to the first
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    peak = json.loads(done.stdout)
    assert peak["shape"] == [FRAMES, SHORT_SIDE, width, 3]
    assert peak["growth_mb"] < 150, f"peak RSS grew by {peak['growth_mb']:.0f} MB while decoding two 4K frames"


def test_odd_file_names_decode(corpus):
    root, cases, _ = corpus
    odd = non_utf8_name(b"caf\xe9 \xff")
    if odd not in cases:
        pytest.skip("this file system refuses names that are not UTF-8")
    for name in (odd, "good c with spaces.mp4"):
        assert probe(root / name).has_video
        assert [read_index(f) for f in decode(root / name).video] == list(range(FRAMES))


# -------------------------------------------------------------------------------------------------- pipelines


def _check_lines(text: str) -> dict[str, str]:
    """path -> reason from `xkd data check` output lines ``PATH: REASON: detail``."""
    return dict(line.split(": ", 2)[:2] for line in text.splitlines() if not line.startswith("checked "))


def test_data_check_reports_every_bad_file_with_its_reason(corpus):
    root, cases, manifest = corpus
    for target, source in ((root, "folder"), (manifest, "manifest")):
        out = io.StringIO()
        assert run_check(target, out=out) == 1
        text = out.getvalue()
        expected = expected_bad(cases, source)
        assert _check_lines(text) == expected, text
        total = len(listed(cases, source))
        assert text.splitlines()[-1].startswith(f"checked {total} files: {len(expected)} with problems")


def test_data_check_prints_non_utf8_names_on_a_strict_utf8_terminal(tmp_path):
    write_random_bytes(tmp_path / non_utf8_name(b"broken \xff"))
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    assert run_check(tmp_path, out=out) == 1
    text = raw.getvalue().decode("utf-8")
    assert "broken" in text and ": unreadable: " in text


def test_manifest_keeps_non_utf8_names(tmp_path):
    name = non_utf8_name(b"caf\xe9 \xff")
    path = write_manifest(Manifest([ManifestRow(name, ("a",))], tmp_path), tmp_path / "m.csv")
    assert [r.path for r in read_manifest(path)] == [name]


def test_pretraining_skips_and_counts_every_bad_file_with_and_without_workers(corpus, tmp_path):
    """Two steps whose batches hold every manifest row once: all bad files are met, replaced and counted, and
    loading in two worker processes changes nothing."""
    _, cases, manifest = corpus
    rows = len(read_manifest(manifest))
    batch = -(-rows // 2)
    expected = expected_bad(cases, "manifest")
    runs = {}
    for workers in (0, 2):
        cfg = tiny_config(f"data.manifest={manifest}", "data.split=", f"data.batch_size={batch}",
                          f"run.epoch_size={2 * batch}", f"data.num_workers={workers}", "optim.epochs=2",
                          "optim.warmup_epochs=1", "run.log_every=1", "run.peak_tflops=1.0")
        out = tmp_path / f"workers{workers}"
        summary = pretrain(cfg, out, max_steps=2, progress=False)
        assert summary["steps"] == 2
        assert summary["bad_media"] == dict(Counter(expected.values()))
        assert read_metrics(out)["bad_media_files"][-1] == len(expected)
        state = load_checkpoint(latest_checkpoint(out))
        assert dict(map(tuple, state["bad_media"])) == expected
        assert all(np.isfinite(v) for v in summary["final"].values())
        parts, _ = load_weights(out / "weights.safetensors")
        runs[workers] = {f"{p}.{k}": v for p, sd in parts.items() for k, v in sd.items()}
    assert all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_evaluation_skips_and_reports_bad_files(corpus, caplog):
    _, cases, manifest = corpus
    encoders = random_encoders(tiny_config(), seed=3)
    opts = EvalOptions(train_clips=1, test_clips=1, num_workers=0, progress=False, knn_k=3)
    tasks = tasks_for(str(manifest), modality="av")
    with caplog.at_level(logging.WARNING, logger="xkd.eval"):
        result = evaluate(encoders, tasks, "knn", opts)[tasks[0].name]
    skipped = {r.args[0]: r.args[1] for r in caplog.records
               if r.name == "xkd.eval.extract" and r.msg == "skipped %s (%s)"}
    assert skipped == expected_bad(cases, "manifest")
    summary_lines = [r.getMessage() for r in caplog.records if r.name == "xkd.eval.run"]
    assert f"{len(skipped)} files could not be decoded and were left out" in summary_lines
    good_test = sum(1 for r in read_manifest(manifest) if r.split == "test"
                    and cases[r.path].reason is None)
    assert result["confusion"].sum() == good_test
    assert 0.0 <= result["summary"]["top1"]["mean"] <= 1.0


def test_extraction_from_a_folder_skips_and_reports_bad_files(corpus, tmp_path):
    root, cases, _ = corpus
    encoders = random_encoders(tiny_config(), seed=3)
    manifest = manifest_from_target(root)
    assert sorted(str(manifest.resolve(r)) for r in manifest) == sorted(str(c.path) for c in listed(cases, "folder"))
    opts = ExtractOptions(clips_per_video=1, num_workers=2, batch_size=8, progress=False)
    out, videos, failed = extract_to_file(encoders, manifest, tmp_path / "features.npz", ["video", "audio"], opts)
    assert dict(failed) == expected_bad(cases, "folder")
    good = sorted(c.name for c in listed(cases, "folder") if c.reason is None)
    assert videos == len(good)
    with np.load(out, allow_pickle=False) as z:
        assert z["video_video"].shape == (len(good), 32) and np.isfinite(z["audio_video"]).all()
        assert sorted(str(z["paths"][row]) for row in z["video_row"]) == good
