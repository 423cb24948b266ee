"""Building a night cache (``dsa translate``): translate the selected images and write the manifest.

Building is resumable: every file is written atomically (temp file + ``os.replace``), so a file
that exists is complete and is skipped on the next run. Under ``torchrun`` each rank translates
``selected[rank::world_size]`` and rank 0 writes the one manifest. The format is
:mod:`dsa_plugin.night.cache`'s.

Example:
    >>> import os, tempfile, torch
    >>> from PIL import Image
    >>> from dsa_plugin.models import ResnetGenerator
    >>> from dsa_plugin.night.translator import NightTranslator
    >>> root = tempfile.mkdtemp()
    >>> Image.new("RGB", (32, 24), (90, 120, 200)).save(os.path.join(root, "a.png"))
    >>> _ = torch.manual_seed(0)
    >>> cache = build_night_cache(os.path.join(root, "cache"), [os.path.join(root, "a.png")],
    ...                           NightTranslator(ResnetGenerator(ngf=4, n_blocks=1)), ratio=1.0, image_size=None,
    ...                           progress=False)
    >>> cache.names, tuple(cache.load("a").shape)
    (['a'], (3, 24, 32))
"""

from __future__ import annotations

import datetime
import os
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from torch import Tensor
from tqdm.auto import tqdm

from dsa_plugin.core.distributed import DistContext
from dsa_plugin.core.files import remove_stale_temps, write_json
from dsa_plugin.core.images import load_image01
from dsa_plugin.night.cache import (
    CACHE_KIND,
    CACHE_VERSION,
    FORMATS,
    MANIFEST,
    NightCache,
    NightCacheError,
    changed_inputs,
    entry_file,
    input_stamp,
    normalise_settings,
    read_manifest,
    save_night,
    settings_differences,
)
from dsa_plugin.night.selection import DEFAULT_PREFIX, DEFAULT_RATIO, image_name, select_night
from dsa_plugin.transforms import clahe as clahe_fn

__all__ = ["MIN_SIDE", "build_night_cache"]

#: Smallest side the ResNet generator accepts: its 7x7 reflection padding and the 3x3 padding of its
#: blocks at 1/4 resolution need a few pixels, or torch fails deep inside with a padding error.
MIN_SIDE = 8


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise NightCacheError(f"cannot write the night cache to {out_dir}: {err.strerror or err}") from err


def _selected(images: list[str], names: list[str], labels, ratio: float, prefix: str) -> dict[str, str]:
    """The selected ``name -> path`` pairs, in a fixed order every rank agrees on; all files exist."""
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
    return selected


def _existing(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> tuple[dict[str, Any] | None, bool]:
    """(the manifest already in ``out_dir`` or None, whether its files are of other settings)."""
    existing = read_manifest(out_dir)
    if existing is None and _night_files(out_dir) and not overwrite:
        # Without a manifest nothing says which generator or settings made these files: never adopt them.
        raise NightCacheError(f"{out_dir} holds night images but no {MANIFEST}; refusing to adopt files of unknown "
                              "settings; choose another directory or pass overwrite=True (--overwrite)")
    differences = settings_differences(settings, existing) if existing is not None else []
    stale = bool(differences) or (existing is None and overwrite)
    if stale and not overwrite:
        raise NightCacheError(
            f"{out_dir} already holds a night cache made with other settings ({'; '.join(differences)}); "
            "choose another directory or pass overwrite=True (--overwrite)"
        )
    return existing, stale


def _clean(out_dir: Path, selected: dict[str, str], fmt: str, existing, stale: bool, changed: list[str]) -> None:
    """Rank 0, before translating: drop files of other settings, stale temps and changed inputs' images."""
    if stale and existing is not None:
        _remove_entries(out_dir, existing)  # files of other settings must not be "resumed"
    for folder in {(out_dir / entry_file(name, fmt)).parent for name in selected}:
        remove_stale_temps(folder)  # left by a killed build
    if changed:
        warnings.warn(f"{len(changed)} input image(s) changed since {out_dir} was built (size or mtime differs), "
                      f"e.g. {selected[changed[0]]}; re-translating them", stacklevel=3)
        for name in changed:  # their night images show the old content: translate them again
            (out_dir / entry_file(name, fmt)).unlink(missing_ok=True)


def build_night_cache(
    out_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    translator,
    *,
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
) -> NightCache | None:
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
    settings = normalise_settings({
        "generator": translator.fingerprint, "ratio": ratio, "prefix": prefix, "image_size": image_size,
        "clahe": clahe, "format": fmt,
        # fp16/bf16 autocast changes the pixels: a resumed build must not mix the two
        "amp": bool(getattr(translator, "amp", False)),
    })
    selected = _selected(images, names, prefix if labels is None else labels, ratio, prefix)
    _check_writable(out_dir)
    existing, stale = _existing(out_dir, settings, overwrite)
    stamps = {name: input_stamp(path) for name, path in selected.items()}
    changed = [] if stale or existing is None else changed_inputs(existing.get("inputs"), stamps)
    manifest = {
        "kind": CACHE_KIND, "version": CACHE_VERSION, **settings, "source": source, "complete": False,
        "count": len(selected), "inputs": stamps,
        # listed before any file is written, so that a later --overwrite knows which files are its own
        "entries": {name: entry_file(name, fmt) for name in selected},
    }
    # A gloo group (context device "cpu") whatever device translates: it only carries barriers.
    # 2 h timeout: a barrier waits for the slowest rank's whole share of the translation.
    ctx = DistContext.from_env("cpu", timeout=datetime.timedelta(hours=2))
    rank, world = ctx.rank, ctx.world_size
    try:
        if rank == 0:
            _clean(out_dir, selected, fmt, existing, stale, changed)
        ctx.barrier()  # every rank has read the old manifest before rank 0 replaces it
        if rank == 0:
            write_json(out_dir / MANIFEST, manifest, indent=1, sort_keys=True, newline=False)
        _translate_into(out_dir, list(selected.items())[rank::world], translator, image_size=image_size,
                        clahe=settings["clahe"], fmt=fmt, batch_size=batch_size, workers=workers, progress=progress,
                        redo=stale and existing is None,
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


def _translate_into(out_dir, items, translator, *, image_size, clahe, fmt, batch_size, workers, progress, desc,
                    redo=False):
    """Translate ``items`` into ``out_dir``; files already there are kept (a resumed build) unless ``redo``."""
    todo = [(name, path) for name, path in items if redo or not (out_dir / entry_file(name, fmt)).is_file()]
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, unit="img", disable=not progress)
    chunk = max(batch_size * 4, 8)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending_writes = []
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            loaded = list(pool.map(lambda item: load_image01(item[1], image_size, min_side=MIN_SIDE), part))
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
    return [
        clahe_fn(img.unsqueeze(0), clip_limit=clahe["clip_limit"], grid_size=tuple(clahe["grid_size"]),
                 check_range=False)[0]
        for img in images
    ]


