"""CCL: the video student, one compositional embedding per teacher, the two losses and their gradient routing
(spec §B4, §B5).

For each teacher modality t with features x_t (and the student's x_v, logits_v):

- composition: (logits_tv, x_tv) = Composition_t(x_t, x_v);
- pair losses, C(a, b) = NCE(a, b) + NCE(b, a) at the teacher's temperature:
  L_ct^{v,t} = C(x_v, x_tv) + C(x_v, x_t) and L_ct^{comp,t} = C(x_v, x_tv) + C(x_tv, x_t);
- JSD_t = symmetric KL between softmax(logits_v) and softmax(logits_tv).

Video loss L_v = CE(logits_v) + w sum_t (L_ct^{v,t} + JSD_t), w = 1 with one teacher and ``two_teacher_weight``
(0.5) with two. Composition loss L_t = CE(logits_tv) + L_ct^{comp,t} + JSD_t. Routing (:meth:`CCL.backward`, the
released code's order of backward passes and ``zero_grad`` calls): the video network gets gradients from L_v only;
each composition module from L_t + L_v.

When a teacher's feature size D_t differs from the student's D_v, a linear map of x_v into R^{D_t} (part of the
video network) is used for the pair losses; with equal sizes it is the identity, as in the released code, except for
the teachers in ``mapped``: those whose features are standardised (zero-mean, signed), which the student's
non-negative x_v (ReLU, then average pooling) cannot point along without a map (docs/CCL.md, "Diagnosis").
Clips a teacher has no features for (a file without audio) are left out of that teacher's terms.

Clips without a label (``labelled`` False; ``data.unlabelled: distill``) enter the teacher terms only: no CE (video
or composition), and in the pair losses a label of their own, so each one's only positive is its own teacher
feature (and composition): the one positive that needs no label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xkd.ccl.composition import Composition
from xkd.ccl.losses import pair_nce, symmetric_kl
from xkd.ccl.r2plus1d import R2Plus1D


class CCL(nn.Module):
    """Student + compositions. ``teacher_dims``: {modality: D_t}; ``temperatures``: {modality: tau}; ``mapped``: the
    modalities whose pair losses see x_v through a learned linear map even when D_t = D_v."""

    def __init__(self, student: R2Plus1D, num_classes: int, teacher_dims: dict[str, int],
                 temperatures: dict[str, float], two_teacher_weight: float = 0.5, mapped: frozenset[str] = frozenset()):
        super().__init__()
        self.student = student
        d_v = student.feature_dim
        self.compositions = nn.ModuleDict({m: Composition(d, d_v, num_classes) for m, d in teacher_dims.items()})
        self.projections = nn.ModuleDict(
            {m: nn.Identity() if d == d_v and m not in mapped else nn.Linear(d_v, d, bias=False)
             for m, d in teacher_dims.items()}
        )
        self.temperatures = dict(temperatures)
        self.weight = two_teacher_weight if len(teacher_dims) > 1 else 1.0

    def video_parameters(self) -> list[nn.Parameter]:
        """Parameters updated by L_v only: the student and the feature maps into the teachers' spaces."""
        return [*self.student.parameters(), *self.projections.parameters()]

    def composition_parameters(self) -> list[nn.Parameter]:
        """Parameters updated by L_t + L_v."""
        return list(self.compositions.parameters())

    def losses(self, video: Tensor, labels: Tensor, teachers: dict[str, tuple[Tensor, Tensor]],
               labelled: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """video: [B, 3, T, H, W] in [0, 1]; labels: [B] (any value where not ``labelled``); teachers: {modality:
        (x_t [B, D_t], available [B] bool)}; labelled: [B] bool, None = every clip.

        Returns (L_v, L_comp = sum_t L_t, terms for logging). With no teacher (the baseline) L_comp is a zero.
        """
        logits_v, x_v = self.student(video)
        if labelled is not None and not bool(labelled.all()):  # own labels, below every class index
            labels = torch.where(labelled, labels, -1 - torch.arange(len(labels), device=labels.device))
        else:
            labelled = torch.ones(len(labels), dtype=torch.bool, device=labels.device)
        ce = _cross_entropy(logits_v, labels, labelled)
        loss_v, loss_comp = ce, logits_v.new_zeros(())
        terms = {"ce": ce.detach()}
        for m, (x_t, available) in teachers.items():
            if not bool(available.any()):
                continue
            keep = available if not bool(available.all()) else slice(None)
            x_t, xv, y, lv, has_y = x_t[keep], x_v[keep], labels[keep], logits_v[keep], labelled[keep]
            logits_tv, x_tv = self.compositions[m](x_t, xv)
            xv_t = self.projections[m](xv)
            tau = self.temperatures[m]
            c_v_tv = pair_nce(xv_t, x_tv, y, tau)
            c_v_t = pair_nce(xv_t, x_t, y, tau)
            c_tv_t = pair_nce(x_tv, x_t, y, tau)
            jsd = symmetric_kl(lv, logits_tv)
            ce_t = _cross_entropy(logits_tv, y, has_y)
            loss_v = loss_v + self.weight * (c_v_tv + c_v_t) + self.weight * jsd
            loss_comp = loss_comp + ce_t + c_v_tv + c_tv_t + jsd
            terms.update({f"ce_{m}": ce_t.detach(), f"ct_v_{m}": (c_v_tv + c_v_t).detach(),
                          f"ct_comp_{m}": (c_v_tv + c_tv_t).detach(), f"jsd_{m}": jsd.detach()})
        terms.update(loss_v=loss_v.detach(), loss_comp=loss_comp.detach())
        return loss_v, loss_comp, terms

    def backward(self, loss_v: Tensor, loss_comp: Tensor) -> None:
        """Accumulate d L_v into every parameter and d L_comp into the composition parameters only.

        Equivalent to the released code's zero_grad(comp), backward(L_t), zero_grad(video), backward(L_v), without
        the wasted L_t pass through the video network. Call with zeroed gradients.
        """
        params = self.composition_parameters()
        grads = None
        if loss_comp.requires_grad and params:
            grads = torch.autograd.grad(loss_comp, params, retain_graph=True, allow_unused=True)
        loss_v.backward()
        if grads is not None:
            for p, g in zip(params, grads):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g


def _cross_entropy(logits: Tensor, labels: Tensor, labelled: Tensor) -> Tensor:
    """Mean CE over the labelled rows; a zero that keeps the graph when there is none. logits: [B, C]."""
    if bool(labelled.all()):
        return F.cross_entropy(logits, labels)
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled], labels[labelled])
