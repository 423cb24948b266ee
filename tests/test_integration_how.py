"""HOW's real training through `dsa how-train` (1 epoch, resnet18, random weights, CPU, tiny db).

Needs HOW's source ($HOW_SRC or an importable `how`), cirtorch, asmk and faiss; skips otherwise.
Nothing is downloaded: the db is generated here, `pretrained: False`, validation is off, and the
files cirtorch's `download_train` looks for exist.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from dsa_plugin.data import make_tiny_sfm_db
from dsa_plugin.integrations.how import checkpoints as how_checkpoints
from dsa_plugin.integrations.how import cli as how_cli
from dsa_plugin.integrations.how import locate as how_locate
from dsa_plugin.integrations.how import transforms as how_transforms
from dsa_plugin.integrations.how import tuples as how_tuples

for _module in ("cirtorch", "asmk", "faiss"):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"HOW integration needs '{_module}'", allow_module_level=True)

try:
    HOW_ROOT = how_locate.locate_how()
except how_locate.HOWIntegrationError as _err:
    pytest.skip(f"HOW source not available: {_err}", allow_module_level=True)

# Import HOW now: its progress printer binds sys.stdout at import, and a test's capsys stream is closed later.
how_locate.import_how(HOW_ROOT)

DB_NAME = "retrieval-SfM-120k"

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("how_data")
    make_tiny_sfm_db(root, DB_NAME, clusters=7, images_per_cluster=4, size=(48, 64), seed=3)
    # cirtorch's download_train (run by HOW's demo) fetches whatever of these is missing.
    train = root / "train"
    (train / DB_NAME / f"{DB_NAME}-whiten.pkl").write_bytes(pickle.dumps({}))
    (train / "retrieval-SfM-30k" / "ims").mkdir(parents=True)
    (train / "retrieval-SfM-30k" / "retrieval-SfM-30k-whiten.pkl").write_bytes(pickle.dumps({}))
    return root


def _write_params(path: Path, data_root: Path, exp_root: Path, dsa: dict | None = None, **extra) -> Path:
    params = {
        # HOW's own eccv20 recipe, then tiny sizes; an absolute template path is joined as is by HOW.
        "__template__": str(HOW_ROOT / "examples" / "params" / "eccv20" / "train_how_r18.yml"),
        "demo_train": {"data_folder": str(data_root), "exp_folder": str(exp_root), "gpu_id": None},
        "training": {
            "epochs": 2,
            "initialize_dim_reduction": {"images": 20},
            "dataset": {"imsize": 64, "nnum": 2, "qsize": 6, "poolsize": 20},
            "loader": {"batch_size": 2},
        },
        "validation": {"local_descriptor": {"frequency": None, "datasets": []}},
        "model": {"pretrained": False, "dim_reduction": {"dim": 16}, "runtime": {"image_size": 64, "features_num": 20}},
    }
    if dsa is not None:
        params["dsa"] = dsa
    params.update(extra)
    path.write_text(yaml.safe_dump(params))
    return path


def _tiny_generator(path: Path) -> Path:
    from dsa_plugin.models import ResnetGenerator
    from dsa_plugin.models.checkpoints import save_network

    torch.manual_seed(0)
    save_network(path, ResnetGenerator(ngf=4, n_blocks=1))
    return path


def _is_night_reference(name: str, ratio: float) -> bool:
    # docs/reference.md §md5-selection, written out: last 4 hex digits of md5(name) / 16^4 < ratio.
    return int(hashlib.md5(name.encode("utf-8")).hexdigest()[-4:], 16) / 65536 < ratio


def _train_cids(data_root: Path) -> list[str]:
    with open(data_root / "train" / DB_NAME / f"{DB_NAME}.pkl", "rb") as f:
        return pickle.load(f)["train"]["cids"]


def test_how_training_with_dsa(tmp_path, data_root, monkeypatch, capsys):
    gen = _tiny_generator(tmp_path / "generator.pth")
    dsa = {"generator": str(gen), "night_ratio": 0.25, "diverse_anchors": True, "qpool_size": 10, "clahe": True}
    _write_params(tmp_path / "base.yml", data_root, tmp_path / "exp", dsa=dsa)
    # The run's file inherits HOW's keys and the `dsa:` section from base.yml and overrides one key.
    (tmp_path / "run.yml").write_text(yaml.safe_dump({"__template__": "base.yml", "dsa": {"night_ratio": 0.5}}))

    clahe_calls = []
    call = how_transforms.ClaheCompose.__call__
    monkeypatch.setattr(
        how_transforms.ClaheCompose, "__call__", lambda self, img: clahe_calls.append(1) or call(self, img)
    )

    argv = [str(tmp_path / "run.yml"), "--how-src", str(HOW_ROOT), "--num-workers", "0", "--epochs", "1"]
    assert how_cli.main(argv) == 0
    out = capsys.readouterr()
    print(out.out[-3000:], out.err[-2000:])

    exp = tmp_path / "exp" / "run"
    # HOW's own checkpoint, readable with torch's safe loading.
    ckpt = how_checkpoints.load_how_checkpoint(exp / "epochs" / "model_epoch1.pth")
    assert ckpt["epoch"] == 1 and ckpt["_version"] == "how/2020"
    assert any(k.startswith("features.") for k in ckpt["state_dict"])
    assert (exp / "epochs" / "model_best.pth").is_file()

    saved = yaml.safe_load((exp / "train_params.yml").read_text())
    assert saved["training"]["epochs"] == 1  # HOW's CLI option went through
    assert saved["dsa"] == {**dsa, "night_ratio": 0.5}

    report = json.loads((exp / how_tuples.STATS_FILE).read_text())
    assert report["config"]["night_ratio"] == 0.5 and report["config"]["clahe"] is True
    (epoch,) = report["epochs"]
    assert epoch["epoch"] == 1
    cids = _train_cids(data_root)
    # Night anchors: exactly this epoch's anchors that the md5 rule selects, and served in training.
    expected_night = [q for q in epoch["qidxs"] if _is_night_reference(cids[q], 0.5)]
    assert epoch["night_anchor_indices"] == expected_night
    assert epoch["night_anchors"] == len(expected_night) > 0
    assert epoch["night_images_served"] == len(expected_night)
    # Diverse anchors: mined from a 10-pair pool by the diverse sampler.
    assert epoch["diverse_anchors"] is True and epoch["diverse"] is True
    assert epoch["qpool_size"] == 10 and len(epoch["qidxs"]) == 6
    assert len(epoch["nidxs"]) == 6 and all(len(n) == 2 for n in epoch["nidxs"])
    # CLAHE ran inside HOW's transform (PCA initialisation over the first 20 training images).
    assert len(clahe_calls) >= 20
    assert "DSA: 6 tuples" in out.err


def _record_cirtorch_tuples(monkeypatch) -> list:
    from cirtorch.datasets.traindataset import TuplesDataset

    records = []
    original = TuplesDataset.create_epoch_tuples

    def spy(self, net):
        avg = original(self, net)
        records.append((list(map(int, self.qidxs)), list(map(int, self.pidxs)),
                        [list(map(int, n)) for n in self.nidxs], avg))
        return avg

    monkeypatch.setattr(TuplesDataset, "create_epoch_tuples", spy)
    return records


def _run_hows_own(params: Path, monkeypatch) -> None:
    """HOW's demo_how with only the fixes it cannot run without, written here independently."""
    import matplotlib.axes
    from cirtorch.layers.loss import ContrastiveLoss

    from dsa_plugin.integrations import compat

    modules = how_locate.import_how(HOW_ROOT)
    monkeypatch.setattr(modules["train"], "initialize_loss", lambda loss, device: ContrastiveLoss(**loss).to(device))
    monkeypatch.setattr(modules["how_net"], "NUM_WORKERS", 0)
    grid = matplotlib.axes.Axes.grid
    monkeypatch.setattr(matplotlib.axes.Axes, "grid",
                        lambda self, b=None, **kw: grid(self, **({"visible": b} if b is not None else {}), **kw))
    compat.apply_runtime_fixes()
    demo = how_locate.load_demo(HOW_ROOT)
    with compat.cuda_noop():
        demo.main(["train", str(params), "--epochs", "1"])


