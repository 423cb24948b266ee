"""Plain-text result tables in the paper's layout (mAP x 100)."""

from __future__ import annotations

from typing import Mapping, Sequence

SHORT_NAMES = {"247tokyo1k": "Tokyo", "roxford5k": "ROxf", "rparis6k": "RPar", "oxford5k": "Oxf5k", "paris6k": "Par6k"}


def _pct(v) -> str:
    return "  -  " if v is None or v != v else f"{100.0 * float(v):.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    line = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([fmt(header), line, *(fmt(r) for r in rows)])


def test_set_columns(result: Mapping) -> list[tuple[str, float]]:
    """Paper columns of one test-set result: Tokyo mAP, or ROxf/RPar Medium and Hard."""
    short = SHORT_NAMES.get(result["dataset"], result["dataset"])
    if result["protocol"] == "revisited":
        return [(f"{short} M", result["medium"]["map"]), (f"{short} H", result["hard"]["map"])]
    return [(short, result["map"])]


def format_test_sets(results: Sequence[Mapping], label: str = "network") -> str:
    """One row, the paper's columns (``Tokyo | ROxf M | ROxf H | RPar M | RPar H``), then mP@k per set."""
    cols = [c for r in results for c in test_set_columns(r)]
    main = _table(["", *[c for c, _ in cols]], [[label, *[_pct(v) for _, v in cols]]])
    detail_rows = []
    for r in results:
        short = SHORT_NAMES.get(r["dataset"], r["dataset"])
        parts = (
            [(s[0].upper(), r[s]) for s in ("easy", "medium", "hard")] if r["protocol"] == "revisited" else [("", r)]
        )
        for tag, m in parts:
            ks = [k for k in m if k.startswith("mp@")]
            detail_rows.append(
                [f"{short} {tag}".strip(), _pct(m["map"]), *[_pct(m[k]) for k in ks], str(m["num_evaluated"])]
            )
    first = (results[0]["medium"] if results[0]["protocol"] == "revisited" else results[0]) if results else {}
    kcols = [k for k in first if str(k).startswith("mp@")]
    detail = _table(["set", "mAP", *[k.replace("mp", "mP") for k in kcols], "queries"], detail_rows)
    return main + "\n\n" + detail


def format_folder(result: Mapping, label: str = "network") -> str:
    """Per domain pair (night->day, day->day): queries, db size, mAP and mP@k."""
    pairs = [k for k in result if isinstance(result[k], Mapping) and "->" in k]
    ks = [k for k in result[pairs[0]] if k.startswith("mp@")] if pairs else []
    rows = [
        [p.replace("->", "→"), str(result[p]["num_evaluated"]), str(result[p]["num_db"]), _pct(result[p]["map"]),
         *[_pct(result[p][k]) for k in ks]]
        for p in pairs
    ]
    title = f"{label} on {result['folder']}" + (f" (role={result['role']})" if result.get("role") else "")
    return title + "\n" + _table(["queries → db", "queries", "db", "mAP", *[k.replace("mp", "mP") for k in ks]], rows)
