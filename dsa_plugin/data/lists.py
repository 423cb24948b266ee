"""Which images: the anchor-capable images of a retrieval-SfM db, or a plain list of paths."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dsa_plugin.data.sfm import load_sfm_db

__all__ = ["anchor_images_from_db", "read_image_list"]


def anchor_images_from_db(
    pkl_path: str | os.PathLike, ims_root: str | os.PathLike | None = None, splits: Sequence[str] = ("train", "val")
) -> list[str]:
    """Paths of every image that can be an anchor: the query images (``qidxs``) of the given splits.

    Order is train first, then val, each in first-appearance order; duplicates are dropped.

    Example:
        >>> import tempfile
        >>> from dsa_plugin.data.sfm import make_tiny_sfm_db
        >>> pkl = make_tiny_sfm_db(tempfile.mkdtemp(), clusters=4, images_per_cluster=2, size=(16, 16))
        >>> len(anchor_images_from_db(pkl)), len(anchor_images_from_db(pkl, splits=("train",)))
        (4, 2)
    """
    seen: dict[str, None] = {}
    for split in splits:
        db = load_sfm_db(pkl_path, split, ims_root)
        for q in db.qidxs:
            seen.setdefault(db.images[q], None)
    return list(seen)


def read_image_list(list_path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[str]:
    r"""One image path per line (blank lines and ``#`` comments skipped); relative paths are taken
    from ``root`` (default: the list's own directory).

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with open(os.path.join(folder, "night.txt"), "w") as f:
        ...     _ = f.write("# candidates\nims/a.jpg\n\nims/b.jpg\n")
        >>> [os.path.relpath(p, folder) for p in read_image_list(os.path.join(folder, "night.txt"))]
        ['ims/a.jpg', 'ims/b.jpg']
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FileNotFoundError(f"image list not found: {list_path}")
    base = Path(root) if root is not None else list_path.parent
    out = []
    for number, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            # Entries stay inside the base folder (checked on the text: a symlink there is the user's choice).
            if os.path.isabs(line) or os.path.normpath(line).split(os.sep)[0] == os.pardir:
                raise ValueError(f"{list_path}, line {number}: {line!r} leaves the list's folder {base}; "
                                 "entries are paths relative to it (without ../ or a leading /)")
            out.append(os.fspath(base / line))
    return out
