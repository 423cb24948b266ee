"""The demo's translation grids: what the generator does to places it never saw."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dsa_plugin.core.images import load_image01


def translation_grid(generator: str, folder: Path, image_size: int, clahe_grid: int, device: str, path: Path) -> Path:
    """One row per place of a labels.csv folder: day | G(day) | CLAHE(G(day)) | a real night of the
    place, at 1:1 pixels (``image_size`` longer side), written as PNG to ``path``."""
    from dsa_plugin.night.translator import NightTranslator
    from dsa_plugin.transforms import clahe

    with open(folder / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    translator = NightTranslator.from_checkpoint(generator, device=device)
    lines = []
    for place in sorted({r["place_id"] for r in rows}):
        day = next((r for r in rows if r["place_id"] == place and r["domain"] == "day"), None)
        night = next((r for r in rows if r["place_id"] == place and r["domain"] == "night"), None)
        if day is None or night is None:
            continue
        x = load_image01(folder / day["file"], image_size).unsqueeze(0)
        fake = translator.translate(x.to(device)).cpu()[..., : x.shape[-2], : x.shape[-1]]
        real = load_image01(folder / night["file"], image_size).unsqueeze(0)
        real = torch.nn.functional.interpolate(real, size=x.shape[-2:], mode="bilinear", align_corners=False)
        lines.append(torch.cat([x, fake, clahe(fake.clamp(0, 1), grid_size=clahe_grid), real], dim=-1)[0])
    width = max(line.shape[-1] for line in lines)
    lines = [torch.nn.functional.pad(line, (0, width - line.shape[-1])) for line in lines]
    grid = torch.cat(lines, dim=-2).clamp(0, 1).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255 + 0.5).astype(np.uint8)).save(path)
    return path
