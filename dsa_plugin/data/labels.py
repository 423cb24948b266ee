"""``labels.csv`` of a folder dataset (``file, domain, place_id[, role]``), read strictly.

Spreadsheet exports carry a UTF-8 byte-order mark and CRLF line ends: both simply work. Every
``file`` must stay inside the folder (no absolute paths, no ``..`` that leaves it), a row must have
every column, and a file may be listed once: each problem is a one-line :class:`LabelsError`
naming the file and the row (1 = the header line).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path


class LabelsError(ValueError):
    """``labels.csv`` is unreadable or one of its rows is not allowed."""


def path_inside(root: str | os.PathLike, relative: str) -> Path | None:
    """``root/relative`` when it stays inside ``root`` (lexically: symlinked folders still work), else None.

    Example:
        >>> str(path_inside("/data/photos", "day/a.jpg"))
        '/data/photos/day/a.jpg'
        >>> path_inside("/data/photos", "../secret.jpg") is None
        True
    """
    if not relative or os.path.isabs(relative) or relative.startswith(("/", "\\")) or "\x00" in relative:
        return None
    base = os.path.normpath(os.path.abspath(root))
    joined = os.path.normpath(os.path.join(base, relative))
    return Path(joined) if joined.startswith(base + os.sep) else None


def _read_table(csv_path: Path) -> list[tuple[int, list[str]]]:
    """``[(line number, values), ...]`` of a UTF-8 CSV file, or :class:`LabelsError`."""
    try:
        # utf-8-sig: a leading byte-order mark would otherwise become part of the first column name.
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            return [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as err:
        raise LabelsError(f"{csv_path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                          "save it as UTF-8") from None
    except csv.Error as err:
        raise LabelsError(f"{csv_path}: not a readable CSV file ({err})") from None
    except OSError as err:
        raise LabelsError(f"{csv_path}: cannot read it: {err.strerror or err}") from None


def _check_file(csv_path: Path, line: int, file: str, first_row_of: dict[str, int]) -> None:
    """``file`` is a relative path inside the folder, listed once (``first_row_of`` records the rows seen)."""
    if path_inside(csv_path.parent, file) is None:
        raise LabelsError(f"{csv_path}: row {line}: file {file!r} is outside the folder "
                          f"{csv_path.parent}; files must be relative paths inside it")
    key = os.path.normpath(file)
    if key in first_row_of:
        raise LabelsError(f"{csv_path}: row {line} lists {file!r} again (first in row "
                          f"{first_row_of[key]}); each image once")
    first_row_of[key] = line


def read_labels(
    csv_path: str | os.PathLike, required: Sequence[str]
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    r"""``(columns, [(row number, row), ...])`` of ``csv_path``; values are stripped, ``file`` checked.

    Raises :class:`LabelsError` for a non-UTF-8 file, missing columns, a short or over-long row, an
    empty required value, a ``file`` outside the folder, or a file listed twice.

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with open(os.path.join(folder, "labels.csv"), "w") as f:
        ...     _ = f.write("file,domain,place_id\n a.jpg , day, 1\nb.jpg,night,1\n")
        >>> columns, rows = read_labels(os.path.join(folder, "labels.csv"), ("file", "domain"))
        >>> columns, rows[0]
        (['file', 'domain', 'place_id'], (2, {'file': 'a.jpg', 'domain': 'day', 'place_id': '1'}))
    """
    csv_path = Path(csv_path)
    table = _read_table(csv_path)
    if not table:
        raise LabelsError(f"{csv_path}: empty file; expected a header with columns {', '.join(required)}")
    columns = [c.strip() for c in table[0][1]]
    missing = [c for c in required if c not in columns]
    if missing:
        raise LabelsError(f"{csv_path}: missing column(s) {missing} (found {columns}); needed: {list(required)}")
    rows: list[tuple[int, dict[str, str]]] = []
    first_row_of: dict[str, int] = {}
    for line, values in table[1:]:
        if not any(v.strip() for v in values):
            continue  # blank line
        if len(values) != len(columns):
            raise LabelsError(f"{csv_path}: row {line} has {len(values)} value(s) but the header has {len(columns)} "
                              f"columns {columns}")
        row = {c: v.strip() for c, v in zip(columns, values, strict=True)}
        empty = [c for c in required if not row[c]]
        if empty:
            raise LabelsError(f"{csv_path}: row {line} has empty {empty}")
        if "file" in row:
            _check_file(csv_path, line, row["file"], first_row_of)
        rows.append((line, row))
    return columns, rows
