"""Checks of the data files cirtorch's ``train.py`` will read, before it reads them."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["check_data_files", "fail", "required_files"]


def required_files(args: argparse.Namespace, root: str) -> list[str]:
    """Files cirtorch's train.py will read under ``root`` for these arguments."""
    name = getattr(args, "training_dataset", "retrieval-SfM-120k")
    files = [os.path.join(root, "train", name, f"{name}.pkl")]
    if not getattr(args, "dsa_skip_test", False):
        for ds in filter(None, str(getattr(args, "test_datasets", "")).split(",")):
            files.append(os.path.join(root, "test", ds, f"gnd_{ds}.pkl"))
        whiten = getattr(args, "test_whiten", "")
        if whiten:
            files.append(os.path.join(root, "train", whiten, f"{whiten}-whiten.pkl"))
    return files


def fail(parser: argparse.ArgumentParser, message: str) -> None:
    """One ``prog: error: message`` line and exit status 2 (data errors need no usage block)."""
    print(f"{parser.prog}: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(2)


def check_data_files(args: argparse.Namespace, root: str) -> None:
    """Read every pickle cirtorch will open under ``root`` with the restricted unpickler first.

    cirtorch unpickles these files with plain ``pickle.load``, which runs any code a crafted file
    names; a file that passes here holds only builtins and numpy arrays. The training db is also
    checked for the retrieval-SfM layout (in-range pairs, plain cids) and for enough clusters to
    mine ``--neg-num`` negatives from (cirtorch's mining loop runs off the end otherwise).
    Files that do not exist yet are left to cirtorch's download. Raises ``ValueError``.
    """
    from dsa_plugin.data.sfm import SfMFormatError, load_sfm_db, read_db_pickle

    files = required_files(args, root)
    train_db, others = files[0], files[1:]
    if os.path.isfile(train_db):
        nnum = int(getattr(args, "neg_num", 0) or 0)
        for split in ("train", "val"):
            db = load_sfm_db(train_db, split)
            n_clusters = len(set(db.clusters))
            if n_clusters < nnum + 1:
                raise SfMFormatError(f"{train_db}: split '{split}' has {n_clusters} clusters, but --neg-num {nnum} "
                                     f"needs at least {nnum + 1} (one for the query, one per negative)")
    for path in others:
        if os.path.isfile(path):
            read_db_pickle(path, what="data file")
