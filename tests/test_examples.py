"""Runnable examples: at least a third of the public API carries a ``>>>`` example in its docstring.

The examples themselves run as doctests (``--doctest-modules`` in pytest.ini). Public API: the
functions and classes defined at module level in ``dsa_plugin`` (not ``dsa_plugin/demo/``, which
is being rewritten in another change) whose names do not start with ``_``. A class counts when its
own docstring or its ``__init__``'s has an example; an example counts when doctest runs at least
one of its lines (not all marked ``+SKIP``). ``python tests/test_examples.py`` prints the
coverage and what lacks an example.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dsa_plugin"
MIN_SHARE = 1 / 3


def _runs(doc: str) -> bool:
    """A ``>>>`` line that doctest runs (not marked ``+SKIP``)."""
    return any(line.lstrip().startswith(">>>") and "+SKIP" not in line for line in doc.splitlines())


def _has_example(node: ast.AST) -> bool:
    docs = [ast.get_docstring(node) or ""]
    if isinstance(node, ast.ClassDef):
        docs += [ast.get_docstring(n) or "" for n in node.body
                 if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    return any(_runs(d) for d in docs)


def public_api() -> dict[str, bool]:
    """``{"module:name": has an example}`` for every public module-level function and class."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        if rel.parts[1] == "demo":
            continue
        module = ".".join(rel.with_suffix("").parts)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            is_api = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if is_api and not node.name.startswith("_"):
                out[f"{module}:{node.name}"] = _has_example(node)
    return out


def test_a_third_of_the_public_api_has_a_runnable_example():
    api = public_api()
    share = sum(api.values()) / len(api)
    assert share >= MIN_SHARE, (
        f"{sum(api.values())} of {len(api)} public functions and classes ({share:.0%}) have a >>> example; "
        f"need {MIN_SHARE:.0%}"
    )


if __name__ == "__main__":
    api = public_api()
    print(f"{sum(api.values())} of {len(api)} public functions and classes have a >>> example "
          f"({sum(api.values()) / len(api):.1%})")
    for name, has in api.items():
        if not has:
            print("  missing:", name)
