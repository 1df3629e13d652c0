"""Hyper-parameter selection on a validation split carved from the training set; the test split is never seen.

A protocol passes its candidate values and a function that fits on one :class:`FeatureSet` and scores another.
:func:`select_on_val` carves a validation split from the training set (all clips of a video on one side, stratified
by class), scores every candidate on it and keeps the best (ties go to the earlier candidate). :func:`edges` names the
hyper-parameters whose chosen value lies at the end of its grid: the best value may lie beyond it, so the grid should
be widened; protocols report it and log a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from xkd.eval.features import FeatureSet, split_by_video

log = logging.getLogger(__name__)

Candidate = TypeVar("Candidate")


def select_on_val(
    train: FeatureSet,
    candidates: Sequence[Candidate],
    fit_and_score: Callable[[FeatureSet, FeatureSet, Candidate], float],
    val_fraction: float = 0.2,
    seed: int = 0,
    threads: int = 1,
) -> tuple[Candidate, list[float]]:
    """The candidate with the best ``fit_and_score(fit_part, val, candidate)`` and every candidate's score.

    ``threads > 1`` scores candidates in that many threads (for solvers that release the GIL, e.g. liblinear).
    """
    if not candidates:
        raise ValueError("no candidate hyper-parameters to select from")
    fit_part, val = split_by_video(train, val_fraction, seed)
    if threads > 1:
        from joblib import Parallel, delayed

        jobs = (delayed(fit_and_score)(fit_part, val, c) for c in candidates)
        scores = [float(s) for s in Parallel(n_jobs=threads, backend="threading")(jobs)]
    else:
        scores = [float(fit_and_score(fit_part, val, c)) for c in candidates]
    best = max(range(len(candidates)), key=scores.__getitem__)
    return candidates[best], scores


def edges(chosen: Mapping[str, float], grids: Mapping[str, Sequence[float]]) -> list[str]:
    """Names whose chosen value is the smallest or largest of a grid of more than one value."""
    return [name for name, value in chosen.items()
            if len(set(grids[name])) > 1 and value in (min(grids[name]), max(grids[name]))]


def warn_edges(protocol: str, chosen: Mapping[str, float], at_edge: Sequence[str]) -> None:
    """Log one warning naming each hyper-parameter chosen at the edge of its grid."""
    for name in at_edge:
        log.warning("%s: %s=%g was chosen at the edge of its grid; the best value may lie beyond it (widen the grid)",
                    protocol, name, chosen[name])
