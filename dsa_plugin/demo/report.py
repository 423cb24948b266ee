"""The demo's HTML report: one self-contained page that opens from disk (no server, no scripts).

Images are PNG files next to ``index.html`` (relative links); charts are inline SVG, so the page
needs no plotting library and renders the same in any browser.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

from dsa_plugin.core.files import atomic_write_text, to_plain

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def svg_line_chart(
    series: dict[str, Sequence[tuple[float, float]]],
    title: str,
    width: int = 560,
    height: int = 260,
    x_label: str = "iteration",
) -> str:
    """An inline SVG line chart of named (x, y) series (y on a linear axis)."""
    points = [p for s in series.values() for p in s if math.isfinite(p[1])]
    if not points:
        return f"<p><em>{html.escape(title)}: no data</em></p>"
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 52, 12, 26, 34
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        yv = y0 + frac * (y1 - y0)
        parts.append(f'<text x="{left - 4}" y="{sy(yv) + 4:.1f}" font-size="10" text-anchor="end">{yv:.3g}</text>')
    parts.append(f'<text x="{left}" y="{height - 8}" font-size="10">{x0:g}</text>')
    parts.append(f'<text x="{left + pw}" y="{height - 8}" font-size="10" text-anchor="end">'
                 f'{x1:g} {html.escape(x_label)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts if math.isfinite(y))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        parts.append(f'<text x="{left + 8 + 110 * i}" y="{top + 14}" font-size="11" fill="{color}">'
                     f'{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(src: str, caption: str) -> str:
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>')


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0} th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.5em 1em .5em 0}
figure img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555} pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:.85em}
.good{color:#1a7f37;font-weight:bold} .bad{color:#b42318;font-weight:bold}
"""


def write_report(
    report_dir: str | os.PathLike,
    *,
    title: str,
    summary_rows: Sequence[Sequence[Any]],
    summary_header: Sequence[str],
    verdict: str,
    images: Sequence[tuple[str | os.PathLike, str]],
    charts: Sequence[str],
    per_seed_header: Sequence[str],
    per_seed_rows: Sequence[Sequence[Any]],
    timings: dict[str, float],
    settings: dict[str, Any],
    sections: Sequence[str] = (),
) -> Path:
    """Write ``report_dir/index.html``; ``images`` are copied next to it and linked relatively;
    ``sections`` (HTML) follow the per-seed table."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for i, (src, caption) in enumerate(images):
        src = Path(src)
        if not src.is_file():
            continue
        name = f"fig{i:02d}_{src.name}"
        shutil.copyfile(src, report_dir / name)
        figures.append(_figure(name, caption))
    body = [
        f"<h1>{html.escape(title)}</h1>",
        '<p class="sub">Dark Side Augmentation (Mohwald, Jenicek, Chum, ICCV 2023) — generated by '
        '<code>dsa demo</code></p>',
        "<h2>Result</h2>",
        html_table(summary_header, summary_rows),
        f"<p>{verdict}</p>",
        "<h2>Per seed</h2>",
        html_table(per_seed_header, per_seed_rows),
        *sections,
        "<h2>Day → night translation</h2>",
        "".join(figures) or "<p><em>no images</em></p>",
        "<h2>GAN training</h2>",
        "".join(charts),
        "<h2>Timings</h2>",
        html_table(["stage", "seconds"], [(k, f"{v:.1f}") for k, v in timings.items()]),
        "<h2>Settings</h2>",
        f"<pre>{html.escape(json.dumps(to_plain(settings), indent=2))}</pre>",
    ]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    out = report_dir / "index.html"
    atomic_write_text(out, page)
    return out


def _gan_curves(log_path: str | os.PathLike) -> list[str]:
    """Loss curves from the GAN trainer's JSONL log (one chart for D/G, one for the edge terms)."""
    rows = []
    path = Path(log_path)
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill; the rest of the log is still good
    rows = [r for r in rows if "iteration" in r]

    def series(keys: Sequence[str]) -> dict[str, list[tuple[float, float]]]:
        return {k: [(r["iteration"], float(r[k])) for r in rows if isinstance(r.get(k), (int, float))]
                for k in keys if any(k in r for r in rows)}

    adversarial = series([k for k in ("D_real", "D_fake", "G_gan", "loss_D", "loss_G") if any(k in r for r in rows)])
    edges = series([k for k in ("G_hed", "E_real", "E_fake", "edge") if any(k in r for r in rows)])
    return [svg_line_chart(adversarial, "adversarial losses"), svg_line_chart(edges, "edge / detector losses")]


def _fmt(cell: dict[str, Any]) -> str:
    return f"{cell['mean']:.1f} ± {cell['spread']:.1f}"


def _setting(test: dict[str, Any]) -> str:
    return f"CLAHE {test['clahe_grid']}×{test['clahe_grid']}" if test["clahe"] else "no CLAHE"


def result_rows(summary: dict[str, Any]) -> list[tuple]:
    """One row per arm: mAP as tested and under the other CLAHE setting, and the setting itself."""
    table, other, tests = summary["table"], summary["other_setting"], summary["test_settings"]
    first = summary["gan_seeds"][0] if summary["gan_seeds"] else None
    rows = []
    for name in table:
        label = name if name not in ("nights", "dsa") else f"{name}-gan{first}"
        test = tests[label]
        rows.append((name, _fmt(table[name]["night->day"]), _fmt(table[name]["day->day"]), _setting(test),
                     _fmt(other[name]["night->day"]), _fmt(other[name]["day->day"])))
    for name, scores in (summary.get("pretrained") or {}).items():
        rows.append((f"pretrained, {name}", f"{100 * scores['night->day']['map']:.1f}",
                     f"{100 * scores['day->day']['map']:.1f}", name, "", ""))
    return rows


