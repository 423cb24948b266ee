"""Atomic file writes: readers see the old file or the complete new one, never a truncated file;
and the one conversion to plain Python values (:func:`to_plain`) behind every JSON file we write.

The data goes to a temporary file in the target's folder (``.<name>.<random>.tmp``, so a rename
never crosses file systems), is flushed and fsynced, then renamed over the target with
``os.replace`` (atomic on POSIX and Windows). A failure or ``KeyboardInterrupt`` while writing
removes the temporary file and leaves the target untouched.

Example:
    >>> import pickle
    >>> atomic_write("db.pkl", lambda f: pickle.dump({"a": 1}, f))  # doctest: +SKIP
    PosixPath('db.pkl')
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = ["atomic_save", "atomic_write", "atomic_write_bytes", "atomic_write_text", "check_output_folder", "to_plain",
           "write_json"]

# os.open applies the umask to this, so the file gets the same permissions as one made by open()
# (tempfile.mkstemp would make it 0600, unreadable for other users of a shared data folder).
_FILE_MODE = 0o666


def _open_temp(path: Path) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, _FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {path}")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; not possible on every platform (e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], object]) -> Path:
    """Call ``write_fn(f)`` with a binary file object, then atomically move the result onto ``path``.

    Creates missing parent folders. Returns ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import torch
        >>> atomic_write("net.pth", lambda f: torch.save({"w": torch.zeros(2)}, f))  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` written atomically (:func:`atomic_write`): a checkpoint is never half-written.

    Example:
        >>> import os, tempfile, torch
        >>> path = atomic_save({"w": torch.ones(2)}, os.path.join(tempfile.mkdtemp(), "w.pth"))
        >>> torch.load(path, weights_only=True)["w"].tolist()
        [1.0, 1.0]
    """
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    Example:
        >>> import os, tempfile
        >>> path = atomic_write_bytes(os.path.join(tempfile.mkdtemp(), "x.bin"), b"abc")
        >>> path.read_bytes()
        b'abc'
    """
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    r"""Write ``text`` to ``path`` atomically (see :func:`atomic_write`); no newline translation.

    Example:
        >>> import os, tempfile
        >>> atomic_write_text(os.path.join(tempfile.mkdtemp(), "x.txt"), "night\n").read_text()
        'night\n'
    """
    return atomic_write_bytes(path, text.encode(encoding))


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files that writers killed with SIGKILL (which no
    cleanup survives) left in ``folder``; call it before resuming into ``folder``. Returns them.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / ".state.pth.1a2b3c4d.tmp").write_bytes(b"half")
        >>> [p.name for p in remove_stale_temps(folder)]
        ['.state.pth.1a2b3c4d.tmp']
    """
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stale


def to_plain(obj: Any) -> Any:
    """A copy of ``obj`` made only of dicts (str keys), lists, str, int, float, bool and None.

    One conversion for everything we serialise: JSON reports and manifests, YAML configs, and the
    ``runtime`` dict of a checkpoint, which must load with ``torch.load(weights_only=True)`` (so no
    numpy scalar, tuple subclass or dataclass may slip through). Tensors and numpy values become
    numbers or nested lists (``.tolist()``), dataclasses dicts, paths strings, tuples lists; anything
    else becomes its ``str()``, as ``json.dumps(default=str)`` would write it.

    Example:
        >>> import numpy as np, torch
        >>> from pathlib import Path
        >>> to_plain({"n": np.int64(3), 1: (torch.tensor([0.5]), Path("a/b")), "x": None})
        {'n': 3, '1': [[0.5], 'a/b'], 'x': None}
    """
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {k if isinstance(k, str) else str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if hasattr(obj, "tolist"):  # torch.Tensor, numpy arrays and scalars
        return to_plain(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, int):  # IntEnum and other subclasses: the number, as json writes them
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    return str(obj)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
               newline: bool = True) -> Path:
    r"""Write :func:`to_plain` of ``obj`` as JSON to ``path`` atomically (see :func:`atomic_write`).

    ``indent``, ``sort_keys`` and ``newline`` (a final line break) let each file keep its layout.

    Example:
        >>> write_json("report.json", {"mAP": 0.5})  # doctest: +SKIP
        PosixPath('report.json')

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> path = write_json(os.path.join(tempfile.mkdtemp(), "r.json"), {"map": np.float32(0.5)}, indent=None)
        >>> path.read_text()
        '{"map": 0.5}\n'
    """
    text = json.dumps(to_plain(obj), indent=indent, sort_keys=sort_keys)
    return atomic_write_text(path, text + "\n" if newline else text)


#: Kernel file systems: paths there are not files, and writing to them fails late or does harm.
_KERNEL_FOLDERS = ("/proc", "/sys", "/dev")


def check_output_folder(path: str | os.PathLike, what: str) -> Path:
    """Refuse an output folder that cannot hold outputs, before anything runs (nothing is created).

    ``path`` may not exist yet; its nearest existing ancestor must be a writable folder. Refused:
    a file (or a path under a file), a path under ``/proc``, ``/sys`` or ``/dev``, and a folder
    the user cannot write. Raises ``ValueError`` whose message starts with ``what`` and ``path``.
    """
    given = Path(path).expanduser()
    real = Path(os.path.realpath(given))
    for kernel in _KERNEL_FOLDERS:
        if real == Path(kernel) or Path(kernel) in real.parents:
            raise ValueError(f"{what} {path}: is under {kernel}, a kernel file system, not a folder for outputs")
    existing = real
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == real else f"is under {existing}, which is a file"
        raise ValueError(f"{what} {path}: {where}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: {existing} is not writable")
    return given
