"""Training-time cluster diagnostics (``run.probe_every``): every N steps, which of the K prototypes each teacher
assigns a fixed sample of training clips to, and how much those clusters say about every label column of the
manifest (adjusted mutual information: 0 = no more than chance, 1 = the column itself). A teacher that clusters by
voice or motion while the digit is what both modalities share shows here long before an evaluation does.

The sample is ``run.probe_clips`` evenly spaced rows of the training manifest (or of the shards, read as a
manifest), each clip the centred window seen through the test views (video: the global view's crop, audio: the
whole window's log-mel). A clip's cluster is the argmax of its teacher head output after subtracting the sample's
mean output (as ``xkd clusters`` does). Every rank runs the probe (FSDP's sharded teachers need all of them); the
main rank logs ``probe_ami_<modality>_<column>`` and ``probe_clusters_<modality>`` (distinct clusters used).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import adjusted_mutual_info_score
from torch.utils.data import DataLoader

from xkd.config import PretrainConfig
from xkd.data.dataset import ClipDataset, collate_clips
from xkd.data.logmel import LogMel
from xkd.data.manifest import Manifest, read_manifest
from xkd.data.views import EvalViews
from xkd.models.xkd import XKD


def label_columns(rows: Manifest) -> list[str]:
    """The manifest's categorical columns: ``label`` when rows carry more than one, then every extra column holding
    between 2 and len(rows) / 2 distinct values (so paths, ids and continuous values such as times are left out)."""
    columns = ["label"] if any(r.labels for r in rows) and len({r.labels for r in rows}) > 1 else []
    for name in dict.fromkeys(k for r in rows for k in r.extra):
        values = {r.extra.get(name, "") for r in rows}
        if 1 < len(values) <= len(rows) // 2:
            columns.append(name)
    return columns


class ClusterProbe:
    """``probe() -> {metric: value}``: ``model``'s teachers on the fixed sample of ``cfg``'s training data (see the
    module docstring)."""

    def __init__(self, cfg: PretrainConfig, model: XKD, device: torch.device):
        if not len(model.teacher):
            raise ValueError(f"run.probe_every needs teachers (an XKD method); method {cfg.method} has none")
        self.model = model
        d = cfg.data
        source = d.shards or d.manifest
        rows = read_manifest(source, root=(d.root or None) if not d.shards else None)
        if d.split and not d.shards:
            rows = rows.filter(split=d.split)
        count = min(cfg.run.probe_clips, len(rows))
        if count < 2:
            raise ValueError(f"run.probe_every needs at least 2 training clips, got {count}")
        picks = np.unique(np.linspace(0, len(rows) - 1, count).round().astype(int))
        self.rows = Manifest([rows[int(i)] for i in picks], rows.root)
        self.columns = label_columns(rows)  # judged on every training row, not on the sample
        if not self.columns:
            raise ValueError(f"run.probe_every: the manifest {source} has no label column to compare clusters with")
        views = EvalViews(LogMel(d.logmel), d.logmel.sample_rate, crop_size=d.video_global.crop_size,
                          mean=d.video_mean, std=d.video_std)
        self.dataset = ClipDataset(self.rows, d.clip_duration, d.video_fps, d.resize_short, d.logmel.sample_rate,
                                   missing_audio="silence", bad_media="error", clip_sampling="uniform",
                                   transform=views)
        self.batch_size = d.batch_size
        self.device = device

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        outputs: dict[str, list[torch.Tensor]] = {"video": [], "audio": []}
        loader = DataLoader(self.dataset, batch_size=self.batch_size, collate_fn=collate_clips,
                            generator=torch.Generator())  # its own: the run's random stream stays untouched
        for batch in loader:
            zv, za = self.model._teacher_outputs(batch["video"].to(self.device), batch["audio"].to(self.device))
            outputs["video"].append(zv.float().cpu())
            outputs["audio"].append(za.float().cpu())
        metrics = {}
        for modality, parts in outputs.items():
            z = torch.cat(parts)
            clusters = (z - z.mean(dim=0, keepdim=True)).argmax(dim=1).numpy()
            metrics[f"probe_clusters_{modality}"] = float(len(np.unique(clusters)))
            for column in self.columns:
                metrics[f"probe_ami_{modality}_{column}"] = float(
                    adjusted_mutual_info_score(self.rows.labels_of(column), clusters))
        return metrics