def verdict_text(claim: dict[str, Any] | None, robust: bool) -> str:
    """One sentence: does ``dsa`` beat the stronger control (numbers and criteria)."""
    if claim is None:
        return "No dsa runs: no claim to check."
    c = claim["criteria"]
    per_seed = " / ".join(f"{d:+.1f}" for d in claim["paired"]["night->day"])
    word = "holds" if robust else "does NOT hold"
    return (f"dsa − {claim['control']} (the stronger control) night→day per seed {per_seed}, mean "
            f"{claim['night_gain']:+.1f} (better on {claim['seeds_won']} of {len(claim['seeds'])} seeds), day→day "
            f"{-claim['day_drop']:+.1f}: the claim {word} here (asked: every seed better, mean gain ≥ "
            f"{c['min_gain']:g}, day→day ≥ −{c['max_day_drop']:g}, for every GAN seed).")


def realism_rows(summary: dict[str, Any]) -> list[tuple]:
    rows = []
    for name, r in (summary.get("realism") or {}).items():
        if r:
            rows.append((name, f"{r['kid_gap_closed']:.2f}", f"{r.get('edge_l1', float('nan')):.3f}",
                         f"{r['day_luma']:.3f}", f"{r['fake_luma']:.3f}", f"{r['night_luma']:.3f}"))
    return rows


def _per_seed_rows(summary: dict[str, Any]) -> tuple[list[str], list[tuple]]:
    runs = summary["runs"]
    seeds = sorted({s for per_seed in runs.values() for s in map(int, per_seed)})
    header = ["arm", *(f"seed {s} night→day / day→day" for s in seeds)]
    rows = []
    for label, per_seed in runs.items():
        cells = {int(s): r["eval"] for s, r in per_seed.items()}
        rows.append((label, *(f"{100 * cells[s]['night->day']['map']:.1f} / {100 * cells[s]['day->day']['map']:.1f}"
                              if s in cells else "" for s in seeds)))
    for g, per in (summary.get("per_gan_seed") or {}).items():
        c = per["claim"]
        frac = per.get("oracle_fraction")
        rows.append((f"dsa-gan{g} − {c['control']}", *(f"{d:+.1f} / {e:+.1f}" for d, e in
                                                       zip(c["paired"]["night->day"], c["paired"]["day->day"])),
                     *([f"oracle fraction {frac:.2f}"] if frac is not None else [])))
        if per.get("vs_colours"):
            v = per["vs_colours"]
            rows.append((f"dsa-gan{g} − colours", *(f"{d:+.1f} / {e:+.1f}" for d, e in
                                                    zip(v["paired"]["night->day"], v["paired"]["day->day"]))))
    return header, rows


def render_demo_report(report_dir: str | os.PathLike, summary: dict[str, Any]) -> Path:
    """The demo's report from its summary (see ``pipeline.run_demo``)."""
    ok = summary["claim_holds"]
    verdict = f'<span class="{"good" if ok else "bad"}">{html.escape(verdict_text(summary["claim"], ok))}</span>'
    frac = summary.get("oracle_fraction")
    if frac is not None:
        verdict += (f"<br>The GAN's nights recover {100 * frac:.0f} % of the oracle's gain over baseline+clahe "
                    f"(asked: at least a third). mAP in %, mean ± spread (population standard deviation) over the "
                    f"fine-tuning seeds.")
    choices = summary.get("choices") or {}
    verdict += "<br>" + html.escape(f"CLAHE grid {choices.get('clahe_grid')} (chosen on {choices.get('source')}; "
                                    f"night→day of the pretrained network per grid: "
                                    + ", ".join(f"{k}: {v['night->day']:.1f}"
                                                for k, v in choices.get("scores", {}).items())
                                    + ")")
    realism = "<h2>Night realism (validation places)</h2>" + html_table(
        ["nights", "KID gap closed", "edge L1", "day luma", "night-image luma", "real night luma"],
        realism_rows(summary))
    validation = summary.get("validation") or {}
    if validation:
        realism = ("<h2>Validation places (where GAN settings are compared)</h2>" + html_table(
            ["arm", "night→day mAP", "day→day mAP"],
            [(name, _fmt(row["night->day"]), _fmt(row["day->day"])) for name, row in validation.items()])) + realism
    realism += ("<p>KID gap closed: 1 − KID(nights, real nights) / KID(days, real nights) on local conv3_3 features "
                "of the pretrained VGG16 (1: as close to the real nights as real nights of other places are); "
                "edge L1: |HED(night image) − HED(day)|.</p>")
    header, per_seed = _per_seed_rows(summary)
    images = []
    for seed, gan in (summary.get("gans") or {}).items():
        samples = gan.get("samples") or []
        if samples:
            images.append((samples[-1], f"GAN seed {seed}, last training batch ({Path(samples[-1]).stem}): "
                                        "day | G(day) | real night | HED(day) | HED(G(day))"))
    charts = [c for gan in (summary.get("gans") or {}).values() for c in _gan_curves(gan["log"])]
    return write_report(
        report_dir,
        title="dsa demo — Dark Side Augmentation end to end",
        summary_header=["arm", "night→day mAP", "day→day mAP", "tested with", "night→day, other setting",
                        "day→day, other setting"],
        summary_rows=result_rows(summary),
        verdict=verdict,
        images=[*summary.get("figures", []), *images],
        charts=charts,
        per_seed_header=header,
        per_seed_rows=per_seed,
        timings=summary["timings"],
        settings=summary["settings"],
        sections=[realism],
    )
