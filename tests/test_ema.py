import numpy as np
import pytest
import torch
from torch import nn

from xkd.models.ema import ema_update, ema_update_pairs, teacher_from_student


def tiny_net(seed, with_decoder=False):
    torch.manual_seed(seed)
    net = nn.ModuleDict({"backbone": nn.Linear(3, 4), "head": nn.Linear(4, 2)})
    if with_decoder:
        net["decoder"] = nn.Linear(4, 3)
    return net


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_momentum_one_leaves_the_teacher_bit_identical():
    teacher, student = tiny_net(0), tiny_net(1)
    before = snapshot(teacher)
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_momentum_zero_copies_the_student():
    teacher, student = tiny_net(0), tiny_net(1)
    ema_update(teacher, student, 0.0)
    assert all(torch.equal(student.state_dict()[k], v) for k, v in teacher.state_dict().items())


def test_hand_computed_value_for_momentum_0_9():
    teacher, student = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    teacher.weight.data.fill_(1.0)
    student.weight.data.fill_(3.0)
    ema_update(teacher, student, 0.9)
    assert teacher.weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0, abs=1e-6)  # 1.2
    ema_update(teacher, student, np.float64(0.5))  # numpy scalars from a schedule work too
    assert teacher.weight.item() == pytest.approx(0.5 * 1.2 + 0.5 * 3.0, abs=1e-6)


def test_parameters_are_matched_by_name_not_order():
    class Forward(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.zeros(2))
            self.b = nn.Parameter(torch.zeros(2))

    class Reversed(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.full((2,), 20.0))
            self.a = nn.Parameter(torch.full((2,), 10.0))

    teacher, student = Forward(), Reversed()
    ema_update(teacher, student, 0.5)
    assert torch.equal(teacher.a, torch.full((2,), 5.0)) and torch.equal(teacher.b, torch.full((2,), 10.0))


def test_teacher_without_decoder_and_mismatches():
    student = tiny_net(1, with_decoder=True)
    teacher = tiny_net(0)
    decoder_before = snapshot(student["decoder"])
    ema_update(teacher, student, 0.0)
    assert torch.equal(teacher["head"].weight, student["head"].weight)
    assert all(torch.equal(decoder_before[k], v) for k, v in student["decoder"].state_dict().items())
    with pytest.raises(KeyError):
        ema_update(tiny_net(0, with_decoder=True), tiny_net(1), 0.5)
    wrong = tiny_net(1)
    wrong["head"] = nn.Linear(4, 5)
    with pytest.raises(ValueError):
        ema_update(tiny_net(0), wrong, 0.5)
    with pytest.raises(ValueError):
        ema_update(tiny_net(0), tiny_net(1), 1.5)


def test_teacher_from_student():
    student = tiny_net(2)
    student.eval()
    teacher = teacher_from_student(student)
    assert not teacher.training  # the mode is copied, not changed
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    for (name, t), s in zip(teacher.named_parameters(), student.parameters()):
        assert torch.equal(t, s) and t.data_ptr() != s.data_ptr(), name


def mats_pair():
    """Video and audio networks with modality-specific tokenisers and one shared block, as MATS (spec §A8)."""
    torch.manual_seed(3)
    shared = nn.Linear(2, 2)
    return (nn.ModuleDict({"tokens": nn.Linear(2, 2), "blocks": shared}),
            nn.ModuleDict({"tokens": nn.Linear(2, 2), "blocks": shared}))


@pytest.mark.parametrize("update_shared_once", [False, True])
def test_shared_teacher_blocks_single_or_double_ema(update_shared_once):
    teacher_v, teacher_a = mats_pair()
    student_v, student_a = mats_pair()
    for p in (*student_v.parameters(), *student_a["tokens"].parameters()):
        p.data.add_(1.0)
    t0 = {k: snapshot(m) for k, m in (("v", teacher_v), ("a", teacher_a))}
    m_v, m_a = 0.9, 0.8
    ema_update_pairs([(teacher_v, student_v), (teacher_a, student_a)], [m_v, m_a],
                     update_shared_once=update_shared_once)
    once = {k: m_v * t0["v"][k] + (1 - m_v) * v for k, v in student_v.state_dict().items()}
    for k in ("tokens.weight", "tokens.bias"):
        torch.testing.assert_close(teacher_v.state_dict()[k], once[k])
        torch.testing.assert_close(teacher_a.state_dict()[k], m_a * t0["a"][k] + (1 - m_a) * student_a.state_dict()[k])
    for k in ("blocks.weight", "blocks.bias"):
        expected = once[k] if update_shared_once else m_a * once[k] + (1 - m_a) * student_a.state_dict()[k]
        torch.testing.assert_close(teacher_v.state_dict()[k], expected)
    assert teacher_v["blocks"] is teacher_a["blocks"]


def test_ema_update_pairs_rejects_a_wrong_number_of_momenta():
    with pytest.raises(ValueError):
        ema_update_pairs([(tiny_net(0), tiny_net(1))], [0.9, 0.9])
