"""A frozen network trunk whose outputs are computed once per distinct input image.

The demo fine-tunes only the last convolution(s) of a pretrained VGG16; everything before them is
frozen, so its output for a given input never changes. Training data in cirtorch's loop are
deterministic (no random augmentation): the same day image, the same cached night image, the same
CLAHE output come back epoch after epoch and run after run. :class:`MemoSequential` keys the
frozen part's output by the *content* of each input image (a hash of its bytes), so a repeated
image costs one hash instead of a VGG16 forward, and nothing about the training loop, the tuple
loader or the loss changes. A store filled once (:meth:`MemoSequential.save`) is shared by all
runs. Since the key is the exact input, a hit returns exactly what the frozen layers computed for
that input; anything new is computed and added.
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterable

import torch
from torch import Tensor, nn

from dsa_plugin.core.files import atomic_write

__all__ = ["MemoSequential", "freeze_all_but_last_convs", "image_key"]


def image_key(x: Tensor) -> str:
    """Hash of one input's dtype, shape and bytes (``[C, H, W]``)."""
    t = x.detach().to("cpu").contiguous()
    h = hashlib.blake2b(f"{t.dtype}|{tuple(t.shape)}".encode(), digest_size=16)
    h.update(t.numpy().tobytes())
    return h.hexdigest()


class MemoSequential(nn.Sequential):
    """``nn.Sequential`` whose first ``frozen`` layers are memoised per input image.

    State-dict keys are those of the plain ``nn.Sequential`` (``0.weight`` ...), so a network using
    it saves and loads like the unwrapped one. The frozen layers must have ``requires_grad=False``
    and no state that changes (no batch norm in training mode, no dropout).

    Example:
        >>> layers = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1)]
        >>> seq = MemoSequential(*layers, frozen=2)
        >>> x = torch.rand(2, 3, 8, 8)
        >>> torch.equal(seq(x), nn.Sequential(*layers)(x)), seq.misses, seq(x) is not None, seq.hits
        (True, 2, True, 2)
    """

    def __init__(self, *layers: nn.Module, frozen: int) -> None:
        super().__init__(*layers)
        if not 0 <= frozen <= len(layers):
            raise ValueError(f"frozen must be in 0..{len(layers)}, got {frozen}")
        self.frozen = frozen
        self.store: dict[str, Tensor] = {}
        self.hits = 0
        self.misses = 0

    def _frozen_part(self, x: Tensor) -> Tensor:
        keys = [image_key(xi) for xi in x]
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        if missing:
            with torch.no_grad():
                y = x[missing]
                for layer in list(self)[: self.frozen]:
                    y = layer(y)
            for j, i in enumerate(missing):
                self.store[keys[i]] = y[j].detach().to("cpu").clone()
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.stack([self.store[k] for k in keys]).to(x.device)

    def forward(self, x: Tensor) -> Tensor:
        y = self._frozen_part(x) if self.frozen else x
        for layer in list(self)[self.frozen :]:
            y = layer(y)
        return y

    def save(self, path: str | os.PathLike) -> None:
        """Write the store (``{key: tensor}``, loads with ``weights_only=True``) atomically."""
        atomic_write(path, lambda f: torch.save(self.store, f))

    def load(self, path: str | os.PathLike) -> "MemoSequential":
        self.store.update(torch.load(path, map_location="cpu", weights_only=True))
        return self


def freeze_all_but_last_convs(layers: Iterable[nn.Module], trainable_convs: int) -> int:
    """Freeze every layer before the last ``trainable_convs`` convolutions; return how many layers
    are frozen (the index of the first trainable one)."""
    layers = list(layers)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    if not 1 <= trainable_convs <= len(convs):
        raise ValueError(f"trainable_convs must be in 1..{len(convs)}, got {trainable_convs}")
    first = convs[-trainable_convs]
    for layer in layers[:first]:
        layer.requires_grad_(False)
    return first
