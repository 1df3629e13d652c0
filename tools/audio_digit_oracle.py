"""What the AV-Digits audio digit task allows: the same folds and ridge classifier as ``xkd eval ridge`` on features
that need no pretraining.

- ``speech-embedding``: a supervised speech model (openWakeWord 0.4.0's 96-d Google speech embedding, trained on
  thousands of hours of speech; the oracle), mean and std over its 775 ms windows -> 192-d per clip.
- ``logmel-stats``: the mean and std of each of 40 log-mel bands over the clip -> 80-d (no learning at all).

    python tools/audio_digit_oracle.py --data data/av-digits-v2 [--split val|test]

Needs ``pip install 'xkd[ccl]'`` for the speech embedding. Prints one line per feature: top-1 mean ± std over the
leave-one-voice-out folds, the per-fold values and the alpha chosen on the training voices.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from xkd.ccl.packaged import SpeechEmbeddingTeacher
from xkd.cli_help import HelpFormatter
from xkd.config import LogMelConfig
from xkd.data.logmel import LogMel
from xkd.data.media import decode_clip
from xkd.eval.features import FeatureSet
from xkd.eval.metrics import mean_std
from xkd.eval.svm import ridge_protocol
from xkd.eval.tasks import avdigits_tasks


def clip_features(manifest, rows: np.ndarray, progress: bool = True) -> dict[str, np.ndarray]:
    """Both feature kinds for the manifest rows: {"speech-embedding": [N, 192], "logmel-stats": [N, 80]}."""
    speech = SpeechEmbeddingTeacher(threads=2)
    logmel = LogMel(LogMelConfig(n_mels=40), normalize=False)
    out = {"speech-embedding": [], "logmel-stats": []}
    for i in tqdm(rows, desc="audio features", unit="clip", disable=not progress):
        row = manifest[int(i)]
        start = row.start or 0.0
        wave = decode_clip(manifest.resolve(row), start, (row.end or 2.0) - start, fps=8, video=False).audio
        with torch.no_grad():
            emb = speech.features(wave[None])[0]  # [windows, 96]
            mel = logmel(wave)  # [40, frames]
        out["speech-embedding"].append(torch.cat([emb.mean(0), emb.std(0)]).numpy())
        out["logmel-stats"].append(torch.cat([mel.mean(1), mel.std(1)]).numpy())
    return {name: np.stack(values) for name, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--data", default="data/av-digits-v2", help="AV-Digits folder")
    parser.add_argument("--split", default="test", choices=["val", "test"], help="score the val or the test split")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    task = next(t for t in avdigits_tasks(Path(args.data), split=args.split) if t.name == "audio digit")
    manifest = task.manifest
    classes = manifest.classes("digit")
    labels = np.array([classes.index(v) for v in manifest.labels_of("digit")])
    rows = np.unique(np.concatenate([np.concatenate([f.train_rows, f.test_rows]) for f in task.folds]))  # sorted
    features = clip_features(manifest, rows)
    results = {}
    for name, feats in features.items():
        scores, alphas = [], []
        for fold in task.folds:
            sets = [FeatureSet(feats[np.searchsorted(rows, part)], part, labels[part], classes)
                    for part in (fold.train_rows, fold.test_rows)]
            result = ridge_protocol(*sets)
            scores.append(100 * result["metrics"]["top1"])
            alphas.append(result["alpha"])
        mean, std = mean_std(scores, ddof=1)
        results[name] = {"mean": mean, "std": std, "folds": scores, "alphas": alphas}
        print(f"{name}: audio digit top-1 {mean:.1f} ± {std:.1f} "
              f"(folds {', '.join(f'{s:.1f}' for s in scores)}; alpha {', '.join(f'{a:g}' for a in alphas)})")
    if args.out:
        Path(args.out).write_text(json.dumps({"data": args.data, "split": args.split, "results": results}, indent=2))


if __name__ == "__main__":
    main()