def test_without_dsa_section_equals_hows_own(tmp_path, data_root, monkeypatch):
    records = _record_cirtorch_tuples(monkeypatch)
    params = _write_params(tmp_path / "plain.yml", data_root, tmp_path / "exp")

    assert how_cli.main([str(params), "--how-src", str(HOW_ROOT), "--num-workers", "0", "--epochs", "1",
                         "-e", "wrapper"]) == 0
    own_params = _write_params(tmp_path / "own.yml", data_root, tmp_path / "exp")
    _run_hows_own(own_params, monkeypatch)

    assert len(records) == 2
    assert records[0] == records[1]  # same anchors, positives, hard negatives, average distance
    ours = how_checkpoints.load_how_checkpoint(tmp_path / "exp" / "wrapper" / "epochs" / "model_epoch1.pth")
    hows = how_checkpoints.load_how_checkpoint(tmp_path / "exp" / "own" / "epochs" / "model_epoch1.pth")
    assert ours["scores"]["train_loss"] == hows["scores"]["train_loss"]
    assert ours["state_dict"].keys() == hows["state_dict"].keys()
    for key in ours["state_dict"]:
        assert torch.equal(ours["state_dict"][key], hows["state_dict"][key]), key
    assert not (tmp_path / "exp" / "wrapper" / how_tuples.STATS_FILE).exists()


