"""The oracle arm's night cache: real night photos of the same view (scenes) or place (webcams)
in place of the generator's output, stored in the night-cache format the tuple loader reads.

It separates what the method can give (perfect nights) from what the generator gives: the gap
between the ``oracle`` and ``dsa`` arms is the generator's, not the method's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dsa_plugin.core.config import DSAConfig
from dsa_plugin.demo.data import DemoData


def _key(img: Tensor) -> str:
    return hashlib.sha256(img.contiguous().numpy().tobytes()).hexdigest()


class RealNights:
    """A stand-in for ``NightTranslator`` whose "translation" of a training day image is the real
    night photo paired with it, at the generator's output size (``4·ceil(H/4) × 4·ceil(W/4)``).

    The night cache hands a translator decoded images, not paths: the pairs are looked up by a
    hash of the decoded day image (loaded exactly as the cache loads it). The cache then records
    the day images as its inputs, like a generator's cache, so the tuple loader's staleness
    checks apply unchanged.
    """

    amp = False

    def __init__(self, pairs: dict[str, str], image_size: int) -> None:
        from dsa_plugin.core.images import load_image01

        self.fingerprint = "real-nights:" + hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()
        self.image_size = image_size
        self.nights = {_key(load_image01(day, image_size)): night for day, night in pairs.items()}

    def translate_many(self, images: Sequence[Tensor], batch_size: int = 8) -> list[Tensor]:
        from dsa_plugin.core.images import load_image01
        from dsa_plugin.night.translator import output_size

        out = []
        for img in images:
            night = load_image01(self.nights[_key(img)], self.image_size)
            size = output_size(*img.shape[-2:])
            out.append(torch.nn.functional.interpolate(night[None], size=size, mode="bilinear", antialias=True,
                                                       align_corners=False)[0].clamp(0, 1))
        return out


def build_oracle_cache(out: Path, data: DemoData, image_size: int) -> dict[str, Any]:
    """Write the oracle cache for the md5-selected training anchors; ``complete`` is False (and
    nothing is written) when a selected anchor has no real night of its place."""
    from dsa_plugin.data.lists import anchor_images_from_db
    from dsa_plugin.night import image_name, select_night
    from dsa_plugin.night.build import build_night_cache

    pairs = json.loads(Path(data.oracle).read_text())
    anchors = anchor_images_from_db(data.db_pkl, splits=("train",))
    names = [image_name(p) for p in anchors]
    ratio = DSAConfig().night_ratio
    selected = [(name, str(Path(p).absolute())) for name, p, keep in
                zip(names, anchors, select_night(names, "anc", ratio)) if keep]
    missing = [path for _, path in selected if path not in pairs]
    if missing:
        return {"cache": None, "complete": False, "missing": len(missing), "selected": len(selected)}
    used = {path: pairs[path] for _, path in selected}
    cache = build_night_cache(out, list(used), RealNights(used, image_size), names=[n for n, _ in selected],
                              ratio=ratio, image_size=image_size, source=f"real nights of {data.oracle}",
                              progress=False, overwrite=True)  # the demo's own folder: redone when its inputs change
    return {"cache": str(out), "complete": cache is not None, "translated": len(used), "selected": len(selected)}
