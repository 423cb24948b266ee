"""A compact metric-learning loop in cirtorch's shape, for the demo.

It consumes any dataset with cirtorch's ``TuplesDataset`` contract (``create_epoch_tuples(net)``,
items ``([q, p, n1..nN], target)``) — the plugin's ``NightTuplesDataset`` here — and trains with
cirtorch's contrastive loss, per tuple and summed over a batch as cirtorch does (the images of a
batch share forward passes by size, which leaves the gradients unchanged). When cirtorch is installed the
demo uses its network and loss instead (see ``runs``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from dsa_plugin.core.batching import batches_by_size
from dsa_plugin.core.descriptors import as_columns


def contrastive_loss(descriptors: Tensor, target: Tensor, margin: float = 0.7) -> Tensor:
    """Contrastive loss of one tuple, cirtorch's formulation.

    Args:
        descriptors: D×N columns: the query first, then the positive and negatives (L2-normalised).
        target: (N,) with -1 for the query, 1 for positives, 0 for negatives.
        margin: negatives closer than this are pushed away.

    Returns:
        scalar: 0.5·Σ_pos d² + 0.5·Σ_neg max(0, margin − d)², d = ‖q − x‖.

    Example:
        >>> x = torch.nn.functional.normalize(torch.randn(8, 4), dim=0)
        >>> contrastive_loss(x, torch.tensor([-1, 1, 0, 0])).shape
        torch.Size([])
    """
    if descriptors.dim() != 2 or descriptors.shape[1] != target.numel():
        raise ValueError(f"descriptors must be D×N with N = len(target) = {target.numel()}, "
                         f"got {tuple(descriptors.shape)}")
    query = descriptors[:, target == -1]
    others = descriptors[:, target != -1]
    label = target[target != -1].to(descriptors.dtype)
    dist = (others - query).norm(dim=0)
    return 0.5 * (label * dist.pow(2) + (1 - label) * torch.clamp(margin - dist, min=0).pow(2)).sum()


def collate_tuples(batch: Sequence) -> tuple[list, list]:
    """cirtorch's collate: lists of tuples, no stacking (images differ in size)."""
    return [item[0] for item in batch], [item[1] for item in batch]


def finetune(
    net: nn.Module,
    dataset,
    epochs: int,
    device: torch.device,
    lr: float = 1e-3,
    margin: float = 0.7,
    batch_size: int = 5,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    desc: str = "finetune",
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``net`` for ``epochs`` epochs of freshly mined tuples; returns per-epoch statistics."""
    loss_fn = loss_fn or (lambda x, t: contrastive_loss(x, t, margin))
    dim = int(net.meta["outputdim"])
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]  # a frozen trunk stays out
    params = [
        {"params": [p for n, p in trainable if not n.endswith("pool.p")]},
        # GeM p learns 10x faster without weight decay, as in the paper's recipe.
        {"params": [p for n, p in trainable if n.endswith("pool.p")], "lr": lr * 10, "weight_decay": 0},
    ]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=1e-4)
    history = []
    for epoch in range(epochs):
        kwargs = {"device": device} if _takes_device(dataset) else {}
        neg_dist = dataset.create_epoch_tuples(net, **kwargs)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_tuples)
        net.train()
        total, n = 0.0, 0
        for images, targets in tqdm(loader, desc=f"{desc} {epoch + 1}/{epochs}", leave=False, disable=not progress):
            optimizer.zero_grad()
            flat = [im for tuple_images in images for im in tuple_images]
            columns = describe(net, flat, dim, device).split([len(t) for t in images], dim=1)
            loss = sum(loss_fn(out, target.to(device)) for out, target in zip(columns, targets))
            loss.backward()
            optimizer.step()
            total, n = total + loss.item(), n + len(images)
        history.append({"epoch": epoch + 1, "loss": total / max(n, 1), "avg_neg_distance": float(neg_dist or math.nan)})
    return history


def describe(net: nn.Module, images: Sequence[Tensor], dim: int, device: torch.device) -> Tensor:
    """Descriptors of ``1 x 3 x H x W`` images as D x N columns, in order.

    Images of the same size go through the network together (one forward instead of N: several
    times faster on a CPU); the gradients are those of one image at a time, since the network
    describes each image on its own (no batch statistics in training mode).
    """
    out: list[Tensor | None] = [None] * len(images)
    for idx, group in batches_by_size(enumerate(images)):
        cols = as_columns(net(torch.cat(group).to(device)), len(idx), dim)
        for j, i in enumerate(idx):
            out[i] = cols[:, j : j + 1]
    return torch.cat(out, dim=1)  # type: ignore[arg-type]


def _takes_device(dataset) -> bool:
    import inspect

    return "device" in inspect.signature(dataset.create_epoch_tuples).parameters