@pytest.mark.parametrize(
    "dsa, words",
    [
        ({"night_ration": 0.5}, ["night_ration", "valid keys", "similar_include"]),
        ({"diverse_anchors": "yes"}, ["diverse_anchors", "bool", "'yes'"]),
        ({"generator": "/no/such/generator.pth"}, ["generator file not found", "/no/such/generator.pth"]),
    ],
)
def test_bad_dsa_section_fails_before_training(tmp_path, data_root, capsys, dsa, words):
    params = _write_params(tmp_path / "bad.yml", data_root, tmp_path / "exp", dsa=dsa)
    assert how_cli.main([str(params), "--how-src", str(HOW_ROOT), "--num-workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "bad.yml: dsa" in err
    for word in words:
        assert word in err
    assert not (tmp_path / "exp").exists()  # HOW's demo never started


class _Payload:
    """Unpickling it creates ``marker`` (it names ``os.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_hows_pickle_loads_go_through_the_restricted_loader(tmp_path):
    """HOW's load_dataset unpickles any dataset name with a "/" in it: inside how_runtime it is restricted."""
    from how.utils import data_helpers

    from dsa_plugin.core.safe_pickle import UnsafePickleError
    from dsa_plugin.integrations.how.runtime import how_runtime

    modules = how_locate.import_how(HOW_ROOT)
    marker = tmp_path / "PAYLOAD-RAN"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [], "x": _Payload(marker)}))
    good = tmp_path / "val.pkl"
    good.write_bytes(pickle.dumps({"imlist": ["a.jpg"], "qimlist": ["b.jpg"], "gnd": [{"ok": [0]}]}, protocol=2))
    with how_runtime(modules, None):
        with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
            data_helpers.load_dataset(str(evil))
        assert data_helpers.load_dataset(str(good)) == (["a.jpg"], ["b.jpg"], None, [{"ok": [0]}])
    assert not marker.exists()
    assert data_helpers.pickle is pickle  # restored after the run


def test_payload_in_validation_datasets_never_runs(tmp_path, data_root, monkeypatch, capsys):
    """The real HOW run: validation after epoch 1 loads the payload, which is refused (no file appears).

    The up-front check (check_validation_pickles) is switched off here so that HOW itself reaches
    the pickle; with it on, the run is refused before HOW starts (tests/test_bad_input.py).
    """
    marker = tmp_path / "PAYLOAD-RAN"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [], "x": _Payload(marker)}))
    monkeypatch.setattr(how_cli, "check_validation_pickles", lambda params: None)
    params = _write_params(tmp_path / "evil.yml", data_root, tmp_path / "exp", validation={
        "global_descriptor": {"frequency": 1, "datasets": [str(evil)]},
        "local_descriptor": {"frequency": None, "datasets": []}})
    code = how_cli.main([str(params), "--how-src", str(HOW_ROOT), "--num-workers", "0", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "evil.pkl" in err and "refusing to unpickle" in err and "Traceback" not in err
    assert not marker.exists()
