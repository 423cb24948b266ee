"""PatchNCE: CUT's contrastive patch loss (docs/gan.md §cut).

As the reference's ``multilayer_patchnce_loss`` (gandtr ``compound_losses.py``, after
taesungp/contrastive-unpaired-translation ``patchnce.py``); written from the description. For each
query patch the positive is the key patch at the same position; the negatives are the other key
patches of its group (``batch_dim_for_bmm`` groups; 1 = the whole batch, the reference's setting);
its own position among the negatives is masked with logit -10 before the division by the temperature.
Keys are detached: gradients reach the generator and the MLP only through the queries.

Example:
    >>> q = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    >>> patch_nce_loss(q, q).shape
    torch.Size([8])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["patch_nce_loss", "multilayer_patch_nce_loss", "cut_nce_loss"]


def patch_nce_loss(feat_q: torch.Tensor, feat_k: torch.Tensor, temperature: float = 0.07,
                   batch_dim_for_bmm: int = 1) -> torch.Tensor:
    """Per-patch InfoNCE cross-entropy.

    Args:
        feat_q: ``[N, C]`` query patches (the translated image's), L2-normalised.
        feat_k: ``[N, C]`` key patches (the source image's) at the same positions; detached here.
        temperature: logits are divided by it (0.07).
        batch_dim_for_bmm: number of groups the N patches are split into (image-major); negatives
            come from the same group. ``N`` must be divisible by it.

    Returns:
        ``[N]`` loss per patch: ``-log softmax([q·k+, q·k_j (j != i, own = -10)] / T)[0]``.
    """
    if feat_q.shape != feat_k.shape or feat_q.dim() != 2:
        raise ValueError(f"feat_q and feat_k must both be [N, C], got {tuple(feat_q.shape)} and {tuple(feat_k.shape)}")
    n, dim = feat_q.shape
    feat_k = feat_k.detach()
    positive = (feat_q * feat_k).sum(dim=1, keepdim=True)                       # [N, 1]
    q = feat_q.reshape(batch_dim_for_bmm, -1, dim)
    k = feat_k.reshape(batch_dim_for_bmm, -1, dim)
    negative = torch.bmm(q, k.transpose(1, 2))                                   # [G, n, n]
    own = torch.eye(q.shape[1], device=q.device, dtype=torch.bool)[None]
    negative = negative.masked_fill(own, -10.0).reshape(-1, q.shape[1])          # [N, n]
    logits = torch.cat([positive, negative], dim=1) / temperature
    target = torch.zeros(n, dtype=torch.long, device=feat_q.device)
    return F.cross_entropy(logits.float(), target, reduction="none")


def multilayer_patch_nce_loss(feats_q: Sequence[torch.Tensor], feats_k: Sequence[torch.Tensor],
                              temperature: float = 0.07, weight: float = 1.0, batch_dim_for_bmm: int = 1
                              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mean over layers of ``mean(weight * patch_nce_loss)``.

    Args:
        feats_q, feats_k: one ``[N_l, C]`` pair per tapped layer (``PatchSampleMLP`` output).
        temperature, batch_dim_for_bmm: see :func:`patch_nce_loss`.
        weight: the reference's ``nce.weight``, applied inside each layer's mean (the CUT step applies
            it once more outside, as the reference does).

    Returns:
        ``(total, per-layer losses)``; ``total = sum(per-layer) / number of layers``.
    """
    if len(feats_q) != len(feats_k) or not feats_q:
        raise ValueError(f"need the same non-zero number of query and key layers, "
                         f"got {len(feats_q)} and {len(feats_k)}")
    per_layer = [torch.mean(patch_nce_loss(q, k, temperature, batch_dim_for_bmm) * weight)
                 for q, k in zip(feats_q, feats_k)]
    return sum(per_layer) / len(per_layer), per_layer


def cut_nce_loss(feats_q_x: Sequence[torch.Tensor], feats_k_x: Sequence[torch.Tensor],
                 feats_q_y: Sequence[torch.Tensor] | None, feats_k_y: Sequence[torch.Tensor] | None,
                 nce_weight: float = 1.0, identity_weight: float = 10.0, temperature: float = 0.07
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The NCE part of CUT's generator loss, as the reference's ``SupervisedCUTEpoch``.

    ``nce = nce_weight * L(q_x, k_x)``; with ``identity_weight > 0`` also
    ``idt = identity_weight * L(q_y, k_y)`` and the result is ``(nce + idt) / 2``, where ``L`` is
    :func:`multilayer_patch_nce_loss` with ``weight=nce_weight``.

    Args:
        feats_q_x, feats_k_x: ``[N_l, C]`` per layer: pooled features of G(day) (queries) and of day
            (keys) at the same positions.
        feats_q_y, feats_k_y: the same for G(night) and night (the identity term); None without it.
        nce_weight, identity_weight, temperature: the reference's 1, 10, 0.07.

    Returns:
        ``(total, nce, idt)``: the generator's NCE loss, the weighted day term and the weighted
        identity term (0 without it).
    """
    nce = nce_weight * multilayer_patch_nce_loss(feats_q_x, feats_k_x, temperature, nce_weight)[0]
    if identity_weight > 0 and feats_q_y is not None and feats_k_y is not None:
        idt = identity_weight * multilayer_patch_nce_loss(feats_q_y, feats_k_y, temperature, nce_weight)[0]
        return (nce + idt) * 0.5, nce, idt
    return nce, nce, torch.zeros((), device=nce.device)
