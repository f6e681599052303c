"""Training losses of NetVLAD, SARE and SFRS (docs/design.md §1), batched over queries.

Descriptors are L2-normalised; ``sim(a, b) = <a, b>``. Shapes: queries ``q`` and easiest
positives ``p`` are ``B x L``, negatives ``negs`` are ``B x N x L``; each loss is a scalar,
the mean over queries (and over negatives where the loss is per negative).

* ``triplet_loss``: ``mean_{b,n} max(0, d(q,p) - d(q,n) + margin)`` with the Euclidean
  distance ``d`` (not squared) and margin √0.1 - what OpenIBL trains with: its scripts pass
  ``--margin 0.1`` and it calls ``F.triplet_margin_loss(p=2, margin=margin ** 0.5)`` (√ of the
  NetVLAD paper's margin on squared distances). ``squared=True`` gives the NetVLAD paper's squared
  distances. (OpenIBL's ``triplet_margin_loss`` adds 1e-6 inside the norm; we don't.)
* ``sare_ind_loss``: ``mean_{b,n} -log softmax([s(q,p), s(q,n)])[0]``.
* ``sare_joint_loss``: ``mean_b -log softmax([s(q,p), s(q,n_1..n_N)])[0]``.

  The logits ``s`` of the SARE losses come in two forms (``similarity``): ``"dot"``,
  ``sim(q,x) / tau0`` with tau0 = 0.07, what OpenIBL's SFRS trainer uses (our default), and
  ``"euclidean"``, ``-||q - x||²`` with no temperature, what OpenIBL's SARE baseline script
  (``netvlad_img.py``, the original SARE) uses. For unit descriptors the Euclidean form equals
  the dot form with a temperature of 0.5.
* ``sfrs_hard_loss``: a hard loss of q's global vs p's global against, for each negative,
  its single region (of 9) most similar to q's global.
* ``soft_region_loss``: cross-entropy between the teacher's and the student's distributions
  over the ``k x 9`` similarities ``sim(q_global, p_i^r)``: target ``softmax(s_t / tau_g)``,
  prediction ``log_softmax(s_s / tau0)``; summed over the k*9 entries, averaged over queries
  (as OpenIBL's ``SFRSTrainer``). A mask drops the entries of missing positives (a query may
  have fewer than k difficult positives): both distributions are over its valid entries only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

TAU0 = 0.07
GENERATION_TEMPERATURES = (0.07, 0.07, 0.06, 0.05)  # tau_g of the soft labels, g = 0..3
SOFT_WEIGHT = 0.5  # lambda in L = L_hard + lambda * L_soft
TRIPLET_MARGIN = 0.1**0.5  # OpenIBL: --margin 0.1, trained with margin ** 0.5 on non-squared distances
LOSS_TYPES = ("triplet", "sare_ind", "sare_joint")
SIMILARITIES = ("dot", "euclidean")


def generation_temperature(generation: int) -> float:
    """tau_g of generation g (the last value for generations beyond the paper's four)."""
    if generation < 0:
        raise ValueError(f"generation must be >= 0, got {generation}")
    return GENERATION_TEMPERATURES[min(generation, len(GENERATION_TEMPERATURES) - 1)]


def _check(q: torch.Tensor, p: torch.Tensor, negs: torch.Tensor) -> None:
    if q.dim() != 2 or p.shape != q.shape or negs.dim() != 3 or negs.shape[::2] != q.shape:
        raise ValueError(
            f"expected q, p: B x L and negs: B x N x L, got {tuple(q.shape)}, "
            f"{tuple(p.shape)}, {tuple(negs.shape)}"
        )


def _logits(q: torch.Tensor, p: torch.Tensor, negs: torch.Tensor, tau: float,
            similarity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """SARE logits of the positive (B) and the negatives (B x N): ``sim/tau`` or ``-||q-x||²``."""
    _check(q, p, negs)
    if similarity == "dot":
        return (q * p).sum(-1) / tau, torch.einsum("bl,bnl->bn", q, negs) / tau
    if similarity == "euclidean":
        return -(q - p).pow(2).sum(-1), -(q.unsqueeze(1) - negs).pow(2).sum(-1)
    raise ValueError(f"unknown similarity {similarity!r}; choose one of {list(SIMILARITIES)}")


def triplet_loss(
    q: torch.Tensor, p: torch.Tensor, negs: torch.Tensor,
    margin: float = TRIPLET_MARGIN, squared: bool = False,
) -> torch.Tensor:
    """Margin loss on (squared) Euclidean distances, mean over query-negative pairs."""
    _check(q, p, negs)
    d_pos = (q - p).pow(2).sum(-1, keepdim=True)  # B x 1
    d_neg = (q.unsqueeze(1) - negs).pow(2).sum(-1)  # B x N
    if not squared:
        d_pos, d_neg = d_pos.clamp_min(1e-12).sqrt(), d_neg.clamp_min(1e-12).sqrt()
    return F.relu(d_pos - d_neg + margin).mean()


def sare_ind_loss(q: torch.Tensor, p: torch.Tensor, negs: torch.Tensor, tau: float = TAU0,
                  similarity: str = "dot") -> torch.Tensor:
    """SARE-ind: a 2-way softmax per negative, mean over queries and negatives."""
    s_pos, s_neg = _logits(q, p, negs, tau, similarity)
    logits = torch.stack((s_pos.unsqueeze(1).expand_as(s_neg), s_neg), dim=-1)  # B x N x 2
    return -F.log_softmax(logits, dim=-1)[..., 0].mean()


def sare_joint_loss(q: torch.Tensor, p: torch.Tensor, negs: torch.Tensor, tau: float = TAU0,
                    similarity: str = "dot") -> torch.Tensor:
    """SARE-joint: one (1+N)-way softmax per query, mean over queries."""
    s_pos, s_neg = _logits(q, p, negs, tau, similarity)
    logits = torch.cat((s_pos.unsqueeze(1), s_neg), dim=1)  # B x (1+N)
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def hard_loss(
    loss_type: str, q: torch.Tensor, p: torch.Tensor, negs: torch.Tensor,
    *, tau: float = TAU0, margin: float = TRIPLET_MARGIN, similarity: str = "dot",
) -> torch.Tensor:
    """Dispatch on ``loss_type`` in ``LOSS_TYPES`` (``similarity``: the SARE logits' form)."""
    if loss_type == "triplet":
        return triplet_loss(q, p, negs, margin)
    if loss_type == "sare_ind":
        return sare_ind_loss(q, p, negs, tau, similarity)
    if loss_type == "sare_joint":
        return sare_joint_loss(q, p, negs, tau, similarity)
    raise ValueError(f"unknown loss type {loss_type!r}; choose one of {list(LOSS_TYPES)}")


def hardest_region_negatives(
    q_global: torch.Tensor, neg_regions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each negative (``neg_regions``: B x N x R x L), its region most similar to q.

    Returns the selected descriptors ``B x N x L`` (differentiable) and their region indices
    ``B x N`` (selection itself uses detached similarities).
    """
    if neg_regions.dim() != 4 or neg_regions.shape[0] != q_global.shape[0]:
        raise ValueError(f"expected neg_regions B x N x R x L, got {tuple(neg_regions.shape)}")
    with torch.no_grad():
        sims = torch.einsum("bl,bnrl->bnr", q_global, neg_regions)
        idx = sims.argmax(dim=-1)  # B x N
    gather = idx[:, :, None, None].expand(-1, -1, 1, neg_regions.shape[-1])
    return torch.gather(neg_regions, 2, gather).squeeze(2), idx


def sfrs_hard_loss(
    q_global: torch.Tensor, p_global: torch.Tensor, neg_regions: torch.Tensor,
    loss_type: str = "sare_ind", *, tau: float = TAU0, margin: float = TRIPLET_MARGIN, similarity: str = "dot",
) -> torch.Tensor:
    """SFRS ``L_hard``: hard loss of q vs p* against each negative's hardest region."""
    negs, _ = hardest_region_negatives(q_global, neg_regions)
    return hard_loss(loss_type, q_global, p_global, negs, tau=tau, margin=margin, similarity=similarity)


def region_similarities(q_global: torch.Tensor, pos_regions: torch.Tensor) -> torch.Tensor:
    """``sim(q_global, p_i^r)``: ``B x L`` and ``B x k x 9 x L`` -> ``B x (k*9)`` (i major)."""
    if pos_regions.dim() != 4 or pos_regions.shape[0] != q_global.shape[0]:
        raise ValueError(f"expected pos_regions B x k x R x L, got {tuple(pos_regions.shape)}")
    return torch.einsum("bl,bkrl->bkr", q_global, pos_regions).flatten(1)


def soft_labels(teacher_sims: torch.Tensor, tau: float) -> torch.Tensor:
    """The teacher's target distribution ``softmax(s_t / tau)`` over the last dim."""
    return F.softmax(teacher_sims.detach() / tau, dim=-1)


def soft_region_loss(
    student_sims: torch.Tensor, teacher_sims: torch.Tensor,
    tau_teacher: float, tau_student: float = TAU0, mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """SFRS ``L_soft``: ``mean_b sum_m -softmax(t/tau_g)_m * log_softmax(s/tau0)_m``.

    ``mask`` (``B x M`` bool, True = valid) restricts both softmaxes to each row's valid entries.
    """
    if student_sims.shape != teacher_sims.shape or student_sims.dim() != 2:
        raise ValueError(
            f"expected equal B x M similarity matrices, got {tuple(student_sims.shape)} "
            f"and {tuple(teacher_sims.shape)}"
        )
    if mask is None:
        target = soft_labels(teacher_sims, tau_teacher)
        return -(target * F.log_softmax(student_sims / tau_student, dim=-1)).sum(-1).mean()
    if mask.shape != student_sims.shape:  # every row needs a valid entry (not checked: no device sync)
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected {tuple(student_sims.shape)}")
    off = torch.tensor(float("-inf"), dtype=student_sims.dtype, device=student_sims.device)
    target = soft_labels(torch.where(mask, teacher_sims, off), tau_teacher)
    log_pred = F.log_softmax(torch.where(mask, student_sims / tau_student, off), dim=-1)
    return -torch.where(mask, target * log_pred, torch.zeros_like(log_pred)).sum(-1).mean()
