"""The ```python blocks of docs/*.md run: in order, one namespace per file, in a fresh folder.

A block whose first line starts with ``>>>`` runs as a doctest (ELLIPSIS and NORMALIZE_WHITESPACE
on); any other block is executed. A block that needs what a test cannot have (a GPU, a toolkit, the
published weights, a real dataset) is fenced ```python no-run and only checked to compile.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```python(?P<info>[^\n]*)\n(?P<code>.*?)^```", re.M | re.S)


def blocks(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, code, runs)`` of each ```python block of ``path``."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group("code"), "no-run" not in m.group("info").split())
            for m in FENCE.finditer(text)]


def all_blocks() -> list[tuple[Path, int, str, bool]]:
    return [(path, *block) for path in sorted(DOCS.glob("*.md")) for block in blocks(path)]


@pytest.mark.parametrize("path", sorted(p for p in DOCS.glob("*.md") if blocks(p)), ids=lambda p: p.name)
def test_docs_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for line, code, runs in blocks(path):
        where = f"{path.name}:{line}"
        if code.lstrip().startswith(">>>"):
            test = doctest.DocTestParser().get_doctest(code, namespace, where, str(path), line)
            if not runs:
                continue
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
            runner.run(test, out=print, clear_globs=False)  # later blocks see what this one defined
            assert not runner.failures, f"{where}: {runner.failures} doctest example(s) failed (output above)"
        else:
            compiled = compile(code, where, "exec")
            if runs:
                exec(compiled, namespace)


def test_most_docs_blocks_run():
    found = all_blocks()
    running = sum(runs for *_, runs in found)
    assert running > len(found) / 2, f"only {running} of {len(found)} ```python blocks in docs/ run"
