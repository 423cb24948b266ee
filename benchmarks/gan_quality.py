#!/usr/bin/env python
"""Does a short HEDN GAN run learn day->night on real photos while keeping the edges?

Trains the ``tiny`` preset (or ``--config``) on the AMOS day/night webcam photos of role
``gan_train`` (../shared/data/amos-daynight), then compares the generator before training
(baseline: the initial weights, same run) and after it, on the training day images:

* mean luminance (Rec. 601 luma of the [0, 1] RGB) of day, real night and G(day), and the
  fraction of the day->night gap that G(day) covers: (day - G(day)) / (day - night);
* edge L1 = mean |HED(G(day)) - HED(day)| with the frozen teacher HED (sigmoid edges).

Pass: the fraction is >= 0.5 and the edge L1 is below its value at initialisation. The held-out
``eval`` places are reported too. Writes a sample grid (day | G(day) | night | HED(day) | HED(G(day))).

    python benchmarks/gan_quality.py --quick          # 100 iterations (< 1 min on 2 cores)
    python benchmarks/gan_quality.py                  # 300 iterations
"""

from __future__ import annotations

import argparse
import csv
import json
import os
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100 iterations")
    p.add_argument("--iterations", type=int, default=None, help="training iterations (default 300, quick 100)")
    p.add_argument("--config", default="tiny", help="preset or YAML (default tiny)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/gan_quality", help="output folder (training run + grid)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--set", nargs="*", default=[], metavar="key=value", help="extra config overrides")
    args = p.parse_args(argv)
    if not (AMOS / "labels.csv").is_file():
        print(f"AMOS day/night photos not found at {AMOS} (set DSA_AMOS_DIR)")
        print(json.dumps({"benchmark": "gan_quality", "skipped": True}))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from dsa_plugin.gan import load_config, train
    from dsa_plugin.gan.networks import build_generator, build_hed
    from dsa_plugin.gan.samples import sample_grid, save_png
    from dsa_plugin.models.checkpoints import load_generator

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    iterations = args.iterations or (100 if args.quick else 300)
    day_list, night_list = write_lists(out, "gan_train")
    eval_day, eval_night = write_lists(out, "eval")
    cfg = load_config(args.config, {"data.day": str(day_list), "data.night": str(night_list), "data.root": str(AMOS),
                                    "train.max_iterations": iterations, "train.epochs": max(1, iterations),
                                    "optim.n_epochs_decay": 0, "train.progress": False, "device": args.device})
    cfg = load_config(cfg, args.set)
    short, crop = cfg.data.resize_short or 2 * cfg.data.crop_size, cfg.data.crop_size
    sets = {"gan_train": (load_images(day_list, short, crop), load_images(night_list, short, crop)),
            "eval": (load_images(eval_day, short, crop), load_images(eval_night, short, crop))}
    hed = build_hed(cfg).eval()  # == the frozen teacher of the run (same weights / seed)
    g0 = build_generator(cfg)

    t = time.perf_counter()
    result = train(cfg, out / "run", resume=False)
    train_s = time.perf_counter() - t
    g1 = load_generator(result.generator_path)

    rows, report = [], {}
    for name, (day, night) in sets.items():
        before, after = measure(g0, hed, day), measure(g1, hed, day)
        d, n = luma(day), luma(night)
        frac = (d - after["fake_luma"]) / (d - n)
        report[name] = {"day_luma": round(d, 4), "night_luma": round(n, 4),
                        "fake_luma_init": round(before["fake_luma"], 4), "fake_luma": round(after["fake_luma"], 4),
                        "darkening_fraction": round(frac, 3), "edge_l1_init": round(before["edge_l1"], 4),
                        "edge_l1": round(after["edge_l1"], 4), "images": len(day)}
        rows.append((name, report[name]))
        if name == "gan_train":
            k = min(4, len(day))
            edge = lambda x: hed(__import__("dsa_plugin.models", fromlist=["hed_preprocess"]).hed_preprocess(x))  # noqa: E731
            with torch.no_grad():
                fake = after["fake"][:k]
                visuals = {"day": day[:k], "fake": fake, "night": night[:k], "edge_day": edge(day[:k]),
                           "edge_fake": edge(fake)}
            grid = save_png(sample_grid(visuals, ("day", "fake", "night", "edge_day", "edge_fake")), out / "grid.png")

    tr = report["gan_train"]
    passed = tr["darkening_fraction"] >= 0.5 and tr["edge_l1"] < tr["edge_l1_init"]
    print(f"HEDN GAN ({args.config}) on AMOS gan_train: {iterations} iterations in {train_s:.1f} s on {args.device}")
    print(
        f"{'images':<10}{'day':>7}{'night':>7}{'G0(day)':>9}{'G(day)':>8}{'gap done':>10}"
        f"{'edgeL1 G0':>11}{'edgeL1 G':>10}"
    )
    for name, r in rows:
        print(f"{name:<10}{r['day_luma']:>7.3f}{r['night_luma']:>7.3f}{r['fake_luma_init']:>9.3f}{r['fake_luma']:>8.3f}"
              f"{r['darkening_fraction']:>10.2f}{r['edge_l1_init']:>11.4f}{r['edge_l1']:>10.4f}")
    print(f"sample grid: {grid}   training grids: {', '.join(str(p) for p in result.sample_paths)}")
    print(f"pass (gap done >= 0.5 and edge L1 below init, gan_train): {passed}")
    print(json.dumps({"benchmark": "gan_quality", "config": args.config, "iterations": iterations,
                      "darkening_fraction": tr["darkening_fraction"], "edge_l1": tr["edge_l1"],
                      "edge_l1_init": tr["edge_l1_init"], "pass": passed, "train_s": round(train_s, 1),
                      "grid": str(grid), "sets": report, "device": args.device, "quick": args.quick}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
