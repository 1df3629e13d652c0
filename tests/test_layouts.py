"""Official dataset layouts -> manifests, read from tiny trees of real media files in each layout."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from xkd.datasets.layouts import (
    KINETICS_SOUND_CLASSES,
    LAYOUTS,
    fsd50k_vocabulary,
    manifest_summary,
    read_audioset,
    read_esc50,
    read_fsd50k,
    read_hmdb51,
    read_kinetics400,
    read_kinetics_sound,
    read_layout,
    read_ucf101,
    read_vggsound,
)
from xkd.data.manifest import ManifestError, read_manifest, write_manifest
from xkd.datasets.media_writer import write_media


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """One real file per container (1 s, 32x32 video at 8 fps, 16 kHz tone), copied into every tree."""
    folder = tmp_path_factory.mktemp("media")
    audio = 0.2 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    video = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    return {
        ".mp4": write_media(folder / "clip.mp4", video, fps=8, audio=audio, sample_rate=16000),
        ".avi": write_media(folder / "clip.avi", video, fps=8),
        ".wav": write_media(folder / "clip.wav", audio=audio, sample_rate=16000, audio_codec="pcm_s16le"),
    }


def put(media, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(media[path.suffix], path)
    return path


def text(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def table(manifest) -> dict:
    """path -> (labels, split, fold) of every row."""
    return {r.path: (r.labels, r.split, r.fold) for r in manifest}


def assert_round_trip(manifest, tmp_path):
    assert all(manifest.resolve(r).is_file() for r in manifest)
    back = read_manifest(write_manifest(manifest, tmp_path / "written" / "manifest.csv"), root=manifest.root)
    assert back.rows == manifest.rows
    assert [manifest.resolve(r) for r in back] == [back.resolve(r) for r in back]


# ------------------------------------------------------------------------------------------------------- Kinetics


def kinetics_tree(root: Path, media) -> Path:
    """DeepMind-style CSVs in the root; train/ by label folder (both spellings), flat val/ and test/."""
    text(root / "train.csv", [
        "label,youtube_id,time_start,time_end,split,is_cc",
        '"air drumming",-abc123XYZ0,14,24,train,0',
        "abseiling,---QUuC4vJs,84,94,train,0",
        '"playing bagpipes",0a1b2c3d4e5,0,10,train,0',
        '"tapping pen",zz_top-9988,5,15,train,1',
    ])
    text(root / "validate.csv", [
        "label,youtube_id,time_start,time_end,split,is_cc",
        '"air drumming",vvvvvvvvvv1,30,40,val,0',
        '"playing bagpipes",vvvvvvvvvv2,1,11,val,0',
    ])
    text(root / "test.csv", ["youtube_id,time_start,time_end,split", "tttttttttt1,0,10,test"])
    put(media, root / "train/air_drumming/-abc123XYZ0_000014_000024.mp4")
    put(media, root / "train/abseiling/---QUuC4vJs_000084_000094.mp4")
    put(media, root / "train/playing bagpipes/0a1b2c3d4e5_000000_000010.mp4")
    put(media, root / "train/tapping_pen/zz_top-9988_000005_000015.mp4")
    put(media, root / "val/vvvvvvvvvv1_000030_000040.mp4")
    put(media, root / "val/vvvvvvvvvv2_000001_000011.mp4")
    put(media, root / "test/tttttttttt1_000000_000010.mp4")
    return root


def test_kinetics400_reads_labels_and_splits(tmp_path, media):
    root = kinetics_tree(tmp_path / "k400", media)
    m = read_kinetics400(root)
    assert table(m) == {
        "train/air_drumming/-abc123XYZ0_000014_000024.mp4": (("air drumming",), "train", None),
        "train/abseiling/---QUuC4vJs_000084_000094.mp4": (("abseiling",), "train", None),
        "train/playing bagpipes/0a1b2c3d4e5_000000_000010.mp4": (("playing bagpipes",), "train", None),
        "train/tapping_pen/zz_top-9988_000005_000015.mp4": (("tapping pen",), "train", None),
        "val/vvvvvvvvvv1_000030_000040.mp4": (("air drumming",), "val", None),
        "val/vvvvvvvvvv2_000001_000011.mp4": (("playing bagpipes",), "val", None),
        "test/tttttttttt1_000000_000010.mp4": ((), "test", None),
    }
    assert m.root == root
    assert [r.path for r in read_kinetics400(root, splits=["validate"])] == [
        "val/vvvvvvvvvv1_000030_000040.mp4",
        "val/vvvvvvvvvv2_000001_000011.mp4",
    ]
    assert_round_trip(m, tmp_path)


def test_kinetics400_annotations_folder_and_missing_pieces(tmp_path, media):
    root = tmp_path / "k400"
    header = "label,youtube_id,time_start,time_end,split"
    text(root / "annotations/train.csv", [header, "bowling,AAAAAAAAAAA,3,13,train"])
    text(root / "annotations/val.csv", [header, "bowling,BBBBBBBBBBB,7,17,val"])
    put(media, root / "train_256/AAAAAAAAAAA_000003_000013.mp4")
    put(media, root / "validate/bowling/BBBBBBBBBBB_000007_000017.mp4")

    with pytest.raises(FileNotFoundError, match=r"Kinetics train folder not found(.|\n)*expected layout"):
        read_kinetics400(root)
    m = read_kinetics400(root, split_dirs={"train": "train_256"})
    assert table(m) == {
        "train_256/AAAAAAAAAAA_000003_000013.mp4": (("bowling",), "train", None),
        "validate/bowling/BBBBBBBBBBB_000007_000017.mp4": (("bowling",), "val", None),
    }
    with pytest.raises(FileNotFoundError, match=r"test annotations \(test.csv\) not found"):
        read_kinetics400(root, splits=["train", "test"], split_dirs={"train": "train_256"})
    with pytest.raises(FileNotFoundError, match="no Kinetics annotation CSV"):
        read_kinetics400(tmp_path)
    text(root / "annotations/val.csv", [header, "bowling,BBBBBBBBBBB,7"])
    with pytest.raises(ManifestError, match=r"val.csv:2: time_end must be a number"):
        read_kinetics400(root, splits=["val"])


def test_kinetics400_missing_clips_are_reported_and_left_out(tmp_path, media, caplog):
    root = kinetics_tree(tmp_path / "k400", media)
    (root / "train/abseiling/---QUuC4vJs_000084_000094.mp4").unlink()
    with caplog.at_level(logging.WARNING, logger="xkd.datasets.layouts"):
        m = read_kinetics400(root, splits=["train"])
    assert len(m) == 3 and all("abseiling" not in r.labels for r in m)
    assert "1 of 4 files" in caplog.text and "train/---QUuC4vJs_000084_000094" in caplog.text
    with pytest.raises(FileNotFoundError, match="---QUuC4vJs_000084_000094"):
        read_kinetics400(root, splits=["train"], strict=True)
    shutil.rmtree(root / "train")
    for name in ("air_drumming", "playing bagpipes", "tapping_pen"):
        (root / "train" / name).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="none of the 4 files"):
        read_kinetics400(root, splits=["train"])


def test_kinetics_sound_keeps_only_its_32_classes(tmp_path, media):
    assert len(KINETICS_SOUND_CLASSES) == len(set(KINETICS_SOUND_CLASSES)) == 32
    assert {"playing_bagpipes", "tapping_pen", "blowing_out_candles", "tickling"} <= set(KINETICS_SOUND_CLASSES)
    root = kinetics_tree(tmp_path / "k400", media)
    # Clips of other classes need not be on disk: they are filtered out before files are looked up.
    shutil.rmtree(root / "train/abseiling")
    m = read_kinetics_sound(root, strict=True)
    assert table(m) == {
        "train/playing bagpipes/0a1b2c3d4e5_000000_000010.mp4": (("playing_bagpipes",), "train", None),
        "train/tapping_pen/zz_top-9988_000005_000015.mp4": (("tapping_pen",), "train", None),
        "val/vvvvvvvvvv2_000001_000011.mp4": (("playing_bagpipes",), "val", None),
    }
    assert set(m.classes()) <= set(KINETICS_SOUND_CLASSES)
    assert_round_trip(m, tmp_path)
    other = tmp_path / "no_ks"
    text(other / "train.csv", ["label,youtube_id,time_start,time_end,split", "abseiling,---QUuC4vJs,84,94,train"])
    put(media, other / "train/abseiling/---QUuC4vJs_000084_000094.mp4")
    with pytest.raises(ManifestError, match="list no files"):
        read_kinetics_sound(other)


# --------------------------------------------------------------------------------------------------------- UCF101

UCF_CLASSES = ["ApplyEyeMakeup", "BandMarching", "HandstandPushups"]


def ucf_video(cls: str, group: int) -> str:
    stem = "HandStandPushups" if cls == "HandstandPushups" else cls  # the official file names spell it this way
    return f"{cls}/v_{stem}_g{group:02d}_c01.avi"


def ucf_tree(root: Path, media) -> Path:
    """Folds 1 and 2 swap groups 1 and 2; lists use Windows line endings like the official ones."""
    for cls in UCF_CLASSES:
        for group in (1, 2):
            put(media, root / "UCF-101" / ucf_video(cls, group))
    lists = root / "ucfTrainTestlist"
    text(lists / "classInd.txt", [f"{i} {c}" for i, c in enumerate(UCF_CLASSES, 1)], newline="\r\n")
    for fold, (train_group, test_group) in {1: (2, 1), 2: (1, 2)}.items():
        train = [f"{ucf_video(c, train_group)} {i}" for i, c in enumerate(UCF_CLASSES, 1)]
        text(lists / f"trainlist0{fold}.txt", train, newline="\r\n")
        text(lists / f"testlist0{fold}.txt", [ucf_video(c, test_group) for c in UCF_CLASSES], newline="\r\n")
    return root


def test_ucf101_fold_selection(tmp_path, media):
    root = ucf_tree(tmp_path / "ucf", media)
    for fold, (train_group, test_group) in {1: (2, 1), 2: (1, 2)}.items():
        m = read_ucf101(root, fold=fold)
        expected = {f"UCF-101/{ucf_video(c, train_group)}": ((c,), "train", None) for c in UCF_CLASSES}
        expected |= {f"UCF-101/{ucf_video(c, test_group)}": ((c,), "test", None) for c in UCF_CLASSES}
        assert table(m) == expected
        assert m.classes() == UCF_CLASSES
    assert_round_trip(read_ucf101(root, fold=2), tmp_path)


def test_ucf101_errors(tmp_path, media, caplog):
    root = ucf_tree(tmp_path / "ucf", media)
    with pytest.raises(FileNotFoundError, match=r"trainlist03.txt(.|\n)*expected layout(.|\n)*classInd.txt"):
        read_ucf101(root, fold=3)
    with pytest.raises(ValueError, match="1..3"):
        read_ucf101(root, fold=4)
    (root / "UCF-101" / ucf_video("BandMarching", 1)).unlink()
    with caplog.at_level(logging.WARNING, logger="xkd.datasets.layouts"):
        assert len(read_ucf101(root, fold=1)) == 5
    assert "1 of 6 files" in caplog.text
    with pytest.raises(FileNotFoundError, match="v_BandMarching_g01_c01.avi"):
        read_ucf101(root, fold=1, strict=True)
    text(root / "ucfTrainTestlist/trainlist01.txt", [f"{ucf_video('BandMarching', 2)} 3"])
    with pytest.raises(ManifestError, match="class index 3 does not match folder 'BandMarching'"):
        read_ucf101(root, fold=1)
    shutil.rmtree(root / "UCF-101")
    with pytest.raises(FileNotFoundError, match="UCF101 video folder"):
        read_ucf101(root, fold=2)


# --------------------------------------------------------------------------------------------------------- HMDB51

HMDB_VIDEOS = {
    "brush_hair": [
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
        "Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi",
        "Ella_&_Ron_brush_hair_u_nm_np1_fr_med_1.avi",
    ],
    "sword_exercise": [
        "Blade_Of_Fury_-_Scene_1_sword_exercise_f_cm_np1_ri_med_3.avi",
        "Sword_&_Shield_(part_2)_sword_exercise_f_cm_np1_fr_med_0.avi",
        "#122_Cleaning_sword_exercise_u_nm_np1_fr_goo_1.avi",
    ],
}
HMDB_IDS = {1: ("1", "2", "0"), 2: ("2", "1", "1")}  # per split: the ids of the three videos of each class


def hmdb_tree(root: Path, media) -> Path:
    for cls, videos in HMDB_VIDEOS.items():
        for name in videos:
            put(media, root / cls / name)
        for split, ids in HMDB_IDS.items():
            lines = [f"{name} {i} " for name, i in zip(videos, ids)]  # official lines end with a space
            text(root / "testTrainMulti_7030_splits" / f"{cls}_test_split{split}.txt", lines)
    return root


def test_hmdb51_fold_selection_drops_unused(tmp_path, media):
    root = hmdb_tree(tmp_path / "hmdb", media)
    for fold, ids in HMDB_IDS.items():
        expected = {
            f"{cls}/{name}": ((cls,), {"1": "train", "2": "test"}[i], None)
            for cls, videos in HMDB_VIDEOS.items()
            for name, i in zip(videos, ids)
            if i != "0"
        }
        m = read_hmdb51(root, fold=fold)
        assert table(m) == expected
        assert len(m) == (4 if fold == 1 else 6)
    assert_round_trip(read_hmdb51(root, fold=1), tmp_path)


def test_hmdb51_missing_split_file_and_video(tmp_path, media, caplog):
    root = hmdb_tree(tmp_path / "hmdb", media)
    splits = root / "testTrainMulti_7030_splits"
    text(splits / "brush_hair_test_split3.txt", [f"{HMDB_VIDEOS['brush_hair'][0]} 1"])
    with pytest.raises(FileNotFoundError, match=r"sword_exercise_test_split3.txt(.|\n)*expected layout"):
        read_hmdb51(root, fold=3)
    (root / "sword_exercise" / HMDB_VIDEOS["sword_exercise"][0]).unlink()
    with caplog.at_level(logging.WARNING, logger="xkd.datasets.layouts"):
        m = read_hmdb51(root, fold=2)
    assert len(m) == 5 and "1 of 6 files" in caplog.text
    with pytest.raises(FileNotFoundError, match="Blade_Of_Fury"):
        read_hmdb51(root, fold=2, strict=True)
    text(splits / "brush_hair_test_split2.txt", [f"{HMDB_VIDEOS['brush_hair'][0]} 7"])
    with pytest.raises(ManifestError, match=r"brush_hair_test_split2.txt:1"):
        read_hmdb51(root, fold=2)
    with pytest.raises(FileNotFoundError, match="HMDB51 split folder"):
        read_hmdb51(tmp_path)


# --------------------------------------------------------------------------------------------------------- ESC-50


def esc50_tree(root: Path, media) -> Path:
    text(root / "meta/esc50.csv", [
        "filename,fold,target,category,esc10,src_file,take",
        "1-100032-A-0.wav,1,0,dog,True,100032,A",
        "1-100038-A-14.wav,1,14,chirping_birds,False,100038,A",
        "2-102414-C-17.wav,2,17,pouring_water,False,102414,C",
        "3-1000-A-1.wav,3,1,rooster,True,1000,A",
        "5-9032-A-0.wav,5,0,dog,True,9032,A",
    ])
    for name in ("1-100032-A-0.wav", "1-100038-A-14.wav", "2-102414-C-17.wav", "5-9032-A-0.wav"):
        put(media, root / "audio" / name)
    return root


def test_esc50_folds_and_labels(tmp_path, media, caplog):
    root = esc50_tree(tmp_path / "ESC-50-master", media)
    with caplog.at_level(logging.WARNING, logger="xkd.datasets.layouts"):
        m = read_esc50(root)
    assert "1 of 5 files" in caplog.text and "3-1000-A-1.wav" in caplog.text
    assert table(m) == {
        "audio/1-100032-A-0.wav": (("dog",), "", 1),
        "audio/1-100038-A-14.wav": (("chirping_birds",), "", 1),
        "audio/2-102414-C-17.wav": (("pouring_water",), "", 2),
        "audio/5-9032-A-0.wav": (("dog",), "", 5),
    }
    assert m.folds() == [1, 2, 5]
    assert [r.path for r in m.filter(exclude_folds=[1])] == ["audio/2-102414-C-17.wav", "audio/5-9032-A-0.wav"]
    assert [r.path for r in read_esc50(root, esc10=True)] == ["audio/1-100032-A-0.wav", "audio/5-9032-A-0.wav"]
    assert_round_trip(m, tmp_path)
    (root / "meta/esc50.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"ESC-50 metadata not found(.|\n)*filename,fold,target,category"):
        read_esc50(root)


# --------------------------------------------------------------------------------------------------------- FSD50K


def fsd50k_tree(root: Path, media) -> Path:
    truth = root / "FSD50K.ground_truth"
    vocabulary = ["2,Bark,/m/05tny_", "0,Electric_guitar,/m/02sgy", "1,Guitar,/m/0342h", "3,Dog,/m/0bt9lr"]
    text(truth / "vocabulary.csv", vocabulary)  # index order differs from line order
    text(truth / "dev.csv", [
        "fname,labels,mids,split",
        '64760,"Electric_guitar,Guitar","/m/02sgy,/m/0342h",train',
        '16399,"Bark,Dog","/m/05tny_,/m/0bt9lr",val',
    ])
    text(truth / "eval.csv", ["fname,labels,mids", "37199,Dog,/m/0bt9lr"])
    put(media, root / "FSD50K.dev_audio/64760.wav")
    put(media, root / "FSD50K.dev_audio/16399.wav")
    put(media, root / "FSD50K.eval_audio/37199.wav")
    return root


def test_fsd50k_multilabel_splits_and_vocabulary(tmp_path, media):
    root = fsd50k_tree(tmp_path / "fsd", media)
    assert fsd50k_vocabulary(root) == ["Electric_guitar", "Guitar", "Bark", "Dog"]
    m = read_fsd50k(root)
    assert table(m) == {
        "FSD50K.dev_audio/64760.wav": (("Electric_guitar", "Guitar"), "train", None),
        "FSD50K.dev_audio/16399.wav": (("Bark", "Dog"), "val", None),
        "FSD50K.eval_audio/37199.wav": (("Dog",), "test", None),
    }
    written = write_manifest(m, tmp_path / "fsd.csv").read_text()
    assert "Electric_guitar;Guitar" in written and "Bark;Dog" in written
    assert_round_trip(m, tmp_path)
    (root / "FSD50K.ground_truth/dev.csv").unlink()
    assert [r.path for r in read_fsd50k(root, splits=["test"])] == ["FSD50K.eval_audio/37199.wav"]
    with pytest.raises(FileNotFoundError, match=r"dev.csv(.|\n)*fname,labels,mids,split"):
        read_fsd50k(root)


def test_fsd50k_rejects_labels_outside_vocabulary(tmp_path, media):
    root = fsd50k_tree(tmp_path / "fsd", media)
    text(root / "FSD50K.ground_truth/eval.csv", ["fname,labels,mids", '37199,"Dog,Meow",/m/0bt9lr'])
    with pytest.raises(ManifestError, match=r"eval.csv:2: labels \['Meow'\]"):
        read_fsd50k(root)
    text(root / "FSD50K.ground_truth/dev.csv", ["fname,labels,mids,split", "64760,Guitar,/m/0342h,dev"])
    with pytest.raises(ManifestError, match=r"dev.csv:2: .* 'train' or 'val', got 'dev'"):
        read_fsd50k(root, splits=["train"])


# ------------------------------------------------------------------------------------------------------- AudioSet

BALANCED = [
    "# Segments csv created Sun Mar  5 10:54:31 2017",
    "# num_ytids=3, num_segs=3, num_unique_labels=4, num_positive_labels=4",
    "# YTID, start_seconds, end_seconds, positive_labels",
    '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"',
    '-0RWZT-miFs, 420.000, 430.000, "/m/03v3yw"',
    '-0SdAVK79lg, 30.000, 40.000, "/m/0155w"',
]
EVAL = [
    "# Segments csv created Sun Mar  5 10:54:25 2017",
    "# YTID, start_seconds, end_seconds, positive_labels",
    '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_,/m/0bt9lr,/m/0jbk"',
]


def audioset_csvs(root: Path) -> Path:
    text(root / "balanced_train_segments.csv", BALANCED)
    text(root / "eval_segments.csv", EVAL)
    return root


def test_audioset_trimmed_clips_found_by_detected_template(tmp_path, media, caplog):
    root = audioset_csvs(tmp_path / "audioset")
    put(media, root / "audio/balanced_train/--PJHxphWEs_30.0.wav")
    put(media, root / "audio/balanced_train/-0RWZT-miFs_420.0.wav")
    put(media, root / "audio/eval/--4gqARaEJE_0.0.wav")
    with caplog.at_level(logging.INFO, logger="xkd.datasets.layouts"):
        m = read_audioset(root)
    assert "'{ytid}_{start:.1f}'" in caplog.text and "1 of 4 files" in caplog.text
    assert table(m) == {
        "audio/balanced_train/--PJHxphWEs_30.0.wav": (("/m/09x0r", "/t/dd00088"), "train", None),
        "audio/balanced_train/-0RWZT-miFs_420.0.wav": (("/m/03v3yw",), "train", None),
        "audio/eval/--4gqARaEJE_0.0.wav": (("/m/068hy", "/m/07q6cd_", "/m/0bt9lr", "/m/0jbk"), "test", None),
    }
    assert {(r.start, r.end) for r in m} == {(0.0, 10.0)}
    assert_round_trip(m, tmp_path)
    assert read_audioset(root, template="{ytid}_{start:.1f}").rows == m.rows
    assert [r.split for r in read_audioset(root, subsets=["eval"])] == ["test"]
    with pytest.raises(FileNotFoundError, match="-0SdAVK79lg_30.0"):
        read_audioset(root, strict=True)
    with pytest.raises(FileNotFoundError, match=r"unbalanced_train_segments.csv not found|AudioSet segments CSV"):
        read_audioset(root, subsets=["unbalanced_train"])


def test_audioset_whole_videos_keep_segment_times(tmp_path, media):
    root = audioset_csvs(tmp_path / "audioset")
    for ytid in ("--PJHxphWEs", "-0RWZT-miFs", "-0SdAVK79lg", "--4gqARaEJE"):
        put(media, root / "video" / f"Y{ytid}.mp4")
    put(media, root / "video/Y--PJHxphWEs.avi")  # .mp4 comes first in the default extension preference
    m = read_audioset(root, trimmed=False, strict=True)
    assert [(r.path, r.start, r.end) for r in m] == [
        ("video/Y--PJHxphWEs.mp4", 30.0, 40.0),
        ("video/Y-0RWZT-miFs.mp4", 420.0, 430.0),
        ("video/Y-0SdAVK79lg.mp4", 30.0, 40.0),
        ("video/Y--4gqARaEJE.mp4", 0.0, 10.0),
    ]
    assert_round_trip(m, tmp_path)


def test_audioset_template_errors(tmp_path, media):
    root = audioset_csvs(tmp_path / "audioset")
    put(media, root / "clips/--PJHxphWEs-30.wav")
    with pytest.raises(FileNotFoundError, match=r"no media file matches(.|\n)*--PJHxphWEs_30.0"):
        read_audioset(root)
    with pytest.raises(ValueError, match="fields: ytid, start, end"):
        read_audioset(root, template="{ytid}.{ext}")
    m = read_audioset(root, subsets=["balanced_train"], template="{ytid}-{start_int}")
    assert [r.path for r in m] == ["clips/--PJHxphWEs-30.wav"]


# ------------------------------------------------------------------------------------------------------- VGGSound


def vggsound_tree(root: Path, media) -> Path:
    """The official headerless CSV (a label with a comma, quoted) and every clip naming the reader accepts."""
    text(root / "vggsound.csv", [
        "---g-f_I2yQ,1,people marching,test",
        '-0jeONf82dE,21,"male speech, man speaking",train',
        "-0pJqpNjft4,267,dog barking,train",
        "-2-wdcN5vOw,17,dog barking,test",
        "absent00000,30,dog barking,train",
    ])
    put(media, root / "video/---g-f_I2yQ_000001.mp4")
    put(media, root / "video/sub/-0jeONf82dE_000021_000031.mp4")
    put(media, root / "audio_only/-0pJqpNjft4_000267.wav")
    put(media, root / "full/-2-wdcN5vOw.mp4")
    return root


def test_vggsound_reads_labels_splits_and_clip_names(tmp_path, media, caplog):
    root = vggsound_tree(tmp_path / "vgg", media)
    with caplog.at_level(logging.WARNING, logger="xkd.datasets.layouts"):
        m = read_vggsound(root)
    assert "1 of 5 files listed in the annotations are missing" in caplog.text and "absent00000_000030" in caplog.text
    assert table(m) == {
        "video/---g-f_I2yQ_000001.mp4": (("people marching",), "test", None),
        "video/sub/-0jeONf82dE_000021_000031.mp4": (("male speech, man speaking",), "train", None),
        "audio_only/-0pJqpNjft4_000267.wav": (("dog barking",), "train", None),
        "full/-2-wdcN5vOw.mp4": (("dog barking",), "test", None),
    }
    bounds = {r.path: (r.start, r.end) for r in m}
    assert bounds["full/-2-wdcN5vOw.mp4"] == (17, 27)  # an uncut video: only the clip's 10 s are read
    assert bounds["video/---g-f_I2yQ_000001.mp4"] == (None, None)
    assert_round_trip(m, tmp_path)
    assert [r.split for r in read_vggsound(root, splits=["test"])] == ["test", "test"]
    with pytest.raises(FileNotFoundError, match="absent00000_000030"):
        read_vggsound(root, strict=True)


def test_vggsound_errors(tmp_path, media):
    with pytest.raises(FileNotFoundError, match="(?s)VGGSound annotations not found.*expected layout"):
        read_vggsound(tmp_path)
    root = vggsound_tree(tmp_path / "vgg", media)
    text(root / "vggsound.csv", ["---g-f_I2yQ,1,people marching"])
    with pytest.raises(ManifestError, match=r"vggsound.csv:1: expected 'youtube_id,start_seconds,label,split'"):
        read_vggsound(root)
    text(root / "vggsound.csv", ["---g-f_I2yQ,one,people marching,test"])
    with pytest.raises(ManifestError, match="start_seconds must be a number"):
        read_vggsound(root)
    text(root / "vggsound.csv", ["---g-f_I2yQ,1,people marching,holdout"])
    with pytest.raises(ManifestError, match="vggsound.csv:1: unknown split 'holdout'"):
        read_vggsound(root)


def test_vggsound_evaluation_tasks_and_cli(tmp_path, media, capsys):
    from xkd.cli import main
    from xkd.eval.tasks import tasks_for

    root = vggsound_tree(tmp_path / "vgg", media)
    (task,) = tasks_for(f"vggsound:{root}", modality="av")
    assert task.name == "vggsound av" and len(task.folds) == 1
    paths = [task.manifest[i].path for i in task.folds[0].test_rows]
    assert sorted(paths) == ["full/-2-wdcN5vOw.mp4", "video/---g-f_I2yQ_000001.mp4"]
    out = tmp_path / "vggsound.csv"
    assert main(["data", "manifest", "vggsound", str(root), "--out", str(out)]) == 0
    assert "4 rows, 3 classes\nsplits: train 2, test 2" in capsys.readouterr().out
    assert len(read_manifest(out)) == 4


# ------------------------------------------------------------------------------------------- registry and summary


def test_registry_dispatches_by_name(tmp_path, media):
    assert set(LAYOUTS) == {"kinetics400", "kinetics_sound", "ucf101", "hmdb51", "esc50", "fsd50k", "vggsound",
                            "audioset"}
    root = ucf_tree(tmp_path / "ucf", media)
    assert read_layout("UCF-101", root, fold=2).rows == read_ucf101(root, fold=2).rows
    esc = esc50_tree(tmp_path / "esc", media)
    assert read_layout("esc_50", esc, esc10=True).rows == read_esc50(esc, esc10=True).rows
    with pytest.raises(ValueError, match="unknown dataset layout 'ucf-102'; known layouts: kinetics400, .*audioset"):
        read_layout("ucf-102", root)


def test_manifest_summary(tmp_path, media):
    fsd = read_fsd50k(fsd50k_tree(tmp_path / "fsd", media))
    assert manifest_summary(fsd) == "3 rows, 4 classes, 2 multi-label rows\nsplits: train 1, val 1, test 1"
    esc = read_esc50(esc50_tree(tmp_path / "esc", media))
    assert manifest_summary(esc) == "4 rows, 3 classes\nfolds: 1: 2, 2: 1, 5: 1"
    k400 = read_kinetics400(kinetics_tree(tmp_path / "k400", media))
    assert manifest_summary(k400) == "7 rows, 4 classes, 1 unlabelled rows\nsplits: train 4, val 2, test 1"
