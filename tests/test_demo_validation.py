"""benchmarks/demo_validation.py: the validation sets it builds never read evaluation places."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("demo_validation", ROOT / "benchmarks" / "demo_validation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, rows: list[tuple[str, ...]], header: str) -> None:
    """A labels.csv and, for each row, a stand-in image file holding its stem."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    for row in rows:
        (path.parent / row[0]).parent.mkdir(parents=True, exist_ok=True)
        (path.parent / row[0]).write_text(Path(row[0]).stem)


def _run(tmp_path: Path, source: Path, name: str) -> Path:
    run = tmp_path / name
    val = [("images/n1.jpg", "night", "v", "val"), ("images/d1.jpg", "day", "v", "val")]
    _write(run / "data" / "val" / "labels.csv", val, "file,domain,place_id,role")
    (run / "summary.json").write_text(json.dumps({"settings": {"data": str(source)}}))
    return run


def test_distractors_are_training_day_photos_and_never_evaluation_webcams(bench, tmp_path):
    source = tmp_path / "photos"
    _write(source / "labels.csv", [
        ("day/a1.jpg", "day", "a", "gan_train"), ("night/a2.jpg", "night", "a", "gan_train"),
        ("day/v1.jpg", "day", "v", "gan_train"),  # a validation webcam: already in the run's val set
        ("day/e1.jpg", "day", "e", "eval"), ("night/e2.jpg", "night", "e", "eval"),
    ], "file,domain,place_id,role")
    runs = [str(_run(tmp_path, source, "r1")), str(_run(tmp_path, source, "r2"))]
    folder = bench.distractor_folder(runs, tmp_path / "out")
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    assert [(r["domain"], r["place_id"]) for r in rows] == [("night", "v"), ("day", "v"), ("day", "a")]
    assert [(folder / r["file"]).read_text() for r in rows] == ["n1", "d1", "a1"]  # copies inside the folder


def test_distractors_need_runs_of_one_folder(bench, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for s in (a, b):
        _write(s / "labels.csv", [("day/x.jpg", "day", "x", "gan_train")], "file,domain,place_id,role")
    with pytest.raises(SystemExit, match="one folder"):
        bench.distractor_folder([str(_run(tmp_path, a, "r1")), str(_run(tmp_path, b, "r2"))], tmp_path / "out")


def test_compare_takes_the_stronger_control_and_pairs_by_seed(bench):
    arms = {"baseline": {"night->day": [50.0, 52.0]}, "baseline (other test setting)": {"night->day": [60.0, 58.0]},
            "dsa-gan0": {"night->day": [61.0, 57.0]}, "dsa-gan1": {"night->day": [59.0, 63.0]}}
    out = bench.compare(arms)
    assert out["control"] == "baseline (other test setting)"
    assert out["dsa_minus_control"] == {"dsa-gan0": [1.0, -1.0], "dsa-gan1": [-1.0, 5.0]}
