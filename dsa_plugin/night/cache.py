"""The night cache: precomputed night versions of the selected anchors, with a manifest.

Why one module of ~570 lines: the writer (``build_night_cache``) and the reader
(``NightCache``) of one on-disk format must agree on every manifest field and file encoding.

Layout of a cache directory::

    <dir>/manifest.json          settings + entries + "complete" flag (written atomically)
    <dir>/<name[-2:]>/<name>.png 16-bit grey PNG of the R, G, B planes stacked (3H x W), values
                                 round(x * 16384) (or .pt: float32 3xHxW tensor of the same values)

Why 1/16384 and not 8 bits: the loader applies CLAHE to every night image, and CLAHE (OpenCV's
float RGB->Lab, docs/reference.md §clahe) reads its input only through ``round(x * 16384)``
(``transforms.lab._LAB_BASE``). Snapping the generator output to that grid is therefore a no-op for
CLAHE, so the online path (``NightSource``) snaps too and keeps the reference's float semantics
bit for bit, while the stored file holds exactly the snapped values: the network input is the
same bitwise whether the night image came from the cache or from the generator. An 8-bit PNG
moved CLAHE's L channel across truncation boundaries (up to ~25/255 after CLAHE).

The manifest records everything that changes the stored pixels: the generator fingerprint (sha256
of its weights), the selection ratio and label prefix, the image size the inputs were shrunk to,
the CLAHE settings applied after the generator (``None``: raw generator output) and the storage
format. ``NightCache.open`` compares them with the caller's settings and refuses a stale cache
(naming the field, expected vs found) or a partial one (a build that was killed or still runs).

Building is resumable: every file is written atomically (temp file + ``os.replace``), so a file
that exists is complete and is skipped on the next run. Under ``torchrun`` each rank translates
``selected[rank::world_size]`` and rank 0 writes the one manifest.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dsa_plugin.core.distributed import DistContext
from dsa_plugin.core.files import atomic_write, remove_stale_temps, write_json
from dsa_plugin.core.images import load_image01 as _load01
from dsa_plugin.night.selection import DEFAULT_PREFIX, DEFAULT_RATIO, image_name, select_night

MANIFEST = "manifest.json"
CACHE_KIND = "dsa-night-cache"
CACHE_VERSION = 2  # 2: 1/16384 storage grid (version 1 stored 8-bit RGB), input stamps
#: The storage grid of night images: CLAHE's own input quantisation (``transforms.lab._LAB_BASE``).
NIGHT_LEVELS = 1 << 14
FORMATS = ("png", "pt")
#: Manifest fields that decide the stored pixels; ``NightCache.open`` compares these.
SETTINGS = ("generator", "ratio", "prefix", "image_size", "clahe", "format", "amp")


class NightCacheError(RuntimeError):
    """The cache cannot be built or read: missing image, unwritable directory, bad manifest."""


class StaleCacheError(NightCacheError):
    """The cache on disk does not match the requested settings, or is partial."""


def clahe_settings(clip_limit: float | None = 1.0, grid_size: Sequence[int] = (8, 8)) -> dict[str, Any] | None:
    """The manifest's CLAHE entry: ``None`` (no CLAHE) or ``{"clip_limit": c, "grid_size": [gh, gw]}``."""
    if clip_limit is None:
        return None
    return {"clip_limit": float(clip_limit), "grid_size": [int(g) for g in grid_size]}


def _normalise_clahe(value: Any) -> dict[str, Any] | None:
    if value is None or value is False:
        return None
    if value is True:
        return clahe_settings()
    if isinstance(value, dict):
        return clahe_settings(value.get("clip_limit", 1.0), value.get("grid_size", (8, 8)))
    raise ValueError(f"clahe must be None, True or a dict with clip_limit/grid_size, got {value!r}")


def _normalise_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Canonical JSON-comparable values (0.25 == 0.25, [8, 8] == (8, 8), clahe=True == default dict)."""
    out = dict(values)
    if "ratio" in out:
        out["ratio"] = float(out["ratio"])
    if "image_size" in out and out["image_size"] is not None:
        out["image_size"] = int(out["image_size"])
    if "clahe" in out:
        out["clahe"] = _normalise_clahe(out["clahe"])
    return out


def entry_file(name: str, fmt: str) -> str:
    """Relative path of an image's night file: ``<name[-2:]>/<name>.<fmt>`` (spreads 100k files over 256 dirs)."""
    return f"{name[-2:]}/{name}.{fmt}"


