"""Dark Side Augmentation inside cnnimageretrieval-pytorch (cirtorch): cirtorch's loop, our data.

This module lists (table below) and installs every name rebound in cirtorch's script; each
rebinding is a small factory next to that table. The command is :mod:`.cli`, the data-file checks
:mod:`.datafiles`; flags, YAML defaults, evaluation and the tuple subclass have their own modules.

Two ways in, one mechanism:

- ``dsa cirtorch-train <cirtorch train.py arguments> <--dsa-* flags> [--config FILE.yaml]``
  loads cirtorch's own ``cirtorch/examples/train.py`` as a fresh module, extends its
  module-level parser with the ``--dsa-*`` flags and runs its own ``main()``.
- ``patches/cirtorch-train.patch`` makes the upstream script call :func:`install` itself.

Either way :func:`dsa_session` rebinds a few names in the script's namespace -- the script
looks them up at call time, so its code stays untouched:

==================  ==========================================================================
``TuplesDataset``   a factory building :class:`dsa_plugin.training.tuples.NightTuplesDataset` (night
                    anchors, diverse anchors, CLAHE; as the cirtorch ``TuplesDataset`` subclass
                    of :mod:`~dsa_plugin.integrations.cirtorch.tuples`) for train and val;
                    cirtorch's own class when no DSA setting is on
``extract_vectors`` test-time descriptors with CLAHE added in front of the transform (--dsa-clahe)
``save_checkpoint`` adds a ``dsa`` entry (settings, export tag, loader statistics)
``torch``           with ``--resume`` only: ``torch.load`` refuses a checkpoint whose ``dsa``
                    entry records other DSA settings or another generator
``test``            skipped with --dsa-skip-test
``download_*``      replaced by existence checks with --dsa-no-download
``get_data_root``   --dsa-data-root (also in cirtorch's dataset and network modules)
==================  ==========================================================================

plus the runtime fixes of :mod:`dsa_plugin.integrations.compat` (Pillow, numpy 2, ``.cuda()``
as a no-op on CPU runs) and the DSA tag appended to cirtorch's export directory name.
Without any ``--dsa-*`` setting the run is cirtorch's own, tuple for tuple.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from dsa_plugin.core.config import DSAConfig
from dsa_plugin.core.files import to_plain
from dsa_plugin.integrations import compat
from dsa_plugin.integrations.cirtorch.args import check_resume, check_train_args, load_problem
from dsa_plugin.integrations.cirtorch.datafiles import check_data_files, fail, required_files
from dsa_plugin.integrations.cirtorch.flags import config_values, dsa_config_from_args

__all__ = ["DSARun", "dsa_session", "export_tag", "install", "resume_mismatch"]


def export_tag(args: argparse.Namespace) -> str:
    """Suffix of the export directory for the DSA settings in ``args`` ('' when DSA is off)."""
    return DSAConfig(**config_values(args)).tag(getattr(args, "dsa_generator_fingerprint", None))


class _TaggedSize(int):
    """``--image-size`` that formats as ``362<tag>`` under ``'{}'``.

    ``imsize`` is the last field of cirtorch's export directory name
    (``..._imsize{}``.format(args.image_size)), so the DSA tag lands exactly where a new
    cirtorch flag would; as a number it is still the plain image size.
    """

    tag: str

    def __new__(cls, value: int, tag: str) -> "_TaggedSize":
        obj = super().__new__(cls, value)
        obj.tag = tag
        return obj

    def __format__(self, spec: str) -> str:
        return int.__format__(self, spec) + (self.tag if spec == "" else "")


@dataclass
class DSARun:
    """What one session installed and observed; ``datasets`` are the tuple datasets it built."""

    config: DSAConfig
    args: argparse.Namespace
    cpu_only: bool
    datasets: list[Any] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    _stack: contextlib.ExitStack | None = None

    @property
    def generator_fingerprint(self) -> str | None:
        return getattr(self.args, "dsa_generator_fingerprint", None)

    @property
    def tag(self) -> str:
        return self.config.tag(self.generator_fingerprint)

    def stats(self) -> dict[str, Any]:
        """Plain-python statistics of the DSA tuple datasets (night images served, ...)."""
        out: dict[str, Any] = {}
        for ds in self.datasets:
            mode = getattr(ds, "mode", "?")
            out[mode] = to_plain(getattr(ds, "stats", {}))
        return out

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None




def _mean_std(transform: Any) -> tuple[list[float], list[float]]:
    """(mean, std) of the Normalize in cirtorch's Compose (ImageNet when there is none)."""
    from dsa_plugin.transforms import IMAGENET_MEAN_STD, find_normalize

    mean, std = find_normalize(transform) or IMAGENET_MEAN_STD
    return list(mean), list(std)


