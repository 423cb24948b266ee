"""Sample grids: one row per image, columns day | G(day) | real night | HED(day) | HED(G(day))
(CycleGAN: day | G_X(day) | real night | G_Y(night) | G_Y(G_X(day)); CUT: day | G(day) | night | G(night)).

Example:
    >>> grid = sample_grid({"day": torch.zeros(2, 3, 8, 8), "edge_day": torch.ones(2, 1, 8, 8)})
    >>> grid.shape  # 2 rows x 2 columns of 8 x 8 tiles, 2 px apart and around: 2 + 2 * (8 + 2)
    torch.Size([3, 22, 22])
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from dsa_plugin.core.files import atomic_write_bytes

COLUMNS = {
    "hed": ("day", "fake", "night", "edge_day", "edge_fake"),
    "cyclegan": ("day", "fake", "night", "fake_day", "rec_day"),
    "cut": ("day", "fake", "night", "idt"),  # idt = G(night), the identity term's input
}
EDGE_KEYS = ("edge_day", "edge_fake")


def sample_grid(visuals: dict[str, torch.Tensor], columns: tuple[str, ...] | None = None,
                pad: int = 2) -> torch.Tensor:
    """``[3, H, W]`` grid in [0, 1]; images in [-1, 1], edge maps (``edge_*``, 1 channel) in [0, 1]."""
    columns = columns or tuple(k for k in visuals)
    tiles = []
    for key in columns:
        x = visuals[key].detach().float().cpu()
        x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
        x = x if key in EDGE_KEYS else x * 0.5 + 0.5
        tiles.append(x.clamp(0, 1))
    h = max(t.shape[-2] for t in tiles)
    w = max(t.shape[-1] for t in tiles)
    rows = tiles[0].shape[0]
    grid = torch.ones(3, pad + rows * (h + pad), pad + len(tiles) * (w + pad))
    for c, t in enumerate(tiles):
        if t.shape[-2:] != (h, w):
            t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
        for r in range(rows):
            y, x0 = pad + r * (h + pad), pad + c * (w + pad)
            grid[:, y:y + h, x0:x0 + w] = t[r]
    return grid


def save_png(image: torch.Tensor, path: "str | Path") -> Path:
    """Write a ``[3, H, W]`` tensor in [0, 1] as PNG (atomically)."""
    arr = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