def quantise_night(x01: Tensor) -> Tensor:
    """``x01`` clamped to [0, 1] and snapped to the 1/16384 grid the cache stores (float32, same device).

    A no-op for CLAHE, which reads RGB only through ``round(x * 16384)``; see the module docstring.
    """
    return x01.detach().to(torch.float32).clamp(0.0, 1.0).mul(NIGHT_LEVELS).round_().div_(NIGHT_LEVELS)


def save_night(path: Path, night01: Tensor, fmt: str) -> None:
    """Store one ``3 x H x W`` [0, 1] image exactly as ``quantise_night`` gives it: PNG or float32 tensor."""
    night01 = quantise_night(night01.detach().to("cpu"))
    if fmt == "png":
        from PIL import Image

        if night01.dim() != 3 or night01.shape[0] != 3:
            raise ValueError(f"expected a [3, H, W] night image, got {tuple(night01.shape)}")
        codes = night01.mul(NIGHT_LEVELS).round_().to(torch.int32).reshape(-1, night01.shape[-1]).numpy()
        img = Image.fromarray(codes.astype("uint16"))  # 16-bit grey, planes R, G, B stacked: 3H x W

        def write(f):
            img.save(f, format="PNG", compress_level=3)

    elif fmt == "pt":

        def write(f):
            torch.save(night01.contiguous().clone(), f)

    else:
        raise ValueError(f"unknown cache format {fmt!r}; allowed: {', '.join(FORMATS)}")
    atomic_write(path, write)