def _with_clahe(transform: Any, grid: int = 8) -> Any:
    """cirtorch's test transform with CLAHE first, on the float image as the reference does
    (:func:`dsa_plugin.transforms.with_clahe`)."""
    from dsa_plugin.transforms import with_clahe

    return with_clahe(transform, grid_size=grid)


def _tuple_factory(run: DSARun, upstream: type, data_root: str | None) -> Callable[..., Any]:
    """Stands in for cirtorch's ``TuplesDataset``: same call, our dataset when DSA is on."""

    def tuples_dataset(name: str, mode: str, imsize: int | None = None, nnum: int = 5, qsize: int = 2000,
                       poolsize: int = 20000, transform: Any = None, **kwargs: Any) -> Any:
        imsize = None if imsize is None else int(imsize)
        if not run.config.enabled:
            ds = upstream(name=name, mode=mode, imsize=imsize, nnum=nnum, qsize=qsize, poolsize=poolsize,
                          transform=compat.WithRuntimeFixes(transform) if transform is not None else None,
                          **kwargs)
        else:
            from dsa_plugin.integrations.cirtorch.tuples import NightTuplesDataset

            if data_root is not None:
                kwargs.setdefault("data_root", data_root)
            with warnings.catch_warnings():
                # cirtorch asks for qsize = poolsize = inf on the val split ("all of them"): no news.
                if math.isinf(qsize) or math.isinf(poolsize):
                    warnings.filterwarnings("ignore", message=r"qsize=inf")
                ds = NightTuplesDataset(name=name, mode=mode, imsize=imsize, nnum=nnum, qsize=qsize,
                                        poolsize=poolsize, transform=transform, config=run.config,
                                        mean_std=_mean_std(transform), seed=int(getattr(run.args, "dsa_seed", 0)),
                                        num_workers=int(getattr(run.args, "workers", 0)), **kwargs)
        run.datasets.append(ds)
        return ds

    tuples_dataset.__wrapped__ = upstream  # type: ignore[attr-defined]
    return tuples_dataset


def _extract_vectors_factory(original: Callable[..., Any], clahe: bool, grid: int = 8) -> Callable[..., Any]:
    """cirtorch's ``extract_vectors`` with CLAHE in front of the test transform (when asked)."""

    def extract_vectors(net: Any, images: Any, image_size: Any, transform: Any, *args: Any, **kwargs: Any) -> Any:
        if clahe and transform is not None:
            transform = _with_clahe(transform, grid)
        if transform is not None:
            transform = compat.WithRuntimeFixes(transform)
        return original(net, images, image_size, transform, *args, **kwargs)

    extract_vectors.__wrapped__ = original  # type: ignore[attr-defined]
    return extract_vectors


def _save_checkpoint_factory(original: Callable[..., Any], run: DSARun) -> Callable[..., Any]:
    def save_checkpoint(state: dict, is_best: bool, directory: str) -> Any:
        if run.config.enabled:
            state = dict(state)
            state["dsa"] = {"config": run.config.to_dict(), "generator_fingerprint": run.generator_fingerprint,
                            "tag": run.tag, "stats": run.stats()}
        result = original(state, is_best, directory)
        run.checkpoints.append(os.path.join(directory, "model_epoch%d.pth.tar" % state["epoch"]))
        return result

    save_checkpoint.__wrapped__ = original  # type: ignore[attr-defined]
    return save_checkpoint


