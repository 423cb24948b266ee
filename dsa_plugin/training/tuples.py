"""The synthetic-night tuple loader: cirtorch's ``TuplesDataset`` contract with Dark Side Augmentation.

Per epoch, :meth:`NightTuplesDataset.create_epoch_tuples` picks anchors (uniformly at random as
cirtorch, or by diverse anchor mining), extracts their descriptors with the selected anchors
turned into synthetic night (the md5 rule, docs/reference.md §md5-selection), mines ``nnum`` hard negatives
per anchor from a random pool, and stores ``qidxs``/``pidxs``/``nidxs``. ``__getitem__`` returns
cirtorch's ``([anchor, positive, n1..nN], target)`` with the anchor as night when selected and
CLAHE on every image. Works with cirtorch's ``collate_tuples`` and with HOW's training loop.
The per-epoch half (mining) is :class:`dsa_plugin.training.epoch.EpochMining`; this module builds
the dataset and serves the tuples.

Differences from cirtorch that do not change results: descriptors are extracted in batches of
equal-size images (cirtorch: one at a time), on the network's device (no ``.cuda()``), and all
sampling uses a private ``torch.Generator`` seeded with ``seed + epoch`` (the toolkits reseed the
global RNG every epoch). With diverse anchors, the anchor descriptors from the anchor pool are
reused for negative mining instead of being extracted a second time, and so are the pool's day
descriptors for negative-pool images that were in the anchor pool (same images, same night rule,
eval mode: the same descriptors, up to float rounding of a different batch).

Example:
    >>> ds = NightTuplesDataset("retrieval-SfM-120k", "train", imsize=362, nnum=5, qsize=2000,
    ...                         poolsize=22000, data_root="data",
    ...                         config=DSAConfig(generator="hedngan.pth", diverse_anchors=True, clahe=True))
    ...                                                                    # doctest: +SKIP
    >>> avg_neg_distance = ds.create_epoch_tuples(net)                     # doctest: +SKIP
    >>> images, target = ds[0]                                             # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from dsa_plugin.core.batching import batches_by_size
from dsa_plugin.core.config import DSAConfig
from dsa_plugin.core.images import load_image01, tensor01_to_pil
from dsa_plugin.data.sfm import db_paths, load_sfm_db
from dsa_plugin.mining import AnchorSampler, DiverseAnchorSampler, RandomAnchorSampler
from dsa_plugin.night.selection import is_night
from dsa_plugin.night.source import night_source_from_config
from dsa_plugin.training.epoch import EpochMining
from dsa_plugin.training.labels import ANCHOR, NEGATIVE, POSITIVE
from dsa_plugin.transforms import (
    IMAGENET_MEAN_STD,
    check_mean_std,
    clahe,
    compose_steps,
    find_normalize,
    normalize,
)

__all__ = ["NightTuplesDataset"]


# --------------------------------------------------------------------------------------------
# image helpers


def _plain_normalize(transform) -> tuple[bool, Any]:
    """(is ``transform`` just ToTensor [+ Normalize], its mean/std or None)."""
    if transform is None:
        return True, None
    try:
        from torchvision import transforms as T
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return False, None
    steps = compose_steps(transform)
    if not steps or not isinstance(steps[0], T.ToTensor):
        return False, None
    if len(steps) == 1:
        return True, ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    if len(steps) == 2 and isinstance(steps[1], T.Normalize) and not getattr(steps[1], "inplace", False):
        return True, tuple(find_normalize(transform))
    return False, None


def _check_missing(images: Sequence[str], where: str) -> None:
    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        shown = "\n  ".join(missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{len(missing)} of {len(images)} images of {where} are missing:\n  {shown}{more}")


class NightTuplesDataset(EpochMining, Dataset):
    """cirtorch's ``TuplesDataset`` contract with night anchors, CLAHE and diverse anchors.

    The first arguments are cirtorch's. This class is a plain ``torch.utils.data.Dataset`` and
    imports no toolkit; ``dsa_plugin.integrations.cirtorch.tuples.NightTuplesDataset`` also
    subclasses cirtorch's ``TuplesDataset`` (``isinstance`` holds) and defaults ``data_root`` to
    cirtorch's ``get_data_root()``: the cirtorch and HOW integrations build that one.

    Args:
        name: db name, ``<data_root>/train/<name>/<name>.pkl`` (any name; ``retrieval-SfM-120k``).
        mode: split, ``'train'`` or ``'val'``.
        imsize: longer image side after PIL ``thumbnail`` (LANCZOS, only shrinks); ``None`` keeps it.
        nnum: negatives per tuple; qsize: tuples per epoch (clamped to the number of pairs, with a
            warning); poolsize: random negative pool (clamped to the number of images).
        transform: cirtorch's PIL -> tensor transform. ``None`` or ``Compose([ToTensor(), Normalize()])``
            takes the exact float path (night, CLAHE and normalisation on tensors); any other transform
            gets the night/CLAHE image as a uint8 PIL image.
        loader: ``path -> PIL`` (default: RGB via PIL).
        config: the DSA settings (night generator/cache and ratio/label, diverse anchors, CLAHE, device).
        mean_std: ``((r, g, b), (r, g, b))`` normalisation; default: the transform's ``Normalize``,
            else ImageNet's.
        data_root / pkl_path / ims_root: where the db is (``pkl_path`` wins; ``ims_root`` defaults to
            ``ims/`` beside the pkl; ``data_root`` defaults to ``$DSA_DATA_ROOT``, then to
            :meth:`_toolkit_data_root`).
        seed: seed of the private generator (epoch e uses ``seed + e``); ``None`` draws one from the
            global RNG once, so the toolkit's ``--seed`` still decides.
        batch_size: images per forward pass in mining (equal sizes only; 1 = cirtorch's way).
        num_workers: DataLoader workers that decode images for mining.
        night_source: object with ``night(name, x01) -> x01`` to use instead of building one from
            ``config`` (``NightSource``, or a stand-in in tests).
        sampler: the anchor sampler; default from ``config`` (diverse or random).
        reuse_anchor_descriptors: with diverse anchors, reuse the pool descriptors of the chosen
            anchors for negative mining, and of the pool's day images for the negative pool,
            instead of extracting them again.
        check_files: fail at construction, listing the first missing image files.
        progress: tqdm bars during mining.

    Attributes after ``create_epoch_tuples``: ``qidxs``, ``pidxs``, ``nidxs`` (as cirtorch),
    ``night_anchor_indices`` (image indices of this epoch's anchors that are night),
    ``stats`` (counts and timings), ``night_served`` (night anchors returned by ``__getitem__``
    in this process).
    """

    def __init__(
        self,
        name: str = "retrieval-SfM-120k",
        mode: str = "train",
        imsize: int | None = None,
        nnum: int = 5,
        qsize: int = 2000,
        poolsize: int = 20000,
        transform: Callable | None = None,
        loader: Callable | None = None,
        *,
        config: DSAConfig | None = None,
        mean_std: Sequence[Sequence[float]] | None = None,
        data_root: str | os.PathLike | None = None,
        pkl_path: str | os.PathLike | None = None,
        ims_root: str | os.PathLike | None = None,
        seed: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        night_source: Any = None,
        sampler: AnchorSampler | None = None,
        reuse_anchor_descriptors: bool = True,
        check_files: bool = True,
        progress: bool = True,
    ) -> None:
        if mode not in ("train", "val"):
            raise ValueError(f"mode must be 'train' or 'val', got {mode!r}")
        if nnum < 0 or qsize < 1 or poolsize < 0 or batch_size < 1:
            raise ValueError(
                f"need nnum >= 0, qsize >= 1, poolsize >= 0, batch_size >= 1; got {nnum}, {qsize}, {poolsize}, "
                f"{batch_size}"
            )
        if config is not None and not isinstance(config, DSAConfig):
            raise TypeError(f"config must be a DSAConfig, got {type(config).__name__}")
        self.config = config if config is not None else DSAConfig()
        pkl_path, ims_root = self._locate(name, data_root, pkl_path, ims_root)
        db = load_sfm_db(pkl_path, mode, ims_root)
        where = f"{pkl_path} [{mode}]"
        if not db.qidxs:
            raise ValueError(f"{where} has no (query, positive) pairs")
        n_clusters = len(set(db.clusters))
        if nnum > 0 and n_clusters < nnum + 1:
            raise ValueError(
                f"{where} has {n_clusters} cluster(s), but mining nnum={nnum} negatives needs at least nnum + 1 = "
                f"{nnum + 1} (the anchor's own cluster is excluded, at most one negative per cluster); lower nnum"
            )
        if check_files:
            _check_missing(db.images, where)

        # cirtorch's attributes (its __repr__ and user code read them).
        self.name, self.mode, self.imsize = name, mode, imsize
        self.images, self.clusters = db.images, db.clusters
        self.qpool, self.ppool = db.qidxs, db.pidxs
        self.names = db.names
        self.pkl_path, self.ims_root = Path(pkl_path), Path(ims_root) if ims_root else Path(pkl_path).parent / "ims"
        self.nnum = nnum
        if qsize > len(self.qpool):
            warnings.warn(
                f"qsize={qsize} is larger than the {len(self.qpool)} pairs of {where}; using {len(self.qpool)}",
                stacklevel=2,
            )
        self.qsize = min(qsize, len(self.qpool))
        self.poolsize = min(poolsize, len(self.images))
        self.qidxs: list[int] | None = None
        self.pidxs: list[int] | None = None
        self.nidxs: list[list[int]] | None = None
        self.transform, self.loader = transform, loader
        self.print_freq = 100

        self._plain, found = _plain_normalize(transform)
        self.mean_std = tuple(
            tuple(
                check_mean_std(
                    mean_std or found or IMAGENET_MEAN_STD,
                    "the tuple loader's mean/std (mean_std or the transform's Normalize)",
                )
            )
        )
        self.qpool_size = self._qpool_size()
        self.sampler = sampler if sampler is not None else self._default_sampler()
        self.seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else int(seed)
        self.epoch = 0
        self.batch_size, self.num_workers = batch_size, num_workers
        self.reuse_anchor_descriptors = reuse_anchor_descriptors
        self.progress = progress
        self._night_source = night_source
        self.night_enabled = (
            night_source is not None or self.config.generator is not None or self.config.night_cache is not None
        )
        self.night_anchor_indices: list[int] = []
        self.night_served = 0
        self.stats: dict[str, Any] = {}
        self._batch_safe: dict[int, bool] = {}
        self._last_reused = 0

    # ---------------------------------------------------------------- construction helpers

    @staticmethod
    def _toolkit_data_root() -> str | None:
        """The toolkit's data root when neither ``data_root`` nor ``$DSA_DATA_ROOT`` is given.

        None here (the core imports no toolkit); the cirtorch integration's subclass answers
        cirtorch's ``get_data_root()``.
        """
        return None

    def _locate(self, name, data_root, pkl_path, ims_root) -> tuple[Path, Path | None]:
        if pkl_path is not None:
            return Path(pkl_path), Path(ims_root) if ims_root is not None else None
        if data_root is None:
            data_root = os.environ.get("DSA_DATA_ROOT")
        if data_root is None:
            data_root = self._toolkit_data_root()
        if data_root is None:
            raise ValueError(
                "no training db location: pass data_root=<root holding train/<name>/<name>.pkl> or pkl_path=, "
                "or set DSA_DATA_ROOT (the cirtorch integration's dataset uses cirtorch's get_data_root())"
            )
        pkl, ims = db_paths(data_root, name)
        return pkl, Path(ims_root) if ims_root is not None else ims

    def _qpool_size(self) -> int:
        size = min(self.config.qpool_size, len(self.qpool))
        if self.config.diverse_anchors and size < self.qsize:
            warnings.warn(f"qpool_size={self.config.qpool_size} is smaller than qsize={self.qsize}; "
                          f"mining anchors from {self.qsize} pairs", stacklevel=3)
            size = self.qsize
        return size

    def _default_sampler(self) -> AnchorSampler:
        if self.config.diverse_anchors:
            return DiverseAnchorSampler(self.config.similar_exclude, self.config.similar_include)
        return RandomAnchorSampler()

    # ---------------------------------------------------------------- images

    def _is_night(self, index: int, label: str) -> bool:
        if not self.night_enabled:
            return False
        return is_night(self.names[index], label, self.config.night_ratio, self.config.night_label)

    def night_source(self, device: torch.device | str | None = None):
        """The ``NightSource`` (built from ``config`` on first use), or ``None`` when night is off."""
        if self._night_source is None and self.night_enabled:
            device = device if device is not None else (self.config.device or "cpu")
            inputs = (
                {
                    n: p
                    for i, (n, p) in enumerate(zip(self.names, self.images))
                    if self._is_night(i, self.config.night_label)
                }
                if self.config.night_cache is not None
                else None
            )
            self._night_source = night_source_from_config(self.config, device, image_size=self.imsize, inputs=inputs)
        return self._night_source

    def _night(self, index: int, x01: Tensor, device=None) -> Tensor:
        out = self.night_source(device).night(self.names[index], x01)
        return out.to(x01.device)

    def _clahe(self, x: Tensor) -> Tensor:
        return clahe(x, grid_size=self.config.clahe_grid)

    def _finish(self, x01: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> network input (CLAHE, then mean/std), on x01's device."""
        if self.config.clahe:
            x01 = self._clahe(x01)
        return normalize(x01, self.mean_std)

    def _custom(self, x01: Tensor) -> Tensor:
        """Non-plain transform: the (night, CLAHE) image as uint8 PIL through ``self.transform``."""
        if self.config.clahe:
            x01 = self._clahe(x01[None])[0]
        return self.transform(tensor01_to_pil(x01))

    def _image01(self, index: int, label: str) -> Tensor:
        """One image of a tuple in [0, 1], 3 x H x W, night when the rule selects it (CPU)."""
        x01 = load_image01(self.images[index], self.imsize, loader=self.loader)
        if self._is_night(index, label):
            x01 = self._night(index, x01)
            self.night_served += 1
        return x01

    def _image(self, index: int, label: str) -> Tensor:
        """One image of a tuple as 1 x 3 x H x W network input (CPU)."""
        x01 = self._image01(index, label)
        if not self._plain:
            return self._custom(x01).unsqueeze(0)
        return self._finish(x01[None])

    def _tuple_images(self, items: list[tuple[int, str]]) -> list[Tensor]:
        """The images of one tuple as 1 x 3 x H x W network inputs.

        Plain path: equal-size images go through CLAHE and normalisation in one call (CLAHE works
        per image, so the result is the same as one call per image; on CPU the per-call cost of
        a small image is a large part of its CLAHE time).
        """
        if not self._plain:
            return [self._image(index, label) for index, label in items]
        images = [self._image01(index, label) for index, label in items]
        out: list[Tensor | None] = [None] * len(images)
        for members, group in batches_by_size(enumerate(images)):
            done = self._finish(torch.stack(group))
            for k, i in enumerate(members):
                out[i] = done[k : k + 1]
        return out  # type: ignore[return-value]

    # ---------------------------------------------------------------- cirtorch's contract

    def __len__(self) -> int:
        return self.qsize

    def __getitem__(self, index: int) -> tuple[list[Tensor], Tensor]:
        if self.qidxs is None or self.nidxs is None:
            raise RuntimeError("no tuples yet: call dataset.create_epoch_tuples(net) before iterating")
        if not 0 <= index < len(self.qidxs):
            raise IndexError(f"tuple index {index} out of range 0..{len(self.qidxs) - 1}")
        items = [(self.qidxs[index], ANCHOR), (self.pidxs[index], POSITIVE)]
        items += [(n, NEGATIVE) for n in self.nidxs[index]]
        output = self._tuple_images(items)
        target = torch.Tensor([-1, 1] + [0] * len(self.nidxs[index]))
        return output, target

    def __repr__(self) -> str:
        lines = [
            type(self).__name__,
            f"    Name and mode: {self.name} {self.mode}",
            f"    Training db: {self.pkl_path}",
            f"    Number of images: {len(self.images)}",
            f"    Number of training tuples: {len(self.qpool)}",
            f"    Number of negatives per tuple: {self.nnum}",
            f"    Number of tuples processed in an epoch: {self.qsize}",
            f"    Pool size for negative remining: {self.poolsize}",
            f"    Anchor sampler: {self.sampler!r}"
            + (f" over {self.qpool_size} pairs" if self.sampler.needs_descriptors else ""),
            "    Night anchors: "
            + (
                f"ratio {self.config.night_ratio:g} of {self.config.night_label!r} labels"
                if self.night_enabled
                else "off"
            ),
            f"    CLAHE: {'on' if self.config.clahe else 'off'}; mean/std: {self.mean_std}",
            f"    Transforms (if any): {self.transform!r}",
        ]
        return "\n".join(lines) + "\n"

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``create_epoch_tuples`` use ``seed + epoch`` (e.g. when resuming)."""
        self.epoch = int(epoch)
