"""Each loss against values worked out by hand on a tiny input (unit vectors with chosen sims)."""
from __future__ import annotations

import math

import pytest
import torch

from sfrs_core import losses as L

TAU = 0.07
R19 = math.sqrt(0.19)
R75 = math.sqrt(0.75)


def _tiny():
    """Two queries; sim(q,p) = 0.8 / 0.5; sim(q,n) = (0.9, 0.0) / (0.5, -1.0)."""
    q = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]], dtype=torch.float64)
    p = torch.tensor([[0.8, 0.6, 0], [0, R75, 0.5]], dtype=torch.float64)
    negs = torch.tensor([
        [[0.9, 0, R19], [0, 1.0, 0]],
        [[R75, 0, 0.5], [0, 0, -1.0]],
    ], dtype=torch.float64)
    return q, p, negs


def test_sare_ind_by_hand():
    q, p, negs = _tiny()
    # -log(e^{sp/t} / (e^{sp/t} + e^{sn/t})) = log(1 + e^{(sn - sp)/t}), one per (query, negative)
    terms = [
        math.log(1 + math.exp((0.9 - 0.8) / TAU)),   # 1.6434
        math.log(1 + math.exp((0.0 - 0.8) / TAU)),   # 1.09e-5
        math.log(1 + math.exp((0.5 - 0.5) / TAU)),   # log 2
        math.log(1 + math.exp((-1.0 - 0.5) / TAU)),  # 4.9e-10
    ]
    expected = sum(terms) / 4
    assert expected == pytest.approx(0.5841, abs=1e-4)
    assert L.sare_ind_loss(q, p, negs).item() == pytest.approx(expected, abs=1e-9)


def test_sare_joint_by_hand():
    q, p, negs = _tiny()
    # -log(e^{sp/t} / (e^{sp/t} + sum_n e^{sn/t})) = log(1 + sum_n e^{(sn - sp)/t}), one per query
    q1 = math.log(1 + math.exp(0.1 / TAU) + math.exp(-0.8 / TAU))
    q2 = math.log(1 + math.exp(0.0) + math.exp(-1.5 / TAU))
    expected = (q1 + q2) / 2
    assert expected == pytest.approx(1.1683, abs=1e-4)
    assert L.sare_joint_loss(q, p, negs).item() == pytest.approx(expected, abs=1e-9)


def test_triplet_by_hand():
    q, p, negs = _tiny()
    # unit vectors: d = sqrt(2 - 2 sim)
    d = lambda s: math.sqrt(2 - 2 * s)  # noqa: E731
    pairs = [(0.8, 0.9), (0.8, 0.0), (0.5, 0.5), (0.5, -1.0)]
    # OpenIBL's margin: --margin 0.1 trained as sqrt(0.1) = 0.316228 on non-squared distances
    assert L.TRIPLET_MARGIN == pytest.approx(0.316228, abs=1e-6)
    expected = sum(max(0.0, d(sp) - d(sn) + math.sqrt(0.1)) for sp, sn in pairs) / 4
    assert expected == pytest.approx((0.632456 - 0.447214 + 0.316228 + 0.316228) / 4, abs=1e-6)
    assert L.triplet_loss(q, p, negs).item() == pytest.approx(expected, abs=1e-9)
    assert L.triplet_loss(q, p, negs, margin=0.1).item() == pytest.approx(
        (0.632456 - 0.447214 + 0.1 + 0.1) / 4, abs=1e-6)
    # squared distances (NetVLAD paper, margin 0.1): (0.4 - 0.2 + 0.1) and (1 - 1 + 0.1), others inactive
    assert L.triplet_loss(q, p, negs, margin=0.1, squared=True).item() == pytest.approx(0.4 / 4, abs=1e-9)
    # matches torch's own triplet margin loss with OpenIBL's arguments, up to its 1e-6 eps
    qq = q.unsqueeze(1).expand_as(negs).reshape(-1, 3)
    pp = p.unsqueeze(1).expand_as(negs).reshape(-1, 3)
    ref = torch.nn.functional.triplet_margin_loss(qq, pp, negs.reshape(-1, 3), margin=0.1**0.5, p=2)
    assert L.triplet_loss(q, p, negs).item() == pytest.approx(ref.item(), abs=1e-5)


def test_sare_euclidean_logits_by_hand():
    """OpenIBL's SARE baseline: logits -||q - x||^2 = 2 sim - 2, no temperature."""
    q, p, negs = _tiny()
    ind = [math.log(1 + math.exp((2 * sn - 2) - (2 * sp - 2))) for sp, sn in
           [(0.8, 0.9), (0.8, 0.0), (0.5, 0.5), (0.5, -1.0)]]
    assert sum(ind) / 4 == pytest.approx((0.7981 + 0.1839 + 0.6931 + 0.0486) / 4, abs=1e-4)
    assert L.sare_ind_loss(q, p, negs, similarity="euclidean").item() == pytest.approx(sum(ind) / 4, abs=1e-9)
    joint = (math.log(1 + math.exp(0.2) + math.exp(-1.6)) + math.log(1 + 1 + math.exp(-3.0))) / 2
    assert L.sare_joint_loss(q, p, negs, similarity="euclidean").item() == pytest.approx(joint, abs=1e-9)
    assert L.hard_loss("sare_ind", q, p, negs, similarity="euclidean") == L.sare_ind_loss(q, p, negs, similarity="euclidean")
    with pytest.raises(ValueError, match="unknown similarity"):
        L.sare_ind_loss(q, p, negs, similarity="cosine")


