import io

import pytest
from media_fixtures import make_av, make_empty, make_text, tone, truncate

from xkd.datasets.check import check_file, check_files, collect_targets, run_check
from xkd.data.manifest import Manifest, ManifestRow, write_manifest
from xkd.datasets.media_writer import write_media


@pytest.fixture()
def folder(tmp_path):
    """good.mp4 plus the four classic bad files, one in a subfolder, and a non-media file that is ignored."""
    make_av(tmp_path / "good.mp4", seconds=2.0)
    truncate(make_av(tmp_path / "sub" / "cut.mp4", seconds=2.0), 0.5)
    make_empty(tmp_path / "empty.mp4")
    make_av(tmp_path / "mute.mp4", seconds=2.0, audio=False)
    make_text(tmp_path / "renamed.mp4")
    (tmp_path / "notes.txt").write_text("not media")
    return tmp_path


def test_run_check_reports_every_bad_file(folder):
    out = io.StringIO()
    assert run_check(str(folder), out=out) == 1
    text = out.getvalue()
    expected = {
        "sub/cut.mp4": "truncated",
        "empty.mp4": "empty-file",
        "mute.mp4": "no-audio",
        "renamed.mp4": "unreadable",
    }
    lines = text.strip().splitlines()
    for name, reason in expected.items():
        assert any(line.startswith(f"{folder / name}: {reason}: ") for line in lines), (name, text)
    assert "good.mp4" not in text and "notes.txt" not in text and "Traceback" not in text
    assert lines[-1].startswith("checked 5 files: 4 with problems")
    for reason in expected.values():
        assert f"{reason} 1" in lines[-1]


def test_clean_targets_return_zero(folder):
    out = io.StringIO()
    assert run_check(folder / "good.mp4", out=out) == 0 and "all fine" in out.getvalue()
    assert run_check(folder / "mute.mp4", need_audio=False, out=io.StringIO()) == 0
    manifest = write_manifest(Manifest([ManifestRow("good.mp4"), ManifestRow("mute.mp4")], folder), folder / "m.csv")
    assert collect_targets(str(manifest)) == [folder / "good.mp4", folder / "mute.mp4"]
    out = io.StringIO()
    assert run_check(manifest, out=out) == 1 and "mute.mp4: no-audio" in out.getvalue()


def test_unusable_targets_return_two_without_traceback(tmp_path):
    out = io.StringIO()
    assert run_check(tmp_path / "nowhere", out=out) == 2 and "no such file" in out.getvalue()
    (tmp_path / "bad.csv").write_text("file\nx.mp4\n")
    assert run_check(tmp_path / "bad.csv", out=io.StringIO()) == 2
    (tmp_path / "empty_dir").mkdir()
    assert run_check(tmp_path / "empty_dir", out=io.StringIO()) == 2


def test_full_decode_finds_what_the_header_hides(tmp_path):
    """A cut MKV still has a header claiming 3 s; only decoding shows where it stops."""
    cut = truncate(make_av(tmp_path / "cut.mkv", seconds=3.0, fps=25), 0.5)
    problem = check_file(cut, min_duration=1.1, need_audio=True, need_video=True)
    assert problem.reason == "truncated" and "header declares" in problem.detail
    short = make_av(tmp_path / "short.mp4", seconds=1.0)
    assert check_file(short, 1.1, True, True).reason == "too-short"
    assert check_file(short, 0.9, True, True) is None
    garbled = write_media(tmp_path / "aac.wav", audio=tone(1.0, 16000), sample_rate=16000)  # AAC payload in WAV
    assert check_file(garbled, 0.5, need_audio=True, need_video=False).reason == "decode-failed"
    no_video = make_av(tmp_path / "voice.m4a", seconds=2.0, video=False)
    problems = check_files([no_video, short], 1.1, need_audio=True, need_video=True, progress=False)
    assert [(p.path, p.reason) for p in problems] == [(no_video, "no-video"), (short, "too-short")]