def load_night(path: str | os.PathLike, fmt: str) -> Tensor:
    """Read a stored night image back as a float32 ``3 x H x W`` tensor in [0, 1]."""
    if fmt == "png":
        from PIL import Image

        with Image.open(path) as img:
            if img.mode not in ("I;16", "I;16B", "I") or img.size[1] % 3:
                raise NightCacheError(f"{path}: not a night-cache image (expected a 16-bit grey PNG of 3 stacked "
                                      f"planes, got mode {img.mode} {img.size[0]}x{img.size[1]}); rebuild the cache")
            import numpy as np

            codes = np.asarray(img).astype(np.int32)
        h = codes.shape[0] // 3
        return torch.from_numpy(codes).reshape(3, h, codes.shape[1]).float().div_(NIGHT_LEVELS)
    if fmt == "pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    raise ValueError(f"unknown cache format {fmt!r}; allowed: {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------
# image loading (cirtorch's loader: PIL RGB, thumbnail to the longer side <= image_size, LANCZOS)


#: Smallest side the ResNet generator accepts: its 7x7 reflection padding and the 3x3 padding of its
#: blocks at 1/4 resolution need a few pixels, or torch fails deep inside with a padding error.
MIN_SIDE = 8


def load_image01(path: str | os.PathLike, image_size: int | None) -> Tensor:
    """``3 x H x W`` float in [0, 1], loaded exactly as the training loader loads it
    (:func:`dsa_plugin.core.images.load_image01`), refusing images smaller than :data:`MIN_SIDE`."""
    x = _load01(path, image_size)
    if min(x.shape[-2:]) < MIN_SIDE:
        raise NightCacheError(f"{path}: {x.shape[-1]}x{x.shape[-2]} px"
                              f"{f' after shrinking to --image-size {image_size}' if image_size else ''}; "
                              f"the generator needs at least {MIN_SIDE} px on each side")
    return x


# ---------------------------------------------------------------------------------------------
# which images: a retrieval-SfM db's anchor-capable images, or a plain list


def anchor_images_from_db(
    pkl_path: str | os.PathLike, ims_root: str | os.PathLike | None = None, splits: Sequence[str] = ("train", "val")
) -> list[str]:
    """Paths of every image that can be an anchor: the query images (``qidxs``) of the given splits.

    Order is train first, then val, each in first-appearance order; duplicates are dropped.
    """
    from dsa_plugin.data import load_sfm_db

    seen: dict[str, None] = {}
    for split in splits:
        db = load_sfm_db(pkl_path, split, ims_root)
        for q in db.qidxs:
            seen.setdefault(db.images[q], None)
    return list(seen)


def read_image_list(list_path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[str]:
    """One image path per line (blank lines and ``#`` comments skipped); relative paths are taken
    from ``root`` (default: the list's own directory)."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise NightCacheError(f"image list not found: {list_path}")
    base = Path(root) if root is not None else list_path.parent
    out = []
    for line in list_path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(os.fspath(base / line))
    return out


# ---------------------------------------------------------------------------------------------
# building


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise NightCacheError(f"cannot write the night cache to {out_dir}: {err.strerror or err}") from err


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise NightCacheError(f"unreadable night-cache manifest {path}: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("kind") != CACHE_KIND:
        raise NightCacheError(f"{path} is not a night-cache manifest (expected kind '{CACHE_KIND}')")
    return manifest


def input_stamp(path: str | os.PathLike) -> list[int]:
    """``[size, mtime_ns]`` of an input image: recorded in the manifest to notice a changed input."""
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def _changed_inputs(recorded: Any, current: dict[str, list[int]]) -> list[str]:
    recorded = recorded if isinstance(recorded, dict) else {}
    return [name for name, stamp in current.items() if name in recorded and list(recorded[name]) != stamp]


def _differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    expected, found = _normalise_settings(expected), _normalise_settings(found)
    return [
        f"{key}: expected {expected[key]!r}, found {found.get(key)!r}"
        for key in expected
        if expected[key] != found.get(key)
    ]


def build_night_cache(
    out_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    translator,
    names: Sequence[str] | None = None,
    labels: str | Sequence[str] | None = None,
    ratio: float = DEFAULT_RATIO,
    prefix: str = DEFAULT_PREFIX,
    image_size: int | None = 362,
    clahe: dict[str, Any] | bool | None = None,
    fmt: str = "png",
    batch_size: int = 4,
    workers: int = 2,
    overwrite: bool = False,
    source: str | None = None,
    progress: bool = True,
) -> "NightCache | None":
    """Translate the selected ``images`` into ``out_dir`` and write the manifest.

    Args:
        out_dir: cache directory (created).
        images: image paths; ``names`` default to their basenames without extension (SfM cids).
        translator: a ``NightTranslator`` (its ``fingerprint`` goes into the manifest).
        labels: one label for all, or one per image; default ``prefix`` (every image anchor-capable),
            so only the md5 rule selects.
        ratio, prefix: the selection rule (``selection.is_night``).
        image_size: inputs are shrunk so that their longer side is <= this (``None``: full size),
            exactly as the training loader loads them.
        clahe: CLAHE applied after the generator before storing (``None``: raw generator output,
            what ``NightSource`` and the tuple loader expect; ``True``: clip 1.0, 8x8 tiles).
        fmt: ``"png"`` (16-bit, lossless for the 1/16384 grid) or ``"pt"`` (float32); both store
            ``quantise_night(output)``, what ``NightSource`` returns online.
        batch_size: images of equal size translated together.
        workers: threads that decode inputs and encode outputs while the generator runs.
        overwrite: rebuild over a cache made with other settings (otherwise refuse).
        source: free text recorded in the manifest (the db or list the images came from).

    Returns:
        The opened ``NightCache`` (on rank 0; ``None`` on the other ranks under torchrun).

    Raises:
        NightCacheError: unwritable ``out_dir``, missing input images (all named up front, before
            any work), duplicate names, or a cache with other settings already in ``out_dir``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown cache format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out_dir = Path(out_dir)
    images = [os.fspath(p) for p in images]
    names = [image_name(p) for p in images] if names is None else list(names)
    if len(names) != len(images):
        raise ValueError(f"build_night_cache got {len(images)} images but {len(names)} names")
    labels = prefix if labels is None else labels
    settings = _normalise_settings(
        {
            "generator": translator.fingerprint,
            "ratio": ratio,
            "prefix": prefix,
            "image_size": image_size,
            "clahe": clahe,
            "format": fmt,
            # fp16/bf16 autocast changes the pixels: a resumed build must not mix the two
            "amp": bool(getattr(translator, "amp", False)),
        }
    )

    # The selected (name, path) pairs, in a fixed order every rank agrees on.
    selected: dict[str, str] = {}
    for name, path, keep in zip(names, images, select_night(names, labels, ratio, prefix)):
        if not keep:
            continue
        if name in selected and selected[name] != path:
            raise NightCacheError(
                f"two images share the name {name!r} ({selected[name]} and {path}); "
                "night images are keyed by the basename without extension"
            )
        selected[name] = path
    missing = [p for p in selected.values() if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" ... and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise NightCacheError(f"{len(missing)} selected image(s) not found: {shown}")
    _check_writable(out_dir)
    existing = _read_manifest(out_dir)
    if existing is None and _night_files(out_dir) and not overwrite:
        # Without a manifest nothing says which generator or settings made these files: never adopt them.
        raise NightCacheError(f"{out_dir} holds night images but no {MANIFEST}; refusing to adopt files of unknown "
                              "settings; choose another directory or pass overwrite=True (--overwrite)")
    stale = (existing is not None and bool(_differences(settings, existing))) or (existing is None and overwrite)
    if stale and not overwrite:
        raise NightCacheError(
            f"{out_dir} already holds a night cache made with other settings "
            f"({'; '.join(_differences(settings, existing))}); choose another directory or pass overwrite=True (--overwrite)"
        )

    stamps = {name: input_stamp(path) for name, path in selected.items()}
    changed = [] if stale or existing is None else _changed_inputs(existing.get("inputs"), stamps)

    # A gloo group (context device "cpu") whatever device translates: it only carries barriers.
    # 2 h timeout: a barrier waits for the slowest rank's whole share of the translation.
    ctx = DistContext.from_env("cpu", timeout=datetime.timedelta(hours=2))
    rank, world = ctx.rank, ctx.world_size
    try:
        if rank == 0:
            if stale and existing is not None:
                _remove_entries(out_dir, existing)  # files of other settings must not be "resumed"
            for folder in {(out_dir / entry_file(name, fmt)).parent for name in selected}:
                remove_stale_temps(folder)  # left by a killed build
        if changed and rank == 0:
            import warnings

            warnings.warn(f"{len(changed)} input image(s) changed since {out_dir} was built (size or mtime differs), "
                          f"e.g. {selected[changed[0]]}; re-translating them", stacklevel=2)
            for name in changed:  # their night images show the old content: translate them again
                (out_dir / entry_file(name, fmt)).unlink(missing_ok=True)
        manifest = {
            "kind": CACHE_KIND,
            "version": CACHE_VERSION,
            **settings,
            "source": source,
            "complete": False,
            "count": len(selected),
            "inputs": stamps,
            # listed before any file is written, so that a later --overwrite knows which files are its own
            "entries": {name: entry_file(name, fmt) for name in selected},
        }
        ctx.barrier()  # every rank has read the old manifest before rank 0 replaces it
        if rank == 0:
            write_json(out_dir / MANIFEST, manifest, indent=1, sort_keys=True, newline=False)
        mine = list(selected.items())[rank::world]
        _translate_into(out_dir, mine, translator, image_size, settings["clahe"], fmt, batch_size, workers,
                        progress, redo=stale and existing is None,
                        desc=f"night cache (rank {rank}/{world})" if world > 1 else "night cache")
        ctx.barrier()  # all files are on disk
        if rank == 0:
            manifest["complete"] = True
            write_json(out_dir / MANIFEST, manifest, indent=1, sort_keys=True, newline=False)
        ctx.barrier()  # nobody returns before the manifest says complete
    finally:
        ctx.close()
    return NightCache.open(out_dir) if rank == 0 else None


def _night_files(out_dir: Path) -> list[Path]:
    """Stored night images in ``out_dir`` (``<2 chars>/<name>.png|.pt``)."""
    if not out_dir.is_dir():
        return []
    return [f for sub in out_dir.iterdir() if sub.is_dir() and len(sub.name) == 2
            for f in sub.iterdir() if f.suffix in (".png", ".pt")]


def _remove_entries(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Delete the night files an earlier build listed in its manifest, and nothing else."""
    entries = manifest.get("entries")
    for rel in entries.values() if isinstance(entries, dict) else ():
        path = (out_dir / str(rel)).resolve()
        if isinstance(rel, str) and path.parent.parent == out_dir.resolve() and path.suffix in (".png", ".pt"):
            path.unlink(missing_ok=True)


def _translate_into(out_dir, items, translator, image_size, clahe, fmt, batch_size, workers, progress, desc,
                    redo=False):
    """Translate ``items`` into ``out_dir``; files already there are kept (a resumed build) unless ``redo``."""
    from tqdm.auto import tqdm

    todo = [(name, path) for name, path in items if redo or not (out_dir / entry_file(name, fmt)).is_file()]
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, unit="img", disable=not progress)
    chunk = max(batch_size * 4, 8)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending_writes = []
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            loaded = list(pool.map(lambda item: load_image01(item[1], image_size), part))
            nights = translator.translate_many(loaded, batch_size=batch_size)
            if clahe is not None:
                nights = _apply_clahe(nights, clahe)
            for f in pending_writes:
                f.result()  # surface write errors early, keep memory bounded
            pending_writes = [
                pool.submit(save_night, out_dir / entry_file(name, fmt), night, fmt)
                for (name, _), night in zip(part, nights)
            ]
            bar.update(len(part))
        for f in pending_writes:
            f.result()
    bar.close()


def _apply_clahe(images: list[Tensor], clahe: dict[str, Any]) -> list[Tensor]:
    from dsa_plugin.transforms import clahe as clahe_fn

    return [
        clahe_fn(img.unsqueeze(0), clip_limit=clahe["clip_limit"], grid_size=tuple(clahe["grid_size"]), check_range=False)[0]
        for img in images
    ]


# ---------------------------------------------------------------------------------------------
# reading


class NightCache:
    """A validated, complete night cache; ``load(name)`` returns the stored night image.

    Example:
        >>> cache = NightCache.open("night-cache", generator=translator.fingerprint, ratio=0.25)  # doctest: +SKIP
        >>> cache.load("015bb8aa57c3fbebc41daca6a093f639").shape                                # doctest: +SKIP
        torch.Size([3, 272, 364])
    """

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self.entries: dict[str, str] = dict(manifest["entries"])
        self.format: str = manifest["format"]

    @classmethod
    def open(cls, root: str | os.PathLike, verify_files: bool = True, **expected: Any) -> "NightCache":
        """Open ``root`` after checking it is complete and that every given setting matches.

        ``expected`` may name any of ``generator`` (fingerprint), ``ratio``, ``prefix``,
        ``image_size``, ``clahe``, ``format``, ``amp``; settings not given are not checked.
        ``verify_files`` also checks that every listed file exists.

        Raises:
            StaleCacheError: no/partial manifest, a differing setting (named, expected vs found),
                or missing files.
        """
        unknown = sorted(set(expected) - set(SETTINGS))
        if unknown:
            raise TypeError(f"NightCache.open got unknown setting(s) {unknown}; valid: {list(SETTINGS)}")
        root = Path(root)
        manifest = _read_manifest(root)
        if manifest is None:
            raise StaleCacheError(f"no night cache at {root} (missing {MANIFEST}); build one with `dsa translate`")
        if manifest.get("version") != CACHE_VERSION:
            raise StaleCacheError(
                f"night cache {root} has manifest version {manifest.get('version')!r}; this dsa_plugin reads "
                f"version {CACHE_VERSION}: rebuild it with `dsa translate --overwrite`"
            )
        diff = _differences(expected, manifest)
        if diff:
            raise StaleCacheError(f"stale night cache {root}: " + "; ".join(diff) + "; rebuild it with `dsa translate`")
        if not manifest.get("complete"):
            raise StaleCacheError(
                f"partial night cache {root}: the build of {manifest.get('count', '?')} images did not finish "
                "(killed, or still running); rerun the same `dsa translate` command to complete it"
            )
        cache = cls(root, manifest)
        if verify_files:
            absent = [n for n, f in cache.entries.items() if not (root / f).is_file()]
            if absent:
                raise StaleCacheError(
                    f"night cache {root} lists {len(absent)} file(s) that are missing, e.g. "
                    f"{cache.entries[absent[0]]}; rebuild it with `dsa translate`"
                )
        return cache

    def check_inputs(self, paths: dict[str, str | os.PathLike]) -> None:
        """Refuse the cache when an input image changed since it was built.

        ``paths`` maps names to the image files the caller will translate; each one the cache holds
        must have the size and mtime recorded at build time.

        Raises:
            StaleCacheError: naming the first changed file and how many there are.
        """
        recorded = self.manifest.get("inputs") or {}
        current = {}
        for name, path in paths.items():
            if name in self.entries and name in recorded:
                try:
                    current[name] = input_stamp(path)
                except OSError:
                    continue  # a missing input is reported by whoever loads it
        changed = _changed_inputs(recorded, current)
        if changed:
            first = changed[0]
            raise StaleCacheError(
                f"stale night cache {self.root}: {len(changed)} input image(s) changed since it was built, e.g. "
                f"{os.fspath(paths[first])} (size, mtime_ns recorded {recorded[first]}, now {current[first]}); "
                "rerun the same `dsa translate` command to re-translate them")

    @property
    def settings(self) -> dict[str, Any]:
        return {k: self.manifest.get(k) for k in SETTINGS}

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, name: str) -> Path:
        try:
            return self.root / self.entries[name]
        except KeyError:
            raise KeyError(f"image {name!r} is not in the night cache {self.root} ({len(self)} images)") from None

    def load(self, name: str, device: str | torch.device | None = None) -> Tensor:
        """The night image of ``name``: float32 ``3 x H x W`` in [0, 1] (on ``device`` if given)."""
        path = self.path(name)
        try:
            x = load_night(path, self.format)
        except (OSError, RuntimeError) as err:
            raise StaleCacheError(f"cannot read {path} from the night cache: {err}") from err
        return x if device is None else x.to(device)

    def __repr__(self) -> str:
        s = self.settings
        return (f"NightCache({os.fspath(self.root)!r}, {len(self)} images, ratio={s['ratio']}, "
                f"prefix={s['prefix']!r}, image_size={s['image_size']}, format={s['format']!r})")
