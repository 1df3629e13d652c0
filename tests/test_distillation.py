import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from xkd.losses.distillation import CrossModalDINOLoss, teacher_temperature_schedule


def reference_loss(student_views, teacher_views, center, tau_s, tau_t):
    """Explicit loops in float64 over teacher views, student views, samples and classes."""
    total, pairs = 0.0, 0
    for t_view in teacher_views:
        for s_view in student_views:
            per_sample = []
            for t_row, s_row in zip(t_view.tolist(), s_view.tolist()):
                t_logits = [(t - c) / tau_t for t, c in zip(t_row, center)]
                t_max = max(t_logits)
                t_z = sum(math.exp(v - t_max) for v in t_logits)
                q = [math.exp(v - t_max) / t_z for v in t_logits]
                s_logits = [s / tau_s for s in s_row]
                s_max = max(s_logits)
                log_z = s_max + math.log(sum(math.exp(v - s_max) for v in s_logits))
                per_sample.append(-sum(qk * (sk - log_z) for qk, sk in zip(q, s_logits)))
            total += sum(per_sample) / len(per_sample)
            pairs += 1
    return total / pairs


def views(n_views, B, K, seed, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(B, K, generator=g, dtype=dtype) for _ in range(n_views)]


def test_temperature_schedule_per_epoch_and_per_iteration():
    per_epoch = teacher_temperature_schedule(0.04, 0.07, warmup_epochs=4, total_epochs=6)
    np.testing.assert_allclose(per_epoch, [0.04, 0.05, 0.06, 0.07, 0.07, 0.07], rtol=1e-12)
    per_iter = teacher_temperature_schedule(0.04, 0.07, warmup_epochs=4, total_epochs=6, iters_per_epoch=3)
    np.testing.assert_allclose(per_iter, np.repeat(per_epoch, 3), rtol=1e-12)
    # a run shorter than the warm-up keeps the warm-up's first values
    np.testing.assert_allclose(teacher_temperature_schedule(0.04, 0.07, 4, 2), [0.04, 0.05], rtol=1e-12)
    np.testing.assert_allclose(teacher_temperature_schedule(0.09, 0.11, 0, 3), [0.11] * 3, rtol=1e-12)


def test_loss_matches_float64_reference_over_all_pairs():
    students, teachers = views(3, 4, 7, seed=0), views(2, 4, 7, seed=1, scale=2.0)
    loss_fn = CrossModalDINOLoss(7, student_temp=0.1, teacher_temps=[0.07])
    center = torch.linspace(-0.5, 0.5, 7)
    loss_fn.center.copy_(center)
    loss = loss_fn(students, teachers)
    expected = reference_loss(students, teachers, center.tolist(), tau_s=0.1, tau_t=0.07)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_teacher_temperature_is_the_schedule_value_of_the_step():
    students, teachers = views(2, 3, 5, seed=2), views(1, 3, 5, seed=3)
    schedule = [0.04, 0.2, 0.11]
    loss_fn = CrossModalDINOLoss(5, center_momentum=1.0, teacher_temps=schedule)
    for step, tau in [(0, 0.04), (1, 0.2), (2, 0.11), (7, 0.11)]:  # past the end: the last value
        loss = loss_fn(students, teachers, step)
        assert loss.item() == pytest.approx(reference_loss(students, teachers, [0.0] * 5, 0.1, tau), rel=1e-10)
    for bad in ([0.07, 0.0], []):
        with pytest.raises(ValueError, match="teacher temperatures must be positive"):
            CrossModalDINOLoss(5, teacher_temps=bad)


def test_center_update_math_and_dtype():
    students, teachers = views(2, 4, 6, seed=4), views(2, 4, 6, seed=5)
    loss_fn = CrossModalDINOLoss(6, center_momentum=0.9, teacher_temps=[0.1])
    assert loss_fn.center.dtype == torch.float32 and "center" in loss_fn.state_dict()
    c0 = torch.arange(6, dtype=torch.float32)
    loss_fn.center.copy_(c0)
    loss_before = reference_loss(students, teachers, c0.tolist(), 0.1, 0.1)
    loss = loss_fn(students, teachers)
    assert loss.item() == pytest.approx(loss_before, rel=1e-6)  # the loss uses the centre before the update
    batch_mean = torch.cat(teachers).mean(dim=0)
    expected = 0.9 * c0.double() + 0.1 * batch_mean
    torch.testing.assert_close(loss_fn.center[0].double(), expected, rtol=1e-6, atol=1e-6)
    # bf16 teacher outputs keep the centre in fp32
    loss_fn([s.bfloat16() for s in students], [t.bfloat16() for t in teachers])
    assert loss_fn.center.dtype == torch.float32


def test_teacher_side_gets_no_gradient():
    students = [s.requires_grad_(True) for s in views(2, 3, 5, seed=6)]
    teachers = [t.requires_grad_(True) for t in views(1, 3, 5, seed=7)]
    CrossModalDINOLoss(5)(students, teachers).backward()
    assert all(t.grad is None for t in teachers)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in students)


def test_gradient_float64_gradcheck():
    students = [s.requires_grad_(True) for s in views(2, 2, 4, seed=8)]
    teachers = views(1, 2, 4, seed=9)
    loss_fn = CrossModalDINOLoss(4, student_temp=0.1, center_momentum=1.0)  # m = 1 keeps the centre fixed
    loss_fn.center.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0]))
    assert torch.autograd.gradcheck(lambda s0, s1: loss_fn([s0, s1], teachers), tuple(students))


