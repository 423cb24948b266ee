#!/usr/bin/env python
"""The reference's six day->night translators side by side, at an equal CPU budget.

Trains each variant's tiny preset (``hedngan-tiny``, ``hedgan-tiny``, ``cyclegan-tiny``, ``cut-tiny``,
``rcfgan-tiny``, ``rcfngan-tiny``: the same 64 px crops, generator size, batch 2, lr and seed) on the
AMOS day/night photos of role ``gan_train`` for the **same number of iterations** (one iteration =
one batch of 2 day/night pairs; the variants differ in cost per iteration, reported as s/it), then
measures on the training and the held-out ``eval`` day images:

* edge L1 = mean |HED(G(day)) - HED(day)| with one shared evaluator HED (the random-init HED every
  tiny preset starts from, seed 0; the RCF variants trained against an RCF, so this also tells
  whether their edges carry over to another detector); lower = edges kept;
* mean luminance of G(day) and the fraction of the day->night gap it covers (day - G) / (day - night);
* night realism: the lead's KID-based measure of ``benchmarks/gan_quality.py`` when it has landed
  (the hook :func:`night_realism` looks for ``gan_quality.night_kid(fake, night)``), else "n/a".

    python benchmarks/gan_zoo.py --threads 1                   # 200 iterations per variant
    python benchmarks/gan_zoo.py --quick --threads 1           # 60 iterations per variant
    python benchmarks/gan_zoo.py --variants cut rcfngan        # a subset
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gan_quality  # noqa: E402  (the AMOS lists, image loading and measures of the single-variant benchmark)

VARIANTS = ("hedngan", "hedgan", "cyclegan", "cut", "rcfgan", "rcfngan")


def night_realism(fake: torch.Tensor, night: torch.Tensor) -> float | None:
    """KID-style realism of G(day) against real night when ``gan_quality`` provides ``night_kid``."""
    kid = getattr(gan_quality, "night_kid", None)
    return None if kid is None else float(kid(fake, night))


def run_variant(variant: str, iterations: int, lists: dict, sets: dict, out: Path, device: str) -> dict:
    from dsa_plugin.checkpoints import load_generator
    from dsa_plugin.gan import load_config, train
    from dsa_plugin.gan.variants import gan_preset

    (day_list, night_list), root = lists["gan_train"], str(gan_quality.AMOS)
    cfg = load_config(gan_preset(variant, tiny=True),
                      {"data.day": str(day_list), "data.night": str(night_list), "data.root": root,
                       "train.max_iterations": iterations, "train.epochs": max(1, iterations),
                       "optim.n_epochs_decay": 0, "train.progress": False, "train.sample_every": 0,
                       "device": device})
    t = time.perf_counter()
    result = train(cfg, out / variant, resume=False)
    seconds = time.perf_counter() - t
    generator = load_generator(result.generator_path)
    its_per_s = result.summary.get("its_per_s") or 0.0  # the training loop only (no image loading / set-up)
    row = {"variant": variant, "iterations": result.iterations, "train_s": round(seconds, 1),
           "s_per_it": round(1.0 / its_per_s, 4) if its_per_s else None}
    for name, (day, night) in sets.items():
        m = gan_quality.measure(generator, lists["hed"], day)
        d, n = gan_quality.luma(day), gan_quality.luma(night)
        row[name] = {"edge_l1": round(m["edge_l1"], 4), "fake_luma": round(m["fake_luma"], 4),
                     "gap_done": round((d - m["fake_luma"]) / (d - n), 3), "kid": night_realism(m["fake"], night)}
    return row


def print_table(rows: list[dict], init: dict) -> None:
    print(f"{'variant':<10}{'s/it':>7}{'edgeL1 train':>14}{'edgeL1 eval':>13}{'G(day) luma':>13}"
          f"{'gap done':>10}{'gap eval':>10}{'KID':>7}")
    print(f"{'(init G)':<10}{'':>7}{init['gan_train']:>14.4f}{init['eval']:>13.4f}")
    for r in rows:
        tr, ev = r["gan_train"], r["eval"]
        kid = "n/a" if tr["kid"] is None else f"{tr['kid']:.3f}"
        print(f"{r['variant']:<10}{r['s_per_it']:>7.3f}{tr['edge_l1']:>14.4f}{ev['edge_l1']:>13.4f}"
              f"{tr['fake_luma']:>13.3f}{tr['gap_done']:>10.2f}{ev['gap_done']:>10.2f}{kid:>7}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="60 iterations per variant")
    p.add_argument("--iterations", type=int, default=None, help="iterations per variant (default 200)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/gan_zoo")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if not (gan_quality.AMOS / "labels.csv").is_file():
        print(json.dumps({"benchmark": "gan_zoo", "skipped": True, "reason": f"no AMOS photos at {gan_quality.AMOS}"}))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from dsa_plugin.gan import load_config
    from dsa_plugin.gan.networks import build_generator, build_hed

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    iterations = args.iterations or (60 if args.quick else 200)
    lists = {role: gan_quality.write_lists(out, role) for role in ("gan_train", "eval")}
    base = load_config("hedngan-tiny")
    short, crop = base.data.resize_short, base.data.crop_size
    sets = {role: tuple(gan_quality.load_images(path, short, crop) for path in lists[role]) for role in lists}
    lists["hed"] = build_hed(base).eval()
    init_g = build_generator(base)  # every tiny preset's G starts from the same seed; norms differ, so indicative
    init = {role: gan_quality.measure(init_g, lists["hed"], sets[role][0])["edge_l1"] for role in sets}
    rows = [run_variant(v, iterations, lists, sets, out, args.device) for v in args.variants]
    import platform
    print(f"GAN zoo on AMOS gan_train: {iterations} iterations per variant (batch 2, 64 px), "
          f"{torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}")
    print_table(rows, init)
    print(json.dumps({"benchmark": "gan_zoo", "iterations": iterations, "threads": torch.get_num_threads(),
                      "rows": rows, "edge_l1_init": init}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