def test_masked_soft_loss_equals_the_loss_over_valid_entries_only():
    """A query with fewer positives: its padded entries take no part in either softmax."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3 * 9, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3 * 9, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 27, dtype=torch.bool)
    mask[1, 18:] = False  # query 1 has 2 positives of 3
    got = L.soft_region_loss(s, t, 0.06, 0.07, mask=mask)

    def ce(ss, tt):
        return -(torch.softmax(tt / 0.06, -1) * torch.log_softmax(ss / 0.07, -1)).sum()

    expected = (ce(s[0], t[0]) + ce(s[1, :18], t[1, :18])) / 2
    assert got.item() == pytest.approx(expected.item(), abs=1e-12)
    got.backward()
    assert torch.isfinite(s.grad).all() and (s.grad[1, 18:] == 0).all()
    # an all-valid mask is the unmasked loss
    full = torch.ones_like(mask)
    assert L.soft_region_loss(s, t, 0.06, 0.07, mask=full).item() == pytest.approx(
        L.soft_region_loss(s, t, 0.06, 0.07).item(), abs=1e-12)


def test_hard_loss_dispatch():
    q, p, negs = _tiny()
    assert L.hard_loss("sare_ind", q, p, negs) == L.sare_ind_loss(q, p, negs)
    assert L.hard_loss("sare_joint", q, p, negs) == L.sare_joint_loss(q, p, negs)
    assert L.hard_loss("triplet", q, p, negs) == L.triplet_loss(q, p, negs)
    with pytest.raises(ValueError, match="unknown loss"):
        L.hard_loss("contrastive", q, p, negs)


def test_hardest_region_and_sfrs_hard_loss_by_hand():
    q = torch.tensor([[1.0, 0, 0]], dtype=torch.float64)
    p = torch.tensor([[0.8, 0.6, 0]], dtype=torch.float64)
    neg_regions = torch.tensor([[
        [[0, 1.0, 0], [0.6, 0.8, 0], [0.3, 0, math.sqrt(0.91)]],  # sims 0, .6, .3 -> region 1
        [[0.9, 0, R19], [0, 0, 1.0], [-1.0, 0, 0]],               # sims .9, 0, -1 -> region 0
    ]], dtype=torch.float64, requires_grad=True)
    selected, idx = L.hardest_region_negatives(q, neg_regions)
    assert idx.tolist() == [[1, 0]]
    torch.testing.assert_close(selected[0], neg_regions[0, [0, 1], [1, 0]])

    loss = L.sfrs_hard_loss(q, p, neg_regions, "sare_ind")
    expected = (math.log(1 + math.exp((0.6 - 0.8) / TAU)) + math.log(1 + math.exp((0.9 - 0.8) / TAU))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    loss.backward()
    used = torch.zeros(1, 2, 3, dtype=torch.bool)
    used[0, 0, 1] = used[0, 1, 0] = True
    assert (neg_regions.grad.abs().sum(-1) > 0).eq(used).all()


def test_region_similarities_order():
    q = torch.tensor([[1.0, 0]])
    pos = torch.tensor([[[[1.0, 0], [0, 1.0]], [[0.6, 0.8], [-1.0, 0]]]])  # B=1, k=2, R=2
    assert L.region_similarities(q, pos).tolist() == [[1.0, 0.0, pytest.approx(0.6), -1.0]]


def test_soft_region_loss_by_hand():
    s = [[0.5, 0.2, 0.1], [0.0, 0.3, 0.3]]
    t = [[0.6, 0.1, 0.3], [0.2, 0.2, 0.9]]
    tau_g = 0.06

    def row(si, ti):
        zt = sum(math.exp(v / tau_g) for v in ti)
        zs = sum(math.exp(v / TAU) for v in si)
        return -sum(math.exp(tv / tau_g) / zt * (sv / TAU - math.log(zs)) for sv, tv in zip(si, ti))

    expected = (row(s[0], t[0]) + row(s[1], t[1])) / 2
    f64 = torch.float64
    got = L.soft_region_loss(torch.tensor(s, dtype=f64), torch.tensor(t, dtype=f64), tau_g)
    assert got.item() == pytest.approx(expected, abs=1e-9)


def test_soft_loss_gradient_vanishes_at_equal_logits():
    torch.manual_seed(0)
    teacher = torch.randn(4, 90, dtype=torch.float64) * 0.3
    student = teacher.clone().requires_grad_(True)
    L.soft_region_loss(student, teacher, tau_teacher=TAU, tau_student=TAU).backward()
    assert student.grad.abs().max() < 1e-12

    other = (teacher + 0.05 * torch.randn_like(teacher)).requires_grad_(True)
    L.soft_region_loss(other, teacher, tau_teacher=TAU, tau_student=TAU).backward()
    assert other.grad.abs().max() > 1e-3
    sharper = teacher.clone().requires_grad_(True)  # equal logits, different temperatures
    L.soft_region_loss(sharper, teacher, tau_teacher=0.05, tau_student=TAU).backward()
    assert sharper.grad.abs().max() > 1e-3
    # the teacher gets no gradient
    t = teacher.clone().requires_grad_(True)
    L.soft_region_loss(student.detach().requires_grad_(True), t, TAU).backward()
    assert t.grad is None


def test_generation_temperatures():
    assert L.TAU0 == 0.07
    assert [L.generation_temperature(g) for g in range(5)] == [0.07, 0.07, 0.06, 0.05, 0.05]
    with pytest.raises(ValueError):
        L.generation_temperature(-1)


def test_shape_errors_are_clear():
    q, p, negs = _tiny()
    with pytest.raises(ValueError, match="B x N x L"):
        L.sare_ind_loss(q, p, negs[0])
    with pytest.raises(ValueError, match="B x M"):
        L.soft_region_loss(torch.zeros(2, 3), torch.zeros(2, 4), 0.07)
