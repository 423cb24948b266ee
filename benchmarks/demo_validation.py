#!/usr/bin/env python
"""Compare finished `dsa demo` runs on extra validation places: how GAN settings are chosen.

The demo's 6 validation places are few: three GAN settings scored 66.9 / 65.3 / 62.5 night→day
there while the held-out places said 56.9 / 64.0 / 51.8. This script renders ``--places`` further
street scenes (seed ``--scene-seed``: places that neither training nor the demo's evaluation
uses), evaluates every fine-tuned network of each given demo output folder on them with the test
settings its checkpoint records (and with the other CLAHE setting, for the controls), and prints
per folder: each arm's mean night→day mAP, the strongest control and ``dsa`` − that control per
fine-tuning seed. The frozen VGG16 trunk is shared by all networks (computed once per image).

    python benchmarks/demo_validation.py dsa-demo-a dsa-demo-b --places 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="dsa demo output folders (the scenes, vgg16 network)")
    p.add_argument("--places", type=int, default=40)
    p.add_argument("--scene-seed", type=int, default=7, help="scene seed of the extra places (the demo uses 0)")
    p.add_argument("--gan-seed", type=int, default=0, help="the GAN seed whose nights/dsa networks are compared")
    p.add_argument("--out", default="runs/demo_validation")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    from dsa_plugin.demo.data import SceneSpec, write_scene_data
    from dsa_plugin.demo.runs import build_net, evaluate_net
    from dsa_plugin.demo.settings import DemoSettings, torch_threads
    from dsa_plugin.models.checkpoint_files import load_checkpoint
    from dsa_plugin.models.checkpoints import extract_state_dict

    folder = Path(args.out) / f"scenes-seed{args.scene_seed}-{args.places}"
    if not (folder / "eval" / "labels.csv").is_file():
        write_scene_data(folder, SceneSpec(train_places=2, val_places=0, eval_places=args.places, seed=args.scene_seed))
    folder = folder / "eval"
    net = build_net(DemoSettings(), 0)  # one memoised frozen trunk for every network below
    report = {}
    with torch_threads(2):
        for run in map(Path, args.runs):
            arms: dict[str, dict[str, list[float]]] = {}
            for ckpt_path in sorted((run / "models").glob("*_seed*.pth")):
                label = ckpt_path.stem.rsplit("_seed", 1)[0]
                if "-gan" in label and not label.endswith(f"-gan{args.gan_seed}"):
                    continue
                ckpt = load_checkpoint(ckpt_path)
                net.load_state_dict(extract_state_dict(ckpt))
                test = ckpt["network_params"]["runtime"]["test"]
                other = {**test, "clahe": not test["clahe"]}
                for name, setting in ((label, test), (f"{label} (other test setting)", other)):
                    if name != label and not label.startswith("baseline"):
                        continue
                    scores = evaluate_net(net, folder, setting, "cpu")
                    arms.setdefault(name, {"night->day": [], "day->day": []})
                    for key in ("night->day", "day->day"):
                        arms[name][key].append(100 * scores[key]["map"])
            means = {name: statistics.fmean(v["night->day"]) for name, v in arms.items()}
            control = max((n for n in means if n.startswith("baseline")), key=means.get)
            dsa = next(n for n in arms if n.startswith("dsa"))
            gains = [d - c for d, c in zip(arms[dsa]["night->day"], arms[control]["night->day"])]
            report[str(run)] = {"means": means, "control": control, "dsa_minus_control": gains}
            print(f"{run}: " + ", ".join(f"{n} {m:.1f}" for n, m in means.items()))
            print(f"  strongest control: {control}; {dsa} − control per seed "
                  + " / ".join(f"{g:+.1f}" for g in gains) + f" (mean {statistics.fmean(gains):+.1f})")
    print(json.dumps({"benchmark": "demo_validation", "places": args.places, "scene_seed": args.scene_seed,
                      "threads": torch.get_num_threads(), "runs": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
