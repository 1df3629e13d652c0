"""What a model's teacher clusters carry: mutual information between cluster assignments and labels (NMI and AMI).

An XKD teacher turns a clip into a distribution over ``model.head_out`` prototypes, ``softmax((z - c) / τ)``, and the
student of the other modality learns to predict it. Clusters that follow something the other modality cannot see
(the voice, for a video student) ask that student for the impossible. This diagnostic assigns every clip of a split to
``argmax(z - c)``: z is the projection head applied to the mean of the clip's patch tokens (its test view; training
also reweights the tokens and shows the teacher a local view), c the mean of z over the clips (what the EMA centre
tracks). It reports, per modality and label column, the normalised mutual information (NMI) between assignments and
labels (0: independent, 1: the same partition), the same adjusted for chance (AMI: 0 is what independent labels
score in expectation), and how many clusters are in use. Compare columns by AMI: NMI grows with the number of
values of both partitions even when they are independent (with 500 clips, 40 clusters and 45 voices, independent
assignments score an NMI near 0.2), so a many-valued column such as the voice looks informative when it is not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from xkd.api import Encoders
from xkd.config import PretrainConfig, from_dict
from xkd.data.manifest import Manifest
from xkd.engine.weights import find_weights, head_part, load_weights
from xkd.eval.extract import ExtractOptions, extract_features
from xkd.models.head import dino_head


def load_head(weights: str | Path, modality: str, role: str = "teacher") -> torch.nn.Module:
    """The projection head ``{modality}_{role}_head`` of an xkd weights file (MAE runs have none)."""
    file = find_weights(Path(weights))
    part = head_part(modality, role)
    parts, meta = load_weights(file, [part])
    cfg = from_dict(PretrainConfig, json.loads(meta["config"]), source=f"{file} (metadata)")
    head = dino_head(cfg.model)
    head.load_state_dict(parts[part])
    return head.eval().requires_grad_(False)


@torch.no_grad()
def assignments(encoders: Encoders, heads: dict[str, torch.nn.Module], manifest: Manifest,
                opts: ExtractOptions) -> dict[str, np.ndarray]:
    """Cluster ids [N] (one clip per row of ``manifest``, rows in order) per modality of ``heads``."""
    sets, failed = extract_features(encoders, manifest, list(heads), opts, label_column=None)
    if failed:
        raise RuntimeError(f"{len(failed)} files could not be decoded (first: {failed[0]}): run `xkd data check`")
    out = {}
    for modality, head in heads.items():
        fs = sets["model"][modality]
        order = np.argsort(fs.video_ids, kind="stable")
        z = head(torch.from_numpy(fs.features[order]))
        out[modality] = (z - z.mean(dim=0, keepdim=True)).argmax(dim=1).numpy()
    return out


def cluster_report(clusters: dict[str, np.ndarray], manifest: Manifest, columns: Sequence[str]) -> dict:
    """``{modality: {"clusters_used": int, "nmi": {column: float}, "ami": {column: float}}}`` for the label
    ``columns`` of ``manifest``."""
    report = {}
    for modality, ids in clusters.items():
        nmi, ami = {}, {}
        for column in columns:
            labels = manifest.labels_of(column)
            nmi[column] = float(normalized_mutual_info_score(labels, ids))
            ami[column] = float(adjusted_mutual_info_score(labels, ids))
        report[modality] = {"clusters_used": int(len(np.unique(ids))), "nmi": nmi, "ami": ami}
    return report
