"""ImageBindDC's matching losses (METHODS.md section 5): characteristic-function discrepancy per
modality, a cross-modal term on element-wise products and a joint term on cross-product matrices.

The CFD follows NCFM (``gszfwsb/NCFM``, ``NCFM/NCFM.py``, ``CFLossFunc``): for frequencies ``t``
(rows of ``T``, drawn from ``N(0, sigma^2)``) the empirical characteristic function of a set ``X``
is ``Re_X(t) = mean_x cos(t.x)``, ``Im_X(t) = mean_x sin(t.x)``; with ``|phi| = sqrt(Re^2 + Im^2)``

    amp = (|phi_R| - |phi_S|)^2
    pha = clamp(2 (|phi_R| |phi_S| - Re_R Re_S - Im_R Im_S), min 1e-12)
    CFD(R, S) = mean_t sqrt(alpha amp + beta pha)

(NCFM multiplies it by 300 before the step and learns the frequencies adversarially with a
sampling net when ``sampling_net`` is on, off in its configs; bindery draws fresh Gaussian
frequencies every step and leaves the scale to Adam, which is invariant to it.)

Every function here works on *grouped* sets: the real items of all classes in one tensor with a
class index per row, the synthetic items as ``(classes, per_class, dim)``, so one matrix product per
modality serves every class of a step. Each returns one value per class.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PHASE_FLOOR = 1e-12  # NCFM's clamp of the phase term (keeps sqrt differentiable at 0)


def draw_frequencies(count: int, dim: int, sigma: float, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """``(count, dim)`` frequencies from ``N(0, sigma^2)`` (NCFM: 4096 of them, sigma = 1)."""
    return sigma * torch.randn(count, dim, generator=generator).to(device)


@dataclass(frozen=True)
class Characteristic:
    """Empirical characteristic function of some sets at ``F`` frequencies: ``(F, sets)`` each."""

    real: torch.Tensor
    imag: torch.Tensor

    @property
    def norm(self) -> torch.Tensor:
        return torch.sqrt(self.real * self.real + self.imag * self.imag)


def characteristic(x: torch.Tensor, freqs: torch.Tensor, group: torch.Tensor | None = None,
                   groups: int = 1) -> Characteristic:
    """Characteristic function of the rows of ``x`` (``(n, d)``), one per group.

    ``group`` (``(n,)`` ints in ``[0, groups)``) splits the rows into sets; ``None`` = one set.
    A 3-d ``x`` of shape ``(groups, m, d)`` is ``groups`` sets of ``m`` rows each.
    """
    if x.ndim == 3:
        proj = torch.einsum("fd,gmd->fgm", freqs, x)
        return Characteristic(torch.cos(proj).mean(-1), torch.sin(proj).mean(-1))
    proj = freqs @ x.T  # (F, n)
    if group is None:
        return Characteristic(torch.cos(proj).mean(1, keepdim=True), torch.sin(proj).mean(1, keepdim=True))
    counts = torch.bincount(group, minlength=groups).clamp(min=1).to(x.dtype)
    re = torch.zeros(len(freqs), groups, dtype=x.dtype, device=x.device).index_add_(1, group, torch.cos(proj))
    im = torch.zeros(len(freqs), groups, dtype=x.dtype, device=x.device).index_add_(1, group, torch.sin(proj))
    return Characteristic(re / counts, im / counts)


def cf_terms(r: Characteristic, s: Characteristic) -> tuple[torch.Tensor, torch.Tensor]:
    """NCFM's amplitude and (clamped) phase terms, ``(F, sets)`` each."""
    nr, ns = r.norm, s.norm
    amp = (nr - ns) ** 2
    pha = (2 * (nr * ns - r.real * s.real - r.imag * s.imag)).clamp(min=PHASE_FLOOR)
    return amp, pha


def cfd(r: Characteristic, s: Characteristic, alpha: float = 0.5, beta: float = 0.5) -> torch.Tensor:
    """``mean_t sqrt(alpha amp + beta pha)`` per set: ``(sets,)``."""
    amp, pha = cf_terms(r, s)
    return torch.sqrt(alpha * amp + beta * pha).mean(0)


def cfd_sets(real: torch.Tensor, syn: torch.Tensor, freqs: torch.Tensor, alpha: float = 0.5,
             beta: float = 0.5) -> torch.Tensor:
    """CFD between two plain sets of rows (``(n, d)``, ``(m, d)``): a scalar, NCFM's ``CFLossFunc``."""
    return cfd(characteristic(real, freqs), characteristic(syn, freqs), alpha, beta)[0]


