"""History of generated images for CycleGAN's discriminators (pool size 50, docs/reference.md §image-pool).

Until the pool is full every image is stored and returned; afterwards each image is, with
probability 1/2, swapped with a random stored one (the stored one is returned), else returned.
The pool owns its ``random.Random`` so that its state is saved with the checkpoint.

Credit: the algorithm (and its 0.5 swap probability) follows ``ImagePool`` in ``util/image_pool.py`` of
CycleGAN's code, github.com/junyanz/pytorch-CycleGAN-and-pix2pix, Copyright (c) 2017, Jun-Yan Zhu
and Taesung Park, BSD 2-Clause licence; gandtr uses the same pool. Ours differs only in owning its
random generator and saving its state.

Example:
    >>> pool = ImagePool(2, seed=0)
    >>> pool.query(torch.zeros(3, 3, 4, 4)).shape
    torch.Size([3, 3, 4, 4])
"""

from __future__ import annotations

import random
from typing import Any

import torch


class ImagePool:
    """ImagePool.

    Example:
        >>> import torch
        >>> pool = ImagePool(size=0)        # size 0: no history, the batch comes back as it is
        >>> x = torch.ones(2, 3, 4, 4)
        >>> torch.equal(pool.query(x), x)
        True
    """
    def __init__(self, size: int = 50, seed: int = 0) -> None:
        self.size = int(size)
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` detached images, some replaced by older ones."""
        if self.size <= 0:
            return images.detach()
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                k = self.rng.randint(0, self.size - 1)
                out.append(self.images[k].clone())
                self.images[k] = image
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"images": [im.cpu() for im in self.images], "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any], device: "torch.device | str" = "cpu") -> None:
        self.images = [im.to(device) for im in state["images"]]
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
