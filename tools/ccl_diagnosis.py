"""Why CCL's teachers do or do not help (docs/CCL.md, "Diagnosis"): two measurements on the validation split.

- ``probe``: what each teacher can tell about the label from exactly the inputs it gets in training. The image
  teacher sees one random frame of a clip in the training view (and, for comparison, the same frame clean); the audio
  teacher its clip features, pooled as in training. A logistic-regression probe on standardised features is fit on
  the training split and scored on validation; the MNIST teacher's own classifier is also scored (zero-shot).
- ``oracle``: a training run whose teacher features are replaced by the label itself: ``onehot`` (the one-hot label,
  zero-padded to the teacher's size: non-negative) or ``signed`` (a fixed Gaussian vector per class: zero-mean like
  standardised features). It prints the validation top-1 of the selected checkpoint; the test split is left alone.

    python tools/ccl_diagnosis.py probe --config configs/ccl/avdigits_cpu.yaml
    python tools/ccl_diagnosis.py oracle --config configs/ccl/avdigits_cpu.yaml --oracle onehot --out runs/ccl-oracle \\
        --set loss.variant=ccl-i
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

import xkd.ccl.train as ccl_train
from xkd.ccl.clip_cache import teacher_features
from xkd.ccl.config import CCLConfig
from xkd.ccl.data import TrainClips, class_names, clip_windows, load_split, predecode_windows, window_dataset
from xkd.ccl.method import CCL
from xkd.ccl.packaged import MnistCNNTeacher
from xkd.ccl.teacher_kinds import build_teacher
from xkd.cli_help import HelpFormatter
from xkd.config_io import load_config


def _probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray]) -> float:
    """Validation top-1 of a logistic-regression probe fit on standardised training features."""
    scaler = StandardScaler().fit(train[0])
    clf = LogisticRegression(max_iter=3000).fit(scaler.transform(train[0]), train[1])
    return float(clf.score(scaler.transform(val[0]), val[1]))


def _image_inputs(cfg: CCLConfig, split: str, names: list[str], seed: int) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """One random frame per video: {"augmented": the training view's frame, "clean": the same frame undecorated}, each
    ([V, 3, H, W] in [0, 1], labels [V])."""
    windows = clip_windows(load_split(cfg.data, split), cfg.data.clip_duration, cfg.data.label_column, names)
    decoded = predecode_windows(windows, cfg.data, ccl_train.cache_root(cfg), progress=False)
    clips = TrainClips(windows, cfg.data, seed, decoded)
    frames = window_dataset(windows, cfg.data, decoded_cache=decoded)  # the raw uint8 windows
    generator = torch.Generator().manual_seed(seed)
    augmented, clean, labels = [], [], []
    for v in tqdm(range(len(clips)), desc=f"frames {split}", unit="video"):
        item = clips[v]
        t = int(torch.randint(item["video"].shape[1], (), generator=generator))
        augmented.append(item["video"][:, t])
        clean.append(frames[item["index"]]["video"][t].permute(2, 0, 1).float() / 255)
        labels.append(int(windows.labels[item["index"]]))
    y = np.array(labels)
    return {"augmented": (torch.stack(augmented), y), "clean": (torch.stack(clean), y)}


def probe(cfg: CCLConfig, seed: int) -> dict[str, float]:
    names = class_names(cfg.data)
    out: dict[str, float] = {}
    if cfg.image_teacher.kind:
        teacher = build_teacher(cfg.image_teacher, "image", cfg.data.clip_duration)
        feats = {}
        for split in ("train", "val"):
            for view, (frames, y) in _image_inputs(cfg, split, names, seed).items():
                feats[split, view] = (torch.cat([teacher.features(b) for b in frames.split(256)]).numpy(), y)
                if isinstance(teacher, MnistCNNTeacher) and split == "val":
                    logits = torch.cat([teacher.digit_logits(b) for b in frames.split(256)])
                    out[f"image_{view}_zero_shot"] = float((logits.argmax(1).numpy() == y).mean())
        for view in ("augmented", "clean"):
            out[f"image_{view}_probe"] = _probe(feats["train", view], feats["val", view])
    if cfg.audio_teacher.kind:
        teacher = build_teacher(cfg.audio_teacher, "audio", cfg.data.clip_duration)
        feats = {}
        for split in ("train", "val"):
            windows = clip_windows(load_split(cfg.data, split), cfg.data.clip_duration, cfg.data.label_column, names)
            sequences = teacher_features(teacher, windows, cfg.data, ccl_train.cache_root(cfg), progress=True)
            keep = [i for i, s in enumerate(sequences) if len(s)]
            feats[split] = (torch.stack([sequences[i].mean(0) for i in keep]).numpy(), windows.labels[keep])
        out["audio_probe"] = _probe(feats["train"], feats["val"])
    return out


def oracle(cfg: CCLConfig, kind: str, out_dir: str) -> dict[str, float]:
    num_classes = len(class_names(cfg.data))
    prototypes: dict[int, torch.Tensor] = {}  # teacher size -> one fixed vector per class, the same in every step

    class OracleCCL(CCL):
        """CCL whose teacher features are replaced by the label (``kind``), before the pair losses see them."""

        def losses(self, video, labels, teachers):
            replaced = {}
            for m, (x_t, available) in teachers.items():
                if kind == "onehot":
                    label_features = torch.zeros_like(x_t)
                    label_features[torch.arange(len(labels)), labels] = 1.0
                else:
                    d = x_t.shape[1]
                    if d not in prototypes:
                        prototypes[d] = torch.randn(num_classes, d, generator=torch.Generator().manual_seed(1234))
                    label_features = prototypes[d][labels].to(x_t)
                replaced[m] = (label_features, available)
            return super().losses(video, labels, replaced)

    ccl_train.CCL = OracleCCL
    results = ccl_train.train_ccl(cfg, out_dir, progress=True)
    return {"oracle": kind, "val_top1": results["val"]["top1"], "val_epoch": results["val"]["epoch"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("what", choices=["probe", "oracle"])
    parser.add_argument("--config", default="configs/ccl/avdigits_cpu.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--seed", type=int, default=0, help="probe: the views and frames drawn")
    parser.add_argument("--oracle", choices=["onehot", "signed"], default="onehot")
    parser.add_argument("--out", help="oracle: the run folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(CCLConfig, args.config, args.set)
    if args.what == "probe":
        print(json.dumps(probe(cfg, args.seed)))
    else:
        if not args.out:
            parser.error("oracle needs --out")
        print(json.dumps(oracle(cfg, args.oracle, args.out)))


if __name__ == "__main__":
    main()