def test_finite_under_bf16_autocast_with_large_logit_gaps():
    students = [torch.tensor([[1e4, -1e4, 0.0], [-1e4, 0.0, 1e4]], dtype=torch.bfloat16, requires_grad=True)]
    teachers = [torch.tensor([[-1e4, 1e4, 0.0], [0.0, 1e4, -1e4]], dtype=torch.bfloat16)]
    loss_fn = CrossModalDINOLoss(3, student_temp=0.1, teacher_temps=[0.04])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(students, teachers)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(students[0].grad).all()
    expected = reference_loss([s.detach().double() for s in students], [t.double() for t in teachers],
                              [0.0] * 3, 0.1, 0.04)
    assert loss.item() == pytest.approx(expected, rel=1e-5)  # 1.5e5: the cross-entropy of the exact logits
    assert torch.isfinite(loss_fn.center).all() and loss_fn.center.dtype == torch.float32


def test_mismatched_views_raise():
    loss_fn = CrossModalDINOLoss(5)
    with pytest.raises(ValueError):
        loss_fn(views(1, 3, 5, seed=0), views(1, 4, 5, seed=1))
    with pytest.raises(ValueError):
        loss_fn([], views(1, 3, 5, seed=1))


def rank_views(rank):
    """Different data and batch sizes per rank: rank 0 has 3 samples, rank 1 has 5 (two views each)."""
    return views(2, 3 + 2 * rank, 4, seed=100 + rank, dtype=torch.float32)


def _center_worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        teachers = rank_views(rank)
        students = views(1, teachers[0].shape[0], 4, seed=200 + rank, dtype=torch.float32)
        loss_fn = CrossModalDINOLoss(4, center_momentum=0.5)
        loss_fn(students, teachers)
        torch.save(loss_fn.center, f"{out_dir}/center{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_center_is_all_reduced_across_two_ranks(tmp_path):
    mp.spawn(_center_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    union = torch.cat([row for rank in range(2) for row in rank_views(rank)])  # [2 * (3 + 5), 4]
    expected = 0.5 * union.mean(dim=0, keepdim=True)
    for rank in range(2):
        center = torch.load(tmp_path / f"center{rank}.pt")
        assert center.dtype == torch.float32
        torch.testing.assert_close(center, expected, rtol=1e-6, atol=1e-7)


def _sinkhorn_worker(rank, world_size, init_file, out_dir):
    from xkd.losses.distillation import sinkhorn_knopp

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        scores = rank_views(rank)[0] * (3.0 + rank)  # ranks of different sizes and score ranges
        torch.save(sinkhorn_knopp(scores, 0.5, iters=3), f"{out_dir}/q{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sinkhorn_balances_the_global_batch_across_ranks(tmp_path):
    from xkd.losses.distillation import sinkhorn_knopp

    mp.spawn(_sinkhorn_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    union = torch.cat([rank_views(rank)[0] * (3.0 + rank) for rank in range(2)])  # [3 + 5, 4]
    expected = sinkhorn_knopp(union, 0.5, iters=3)
    got = torch.cat([torch.load(tmp_path / f"q{rank}.pt") for rank in range(2)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_sinkhorn_targets_are_distributions_balanced_over_the_prototypes():
    from xkd.losses.distillation import entropy, sinkhorn_knopp

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 8, generator=g) * 3 + torch.linspace(0, 6, 8)  # prototype 7 wins most softmaxes
    q = sinkhorn_knopp(scores, temperature=0.5, iters=50)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(64))
    torch.testing.assert_close(q.sum(dim=0), torch.full((8,), 8.0), rtol=1e-3, atol=1e-3)
    soft = torch.softmax(scores / 0.5, dim=1)
    assert entropy(q.mean(0)) > entropy(soft.mean(0)) + 0.4  # the batch spreads over the prototypes
    few = sinkhorn_knopp(scores, temperature=0.5, iters=3)
    assert (few.sum(dim=0) - 8).abs().max() < (soft.sum(dim=0) - 8).abs().max() / 2
    torch.testing.assert_close(sinkhorn_knopp(scores + 100.0, 0.5, 3), few)  # a shift of the scores changes nothing


def test_sinkhorn_stays_finite_where_exp_underflows():
    from xkd.losses.distillation import sinkhorn_knopp

    # at tau 0.04, a prototype whose scores all lie 8 below the batch's largest has exp(-200) = 0 in fp32 after a
    # shift by the global max; a 3-iteration Sinkhorn then divided 0 by 0 (a pretraining run went NaN at step 190)
    scores = torch.tensor([[10.0, 0.0, 1.0], [9.0, 0.5, 0.0], [0.0, 2.0, 1.5], [0.2, 1.0, 2.0]])
    scores[:, 2] -= 10.0
    q = sinkhorn_knopp(scores, temperature=0.04, iters=3)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(4))
    assert q[:, 2].sum() > 0.5  # the far-behind prototype still receives mass


def test_the_loss_reports_its_teachers_entropies_and_sinkhorn_leaves_the_centre():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    loss = CrossModalDINOLoss(32, teacher_temps=[0.07], assignment="sinkhorn")
    loss([student], [teacher])
    assert torch.equal(loss.center, torch.zeros(1, 32))
    assert 0 < loss.stats["teacher_entropy"] < loss.stats["teacher_marginal_entropy"] <= math.log(32) + 1e-5
    with pytest.raises(ValueError, match="assignment"):
        CrossModalDINOLoss(32, assignment="balanced")
