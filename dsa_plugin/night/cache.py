"""The night cache's on-disk format and its reader: precomputed night versions of the selected anchors.

This module defines the format (manifest fields, file encoding) and reads it (:class:`NightCache`);
the writer, :func:`dsa_plugin.night.build.build_night_cache`, uses its definitions, so the two
agree on every field.

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

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dsa_plugin.core.files import atomic_write

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
    """The manifest's CLAHE entry: ``None`` (no CLAHE) or ``{"clip_limit": c, "grid_size": [gh, gw]}``.

    Example:
        >>> clahe_settings(), clahe_settings(None)
        ({'clip_limit': 1.0, 'grid_size': [8, 8]}, None)
    """
    if clip_limit is None:
        return None
    if isinstance(clip_limit, bool) or not isinstance(clip_limit, (int, float)) or not math.isfinite(clip_limit) \
            or clip_limit <= 0:
        raise ValueError(f"CLAHE clip limit (--clahe) must be a positive finite number, got {clip_limit!r}")
    grid = list(grid_size)
    if len(grid) != 2 or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid):
        raise ValueError(f"CLAHE grid size must be two positive integers, got {grid_size!r}")
    return {"clip_limit": float(clip_limit), "grid_size": grid}


def normalise_clahe(value: Any) -> dict[str, Any] | None:
    """normalise_clahe.

    Example:
        >>> normalise_clahe(True), normalise_clahe(False)
        ({'clip_limit': 1.0, 'grid_size': [8, 8]}, None)
    """
    if value is None or value is False:
        return None
    if value is True:
        return clahe_settings()
    if isinstance(value, dict):
        return clahe_settings(value.get("clip_limit", 1.0), value.get("grid_size", (8, 8)))
    raise ValueError(f"clahe must be None, True or a dict with clip_limit/grid_size, got {value!r}")


def normalise_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Canonical JSON-comparable values (0.25 == 0.25, [8, 8] == (8, 8), clahe=True == default dict)."""
    out = dict(values)
    if "ratio" in out:
        out["ratio"] = float(out["ratio"])
    if "image_size" in out and out["image_size"] is not None:
        out["image_size"] = int(out["image_size"])
    if "clahe" in out:
        out["clahe"] = normalise_clahe(out["clahe"])
    return out


def entry_file(name: str, fmt: str) -> str:
    """Relative path of an image's night file: ``<name[-2:]>/<name>.<fmt>`` (spreads 100k files over 256 dirs).

    Example:
        >>> entry_file("015bb8aa57c3fbebc41daca6a093f639", "png")
        '39/015bb8aa57c3fbebc41daca6a093f639.png'
    """
    return f"{name[-2:]}/{name}.{fmt}"


def quantise_night(x01: Tensor) -> Tensor:
    """``x01`` clamped to [0, 1] and snapped to the 1/16384 grid the cache stores (float32, same device).

    A no-op for CLAHE, which reads RGB only through ``round(x * 16384)``; see the module docstring.

    Example:
        >>> import torch
        >>> quantise_night(torch.tensor([-0.5, 0.25, 0.3, 2.0])).mul(16384).tolist()
        [0.0, 4096.0, 4915.0, 16384.0]
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
# the manifest


def read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise NightCacheError(f"unreadable night-cache manifest {path}: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("kind") != CACHE_KIND:
        raise NightCacheError(f"{path} is not a night-cache manifest (expected kind '{CACHE_KIND}')")
    _check_entries(path, manifest)
    return manifest


def _check_entries(path: Path, manifest: dict[str, Any]) -> None:
    """Every entry must be the file :func:`entry_file` names inside the cache: a hand-edited
    ``../../etc/hostname`` would otherwise be read by ``load()`` and deleted by ``--overwrite``."""
    fmt, entries = manifest.get("format"), manifest.get("entries")
    if fmt not in ("png", "pt"):
        raise NightCacheError(f"{path}: format must be 'png' or 'pt', got {fmt!r}")
    if not isinstance(entries, dict):
        raise NightCacheError(f"{path}: entries must be a mapping of image name to file, got {type(entries).__name__}")
    for name, rel in entries.items():
        safe_name = name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name
        if not (safe_name and rel == entry_file(name, fmt)):
            raise NightCacheError(f"{path}: entry {name!r} -> {rel!r} is not a file of this cache "
                                  f"(expected {entry_file(name, fmt)!r} for a plain image name)")


def input_stamp(path: str | os.PathLike) -> list[int]:
    """``[size, mtime_ns]`` of an input image: recorded in the manifest to notice a changed input."""
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def changed_inputs(recorded: Any, current: dict[str, list[int]]) -> list[str]:
    recorded = recorded if isinstance(recorded, dict) else {}
    return [name for name, stamp in current.items() if name in recorded and list(recorded[name]) != stamp]


def settings_differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """settings_differences.

    Example:
        >>> found = {"ratio": 0.5, "clahe": {"clip_limit": 1, "grid_size": [8, 8]}}
        >>> settings_differences({"ratio": 0.25, "clahe": True}, found)
        ['ratio: expected 0.25, found 0.5']
    """
    expected, found = normalise_settings(expected), normalise_settings(found)
    return [
        f"{key}: expected {expected[key]!r}, found {found.get(key)!r}"
        for key in expected
        if expected[key] != found.get(key)
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
        manifest = read_manifest(root)
        if manifest is None:
            raise StaleCacheError(f"no night cache at {root} (missing {MANIFEST}); build one with `dsa translate`")
        if manifest.get("version") != CACHE_VERSION:
            raise StaleCacheError(
                f"night cache {root} has manifest version {manifest.get('version')!r}; this dsa_plugin reads "
                f"version {CACHE_VERSION}: rebuild it with `dsa translate --overwrite`"
            )
        diff = settings_differences(expected, manifest)
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
        changed = changed_inputs(recorded, current)
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
