"""Loss terms on the host: every scalar term read back in one copy, and the check that each is finite."""

from __future__ import annotations

import math

import torch


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or Inf; the message names the step and the term."""


def terms_to_host(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar loss terms as Python floats, read from the device in one copy (one host sync, not one per term)."""
    names = list(terms)
    values = torch.stack([terms[n].detach().float().reshape(()) for n in names]).tolist()
    return dict(zip(names, values))


def first_nonfinite(terms: dict[str, float]) -> str | None:
    """The name of the first non-finite loss term, or None."""
    return next((name for name, value in terms.items() if not math.isfinite(value)), None)