def resume_mismatch(recorded: Any, run: DSARun) -> str | None:
    """Why a checkpoint's ``dsa`` entry cannot be resumed by ``run`` (``None``: it can)."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("config"), dict):
        return (f"it was trained without DSA settings and this run has '{run.tag}'; resume it without --dsa-* flags"
                if run.config.enabled else None)
    if not run.config.enabled:
        return f"it was trained with DSA ('{recorded.get('tag')}'); give the same --dsa-* flags to resume it"
    now = {**run.config.to_dict(), "generator_fingerprint": run.generator_fingerprint}
    then = {**recorded["config"], "generator_fingerprint": recorded.get("generator_fingerprint")}
    diffs = [f"{k}: checkpoint {then.get(k)!r}, now {now[k]!r}" for k in now
             if k != "device" and then.get(k) != now[k]]
    return ("it was trained with other DSA settings (" + "; ".join(diffs) + "); resume it with its own flags "
            "or train into a new directory") if diffs else None


class _ResumeGuard:
    """cirtorch's ``torch`` module for the duration of a ``--resume`` run: ``load`` checks the DSA
    settings recorded in the checkpoint against this run's; everything else is torch itself."""

    def __init__(self, torch_module: ModuleType, run: DSARun, parser: argparse.ArgumentParser) -> None:
        self._torch, self._run, self._parser = torch_module, run, parser

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    def load(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        # A resumed checkpoint is a file from disk: tensors and plain containers only, never pickled code.
        import pickle

        try:
            checkpoint = self._torch.load(f, *args, **{**kwargs, "weights_only": True})
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
            fail(self._parser, f"--resume {f}: {load_problem(err)}")
        if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
            problem = resume_mismatch(checkpoint.get("dsa"), self._run)
            if problem:
                self._parser.error(f"--resume {f}: {problem}")
        return checkpoint


def _patch_data_root(stack: contextlib.ExitStack, namespace: MutableMapping[str, Any], root: str) -> None:
    def get_data_root() -> str:
        return root

    if "get_data_root" in namespace:
        compat.rebind(stack, namespace, "get_data_root", get_data_root)
    # cirtorch imports the function by name into several modules; rebind it in each.
    for mod_name in ("cirtorch.utils.general", "cirtorch.datasets.traindataset",
                     "cirtorch.networks.imageretrievalnet"):
        module = sys.modules.get(mod_name)
        if module is None:
            with contextlib.suppress(ImportError):
                module = importlib.import_module(mod_name)
        if module is not None and hasattr(module, "get_data_root"):
            compat.rebind(stack, module, "get_data_root", get_data_root)


def _checked_data_root(namespace: MutableMapping[str, Any], args: argparse.Namespace,
                       parser: argparse.ArgumentParser) -> tuple[str | None, str | None]:
    """(``--dsa-data-root`` made absolute or None, the root cirtorch will read); checks its files first."""
    data_root = getattr(args, "dsa_data_root", None)
    if data_root is not None:
        data_root = os.path.abspath(data_root)
        if not os.path.isdir(data_root):
            parser.error(f"--dsa-data-root: not a directory: {data_root}")
    root = data_root or _default_data_root(namespace)
    if getattr(args, "dsa_no_download", False):
        if root is None:
            parser.error("--dsa-no-download: cannot tell cirtorch's data root; give --dsa-data-root")
        missing = [f for f in required_files(args, root) if not os.path.isfile(f)]
        if missing:
            parser.error("--dsa-no-download: missing data file(s): " + ", ".join(missing)
                         + " (put them there, drop the test sets with --dsa-skip-test, or allow the download)")
    try:
        if root is not None:
            check_data_files(args, root)
    except ValueError as err:
        fail(parser, str(err))
    return data_root, root


def _rebind_data_access(stack: contextlib.ExitStack, namespace: MutableMapping[str, Any], args: argparse.Namespace,
                        data_root: str | None) -> None:
    """``get_data_root`` (--dsa-data-root), ``download_*`` (--dsa-no-download), ``test`` (--dsa-skip-test)."""
    if data_root is not None:
        _patch_data_root(stack, namespace, data_root)
    if getattr(args, "dsa_no_download", False):
        for name in ("download_train", "download_test"):
            if name in namespace:
                compat.rebind(stack, namespace, name, lambda data_dir: None)
    if getattr(args, "dsa_skip_test", False) and "test" in namespace:
        compat.rebind(stack, namespace, "test",
                      lambda datasets, net: print(">> DSA: test-set evaluation skipped (--dsa-skip-test)"))


def _upstream(namespace: MutableMapping[str, Any], name: str) -> Any:
    """The script's own ``name`` (unwrapped when an earlier session rebound it)."""
    return getattr(namespace[name], "__wrapped__", namespace[name])


def _rebind_training(stack: contextlib.ExitStack, namespace: MutableMapping[str, Any], run: DSARun,
                     parser: argparse.ArgumentParser, data_root: str | None, tag_export_dir: bool) -> None:
    """``TuplesDataset``, ``extract_vectors``, ``save_checkpoint``, ``torch`` (--resume) and the export tag."""
    config, args = run.config, run.args
    if "TuplesDataset" in namespace:
        compat.rebind(stack, namespace, "TuplesDataset",
                      _tuple_factory(run, _upstream(namespace, "TuplesDataset"), data_root))
    if "extract_vectors" in namespace:
        original = _upstream(namespace, "extract_vectors")
        compat.rebind(stack, namespace, "extract_vectors",
                      _extract_vectors_factory(original, config.clahe, config.clahe_grid))
    if "save_checkpoint" in namespace:
        compat.rebind(stack, namespace, "save_checkpoint",
                      _save_checkpoint_factory(_upstream(namespace, "save_checkpoint"), run))
    if getattr(args, "resume", "") and "torch" in namespace:
        compat.rebind(stack, namespace, "torch", _ResumeGuard(namespace["torch"], run, parser))
    if tag_export_dir and run.tag and hasattr(args, "image_size"):
        compat.rebind(stack, args, "image_size", _TaggedSize(int(args.image_size), run.tag))


def _announce(run: DSARun) -> None:
    config, args = run.config, run.args
    if config.enabled:
        print(f">> DSA: {config.to_dict()} (export tag '{run.tag}', cpu-only run: {run.cpu_only})")
    if (config.generator is not None and not str(config.device).startswith("cpu")
            and int(getattr(args, "workers", 0) or 0) > 0):
        # The training loader's workers are forked; a forked process cannot use CUDA, and the
        # anchors of a tuple are translated where the tuple is loaded.
        print(f">> DSA: warning: --workers {args.workers} with online translation on {config.device}: "
              "forked DataLoader workers cannot run the generator on CUDA; use --workers 0 or a "
              "night cache (`dsa translate`, --dsa-night-cache)", file=sys.stderr)


@contextlib.contextmanager
def dsa_session(
    namespace: MutableMapping[str, Any],
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    tag_export_dir: bool = True,
) -> Iterator[DSARun]:
    """Install DSA into the namespace of cirtorch's ``train.py`` for the duration of the block.

    Validates the flags first (``parser.error`` on bad input, before any data is read), then
    rebinds the names listed in the module docstring. Everything is restored on exit.
    ``tag_export_dir`` appends ``DSAConfig.tag()`` to cirtorch's export directory name through
    ``args.image_size`` (the patched script does it explicitly instead).
    """
    check_train_args(args, parser)
    config = dsa_config_from_args(args, parser)
    data_root, _ = _checked_data_root(namespace, args, parser)
    check_resume(args, parser, config.tag(getattr(args, "dsa_generator_fingerprint", None)))
    compat.apply_runtime_fixes()
    stack = contextlib.ExitStack()
    if getattr(args, "gpu_id", None) is not None:
        # main() sets this before touching CUDA; we ask torch about CUDA first, so set it first.
        compat.rebind(stack, os.environ, "CUDA_VISIBLE_DEVICES", str(args.gpu_id))
    cpu_only = compat.cpu_only_run(config.device)
    if config.device is None and config.enabled:
        # Translate and mine where cirtorch trains (it calls .cuda(): the current CUDA device).
        config = dataclasses.replace(config, device="cpu" if cpu_only else "cuda")
    run = DSARun(config=config, args=args, cpu_only=cpu_only)
    with stack:
        stack.enter_context(compat.cuda_noop(run.cpu_only))
        _rebind_data_access(stack, namespace, args, data_root)
        _rebind_training(stack, namespace, run, parser, data_root, tag_export_dir)
        _announce(run)
        yield run


def _default_data_root(namespace: MutableMapping[str, Any]) -> str | None:
    """cirtorch's data root as the script sees it (None when cirtorch is not importable)."""
    fn = namespace.get("get_data_root")
    if fn is None:
        try:
            from cirtorch.utils.general import get_data_root as fn
        except ImportError:
            return None
    return fn()


def install(namespace: MutableMapping[str, Any], args: argparse.Namespace,
            parser: argparse.ArgumentParser, tag_export_dir: bool = False) -> DSARun:
    """:func:`dsa_session` for the rest of the process (what the patched ``train.py`` calls).

    ``tag_export_dir`` defaults to False because the patch appends :func:`export_tag` to the
    directory name itself.
    """
    stack = contextlib.ExitStack()
    run = stack.enter_context(dsa_session(namespace, args, parser, tag_export_dir=tag_export_dir))
    run._stack = stack
    return run
