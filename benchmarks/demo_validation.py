#!/usr/bin/env python
"""Compare finished `dsa demo` runs on extra validation places: how GAN settings are chosen.

The demo's 6 validation places are few: three GAN settings scored 66.9 / 65.3 / 62.5 night→day
there while the held-out places said 56.9 / 64.0 / 51.8. This script renders ``--places`` further
street scenes (seed ``--scene-seed``: places that neither training nor the demo's evaluation
uses), evaluates every fine-tuned network of each given demo output folder on them with the test
settings its checkpoint records (and with the other CLAHE setting, for the controls), and prints
per folder: each arm's mean night→day mAP, the strongest control and ``dsa`` − that control per
fine-tuning seed. The frozen VGG16 trunk is shared by all networks (computed once per image).

For ``--data`` runs, whose 2 validation webcams every arm retrieves perfectly, ``--distractors``
evaluates instead on those webcams with the day photos of the other training-role webcams added
to the db (the evaluation webcams stay unread). It is a diagnostic, not a way to choose: on AMOS it
ranks the arms trained with night anchors of those webcams — the oracle's real nights included —
far below the controls (a dark query lands on the webcams they were trained on), the opposite of
the evaluation webcams (docs/demo.md).

    python benchmarks/demo_validation.py dsa-demo-a dsa-demo-b --places 40
    python benchmarks/demo_validation.py amos-a amos-b --distractors --gan-seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import warnings
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="dsa demo output folders (vgg16 network)")
    p.add_argument("--places", type=int, default=40)
    p.add_argument("--scene-seed", type=int, default=7, help="scene seed of the extra places (the demo uses 0)")
    p.add_argument("--distractors", action="store_true",
                   help="--data runs: instead of rendered scenes, the run's validation webcams with the day photos "
                        "of the folder's other gan_train webcams added to the db (night->day only; a diagnostic: "
                        "networks trained on those webcams favour them, see docs/demo.md)")
    p.add_argument("--gan-seeds", default="0", help="comma-separated GAN seeds whose nights/dsa networks are compared")
    p.add_argument("--out", default="runs/demo_validation")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    from dsa_plugin.demo.runs import build_net, evaluate_net
    from dsa_plugin.demo.settings import DemoSettings, torch_threads
    from dsa_plugin.models.checkpoint_files import load_checkpoint
    from dsa_plugin.models.checkpoints import extract_state_dict

    gan_seeds = [int(g) for g in args.gan_seeds.split(",")]
    folder = distractor_folder(args.runs, Path(args.out)) if args.distractors else scene_folder(args)
    net = build_net(DemoSettings(), 0)  # one memoised frozen trunk for every network below
    report = {}
    with torch_threads(2):
        for run in map(Path, args.runs):
            arms: dict[str, dict[str, list[float]]] = {}
            for ckpt_path in sorted((run / "models").glob("*_seed*.pth")):
                label = ckpt_path.stem.rsplit("_seed", 1)[0]
                if "-gan" in label and int(label.rsplit("-gan", 1)[1]) not in gan_seeds:
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
            report[str(run)] = compare(arms)
            print(f"{run}: " + ", ".join(f"{n} {m:.1f}" for n, m in report[str(run)]["means"].items()))
            control = report[str(run)]["control"]
            for dsa, gains in report[str(run)]["dsa_minus_control"].items():
                print(f"  {dsa} − {control} per seed " + " / ".join(f"{g:+.1f}" for g in gains)
                      + f" (mean {statistics.fmean(gains):+.1f})")
    print(json.dumps({"benchmark": "demo_validation", "folder": str(folder), "places": args.places,
                      "scene_seed": None if args.distractors else args.scene_seed,
                      "threads": torch.get_num_threads(), "runs": report}))
    return 0


def compare(arms: dict[str, dict[str, list[float]]]) -> dict:
    """Each arm's mean night→day, the strongest control, and every ``dsa`` arm − it per fine-tuning seed."""
    means = {name: statistics.fmean(v["night->day"]) for name, v in arms.items()}
    control = max((n for n in means if n.startswith("baseline")), key=means.get)
    gains = {name: [d - c for d, c in zip(arms[name]["night->day"], arms[control]["night->day"])]
             for name in arms if name.startswith("dsa")}
    return {"means": means, "control": control, "dsa_minus_control": gains}


def scene_folder(args) -> Path:
    """``--places`` street scenes of ``--scene-seed``, rendered once under ``--out``."""
    from dsa_plugin.demo.data import SceneSpec, write_scene_data

    folder = Path(args.out) / f"scenes-seed{args.scene_seed}-{args.places}"
    if not (folder / "eval" / "labels.csv").is_file():
        write_scene_data(folder, SceneSpec(train_places=2, val_places=0, eval_places=args.places, seed=args.scene_seed))
    return folder / "eval"


def distractor_folder(runs: list[str], out: Path) -> Path:
    """The runs' validation webcams, plus every other ``gan_train`` webcam's day photos as db distractors.

    Two validation webcams make night→day retrieval trivial (every arm scores ~100); with the training
    webcams' day photos in the db a night query has to find its own webcam among ~10. No evaluation
    webcam (role ``eval``) is read. The training webcams' photos also query day→day (they were
    trained on), so only the night→day column means anything here.
    """
    from dsa_plugin.data.labels import read_labels

    datas = {json.loads((Path(r) / "summary.json").read_text())["settings"]["data"] for r in runs}
    if len(datas) != 1 or None in datas:
        raise SystemExit(f"--distractors: the runs must be --data runs of one folder, got {sorted(map(str, datas))}")
    source = Path(datas.pop())
    if not (source / "labels.csv").is_file():
        raise SystemExit(f"--distractors: {source / 'labels.csv'} not found (the runs' --data, as given to "
                         "dsa demo: run this from the folder the demo ran in)")
    val_dir = Path(runs[0]) / "data" / "val"
    _, val_rows = read_labels(val_dir / "labels.csv", ("file", "domain", "place_id"))
    val_places = {r["place_id"] for _, r in val_rows}
    _, rows = read_labels(source / "labels.csv", ("file", "domain", "place_id"))
    distractors = [r for _, r in rows if r.get("role") == "gan_train" and r["domain"] == "day"
                   and r["place_id"] not in val_places]
    folder = out / f"distractors-{source.name}"
    lines = ["file,domain,place_id"]
    picked = [(val_dir / r["file"], r) for _, r in val_rows] + [(source / r["file"], r) for r in distractors]
    for i, (path, row) in enumerate(picked):
        # copies: a labels.csv may only name files inside its folder
        name = Path("images") / f"{i:04d}_{row['domain']}_{Path(row['file']).name}"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / name)
        lines.append(f"{name.as_posix()},{row['domain']},{row['place_id']}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


if __name__ == "__main__":
    sys.exit(main())
