"""Checks of cirtorch's own ``train.py`` arguments before its ``main()`` runs: numeric ranges its
parser does not check, ``--arch`` names it can build, an ``EXPORT_DIR`` that can hold a folder, and
``--resume`` files (found where cirtorch looks, loaded with ``weights_only=True``).
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

from dsa_plugin.integrations.cirtorch.datafiles import fail

__all__ = ["check_resume", "check_train_args", "load_problem"]


#: cirtorch's numeric flags and what they must be (its parser checks only the types): a zero or
#: negative size fails deep in the loop, and --epochs -1 exits 0 having trained nothing.
_AT_LEAST = {"epochs": 1, "batch_size": 1, "query_size": 1, "pool_size": 1, "image_size": 16, "update_every": 1,
             "neg_num": 1, "workers": 0, "print_freq": 1, "test_freq": 1}
_FINITE = {"lr": "a positive", "momentum": "a non-negative", "weight_decay": "a non-negative",
           "loss_margin": "a non-negative"}


def check_train_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse cirtorch arguments its ``main()`` would fail on late (or train nothing with), one line each.

    Checks the numeric ranges of :data:`_AT_LEAST` and :data:`_FINITE`, that ``--arch`` is a
    network cirtorch can build (its parser accepts any lowercase torchvision callable, e.g.
    ``get_model``) and that ``EXPORT_DIR`` can hold a folder. Flags the parser lacks are skipped.
    """
    from dsa_plugin.core.files import check_output_folder

    for dest, minimum in _AT_LEAST.items():
        value = getattr(args, dest, None)
        if isinstance(value, int) and value < minimum:
            fail(parser, f"--{dest.replace('_', '-')} must be >= {minimum}, got {value}")
    for dest, kind in _FINITE.items():
        value = getattr(args, dest, None)
        if isinstance(value, float) and not (math.isfinite(value) and (value > 0 if dest == "lr" else value >= 0)):
            fail(parser, f"--{dest.replace('_', '-')} must be {kind} finite number, got {value}")
    arch = getattr(args, "arch", None)
    if isinstance(arch, str):
        try:
            from cirtorch.networks.imageretrievalnet import OUTPUT_DIM
        except ImportError:
            OUTPUT_DIM = None
        if OUTPUT_DIM is not None and arch not in OUTPUT_DIM:
            fail(parser, f"--arch {arch}: not a network cirtorch builds; choose from {sorted(OUTPUT_DIM)}")
    directory = getattr(args, "directory", None)
    if isinstance(directory, str):
        try:
            check_output_folder(directory, "EXPORT_DIR")
        except ValueError as err:
            fail(parser, str(err))


def _export_directory(args: argparse.Namespace, tag: str) -> str:
    """The run folder cirtorch's ``main()`` makes under EXPORT_DIR (its naming, with the DSA tag)."""
    name = f"{args.training_dataset}_{args.arch}_{args.pool}"
    name += "_lwhiten" if args.local_whitening else ""
    name += "_r" if args.regional else ""
    name += "_whiten" if args.whitening else ""
    name += "" if args.pretrained else "_notpretrained"
    name += "_{}_m{:.2f}".format(args.loss, args.loss_margin)
    name += "_{}_lr{:.1e}_wd{:.1e}".format(args.optimizer, args.lr, args.weight_decay)
    name += "_nnum{}_qsize{}_psize{}".format(args.neg_num, args.query_size, args.pool_size)
    name += "_bsize{}_uevery{}_imsize{}".format(args.batch_size, args.update_every, int(args.image_size))
    return os.path.join(args.directory, name + tag)


def check_resume(args: argparse.Namespace, parser: argparse.ArgumentParser, tag: str) -> None:
    """``--resume`` must name an existing file: cirtorch itself prints a note and trains from scratch.

    cirtorch reads ``--resume`` inside the run's export folder (``os.path.join``: an absolute
    path stays as it is).
    """
    resume = getattr(args, "resume", "")
    if not resume:
        return
    try:
        path = os.path.join(_export_directory(args, tag), resume)
    except AttributeError:  # a parser without cirtorch's flags: nothing to compute the folder from
        return
    if not os.path.isfile(path):
        fail(parser, f"--resume {resume}: no checkpoint at {path} (cirtorch looks for it in the run's export "
                      "folder; give an absolute path or a file name there)")
    _load_resume(path, parser, resume)


def _load_resume(path: str, parser: argparse.ArgumentParser, flag: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)``; a file that is not one: one line, exit status 2."""
    import pickle

    import torch

    try:
        try:  # memory-mapped: the check reads the pickle, not the tensors (cirtorch loads it again)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        fail(parser, f"--resume {flag or path}: {load_problem(err)}")


def load_problem(err: BaseException) -> str:
    """One line for a ``torch.load(weights_only=True)`` failure (torch's own text is a page long)."""
    import pickle
    import re

    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "weights_only" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return f"refused: it names a Python object{what} beyond tensors and plain data; loading it could run code"
    first = " ".join(text.split("\n")[0].split())[:300]
    return f"not a checkpoint of tensors and plain data ({type(err).__name__}: {first})"