def cosine_distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``1 - cos(u, v)`` along the last dimension."""
    return 1 - F.cosine_similarity(u, v, dim=-1, eps=1e-12)


def group_mean(x: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """Mean of the rows of ``x`` (``(n, ...)``) per group: ``(groups, ...)``."""
    counts = torch.bincount(group, minlength=groups).clamp(min=1).to(x.dtype)
    sums = torch.zeros(groups, *x.shape[1:], dtype=x.dtype, device=x.device).index_add_(0, group, x)
    return sums / counts.view(-1, *[1] * (x.ndim - 1))


def cross_modal(ra: torch.Tensor, rb: torch.Tensor, group: torch.Tensor, sa: torch.Tensor,
                sb: torch.Tensor) -> torch.Tensor:
    """``1 - cos(mean_i r_a^i * r_b^i, mean_j s_a^j * s_b^j)`` per class: ``(classes,)``.

    ``ra``, ``rb``: the real pairs ``(n, d)`` with class ``group``; ``sa``, ``sb``: ``(classes, m, d)``.
    """
    real = group_mean(ra * rb, group, sa.shape[0])
    return cosine_distance(real, (sa * sb).mean(1))


def pad_groups(x: torch.Tensor, group: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``x`` laid out as ``(groups, largest group, d)``, zero rows after each group's own,
    and each group's size."""
    counts = torch.bincount(group, minlength=groups)
    order = torch.argsort(group, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(group), device=x.device) - starts[group[order]]
    out = x.new_zeros(groups, int(counts.max()) if len(group) else 0, x.shape[1])
    out[group[order], pos] = x[order]
    return out, counts


def joint_modal(ra: torch.Tensor, rb: torch.Tensor, group: torch.Tensor, sa: torch.Tensor,
                sb: torch.Tensor) -> torch.Tensor:
    """``1 - cos(vec(R_a^T R_b / n), vec(S_a^T S_b / m))`` per class: ``(classes,)``; any two dims.

    Computed without the ``d_a x d_b`` matrices: ``<vec(A^T B), vec(C^T D)> = sum((A C^T) * (B D^T))``,
    so a class costs ``n (n + m) d`` instead of ``n d_a d_b`` and holds ``n x (n + m)`` Gram entries.
    The ``1/n`` and ``1/m`` scales cancel in the cosine. Zero padding rows add nothing to any sum.
    """
    pa, counts = pad_groups(ra, group, sa.shape[0])
    pb, _ = pad_groups(rb, group, sa.shape[0])
    inner = ((pa @ sa.transpose(1, 2)) * (pb @ sb.transpose(1, 2))).sum((1, 2))
    real_sq = ((pa @ pa.transpose(1, 2)) * (pb @ pb.transpose(1, 2))).sum((1, 2))
    syn_sq = ((sa @ sa.transpose(1, 2)) * (sb @ sb.transpose(1, 2))).sum((1, 2))
    cos = inner / torch.sqrt((real_sq * syn_sq).clamp(min=1e-24))
    return torch.where(counts > 0, 1 - cos, torch.ones_like(cos))


@dataclass(frozen=True)
class LossWeights:
    alpha: float = 0.5  # CFD amplitude weight
    beta: float = 0.5  # CFD phase weight
    cross: float = 1.0  # weight of the cross-modal term
    joint: float = 1.0  # weight of the joint term


@dataclass(frozen=True)
class LossTerms:
    """Per-class values of each term (``(classes,)``) and their weighted total."""

    uni: torch.Tensor
    cross: torch.Tensor
    joint: torch.Tensor
    total: torch.Tensor


def condense_loss(real: dict[str, torch.Tensor], group: torch.Tensor, syn: dict[str, torch.Tensor],
                  freqs: dict[str, torch.Tensor], weights: LossWeights) -> LossTerms:
    """ImageBindDC's loss per class: uni-modal CFD summed over modalities, plus the cross-modal and
    joint terms summed over every pair of modalities (one pair when there are two).

    ``real[m]``: ``(n, d_m)`` real items with class ``group``; ``syn[m]``: ``(classes, m, d_m)``.
    The cross-modal term needs equal dims (element-wise products); it is skipped at weight 0.
    """
    classes = next(iter(syn.values())).shape[0]
    zero = torch.zeros(classes, device=group.device)
    uni = sum((cfd(characteristic(real[m], freqs[m], group, classes), characteristic(syn[m], freqs[m]),
                   weights.alpha, weights.beta) for m in syn), zero)
    cross, joint = zero, zero
    for a, b in itertools.combinations(syn, 2):
        if weights.cross:
            cross = cross + cross_modal(real[a], real[b], group, syn[a], syn[b])
        if weights.joint:
            joint = joint + joint_modal(real[a], real[b], group, syn[a], syn[b])
    return LossTerms(uni, cross, joint, uni + weights.cross * cross + weights.joint * joint)
