"""The colours arm's night cache: each selected anchor re-graded to the night photos' colours.

The simplest night a generator has to beat: no network, only the per-channel quantile map
(:mod:`dsa_plugin.gan.quantile_match`) from the GAN's own day photos to its own night photos,
applied to the selected training anchors. The ``colours`` arm trains with these nights exactly as
``dsa`` trains with the GAN's (diverse anchors, CLAHE), so ``dsa`` − ``colours`` is what the
generator adds over a global colour grade.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dsa_plugin.core.config import DSAConfig
from dsa_plugin.demo.data import DemoData
from dsa_plugin.gan.quantile_match import QuantileMatch


class ColourNights:
    """A stand-in for ``NightTranslator``: ``match(image)``, edge-padded to the generator's output
    size (``4·ceil(H/4) × 4·ceil(W/4)``) so that the cache holds what a generator's would."""

    amp = False

    def __init__(self, match: QuantileMatch) -> None:
        self.match = match
        digest = hashlib.sha256(match.source.numpy().tobytes() + match.target.numpy().tobytes()).hexdigest()
        self.fingerprint = "night-colours:" + digest

    def translate_many(self, images: Sequence[Tensor], batch_size: int = 8) -> list[Tensor]:
        from dsa_plugin.night.translator import output_size

        out = []
        for img in images:
            h, w = output_size(*img.shape[-2:])
            y = self.match(img.float())[None]
            out.append(torch.nn.functional.pad(y, (0, w - img.shape[-1], 0, h - img.shape[-2]), mode="replicate")[0])
        return out


def colour_nights(data: DemoData, image_size: int) -> ColourNights:
    """The quantile map of the GAN's day photos onto its night photos, at the training image size."""
    from dsa_plugin.core.images import load_image01

    def photos(list_file: Path):
        return (load_image01(p, image_size) for p in Path(list_file).read_text().split())

    return ColourNights(QuantileMatch.fit(photos(data.gan_day), photos(data.gan_night)))


def build_colour_cache(out: Path, data: DemoData, image_size: int) -> dict[str, Any]:
    """Write the colours arm's night cache for the md5-selected training anchors."""
    from dsa_plugin.data.lists import anchor_images_from_db
    from dsa_plugin.night.build import build_night_cache

    images = anchor_images_from_db(data.db_pkl)
    cache = build_night_cache(out, images, colour_nights(data, image_size), ratio=DSAConfig().night_ratio,
                              image_size=image_size, source=f"night colours of {data.gan_night}", progress=False,
                              overwrite=True)  # the demo's own folder: redone when the image size changes
    return {"cache": str(out), "translated": len(cache) if cache is not None else 0, "candidates": len(images)}
