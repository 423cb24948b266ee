"""cirtorch's real training loop (its own ``main()``) with Dark Side Augmentation, on CPU.

Skips when cirtorch is not importable. Install it with
``git clone https://github.com/filipradenovic/cnnimageretrieval-pytorch && pip install --no-deps -e <clone>``;
set ``CIRTORCH_SRC=<clone>`` to also check ``patches/cirtorch-train.patch`` against the source.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("cirtorch.examples.train", reason="cirtorch (cnnimageretrieval-pytorch) is not installed")

from dsa_plugin.integrations import compat  # noqa: E402
from dsa_plugin.integrations.cirtorch import cli as cirtorch_cli  # noqa: E402
from dsa_plugin.integrations.cirtorch import hooks as cirtorch_hooks  # noqa: E402

pytestmark = [pytest.mark.toolkit, pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[1]
PATCH = REPO / "patches" / "cirtorch-train.patch"
RATIO = 0.5
NNUM = 2
TUPLE = 2 + NNUM


# ------------------------------------------------------------------------------------ fixtures




@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data root: tiny retrieval-SfM db, a tiny random generator, a night cache, a tiny oxford5k."""
    from dsa_plugin.data import make_tiny_sfm_db
    from dsa_plugin.data.sfm import db_paths, load_sfm_db
    from dsa_plugin.models import ResnetGenerator
    from dsa_plugin.models.checkpoints import load_generator, save_network
    from dsa_plugin.night.build import build_night_cache
    from dsa_plugin.night.translator import NightTranslator

    root = tmp_path_factory.mktemp("cirtorch_world")
    make_tiny_sfm_db(root, clusters=12, images_per_cluster=3)  # train: 9 clusters, 27 images; val: 3, 9
    torch.manual_seed(0)
    generator = root / "generator.pth"
    save_network(generator, ResnetGenerator(ngf=4, n_blocks=1))
    pkl, ims = db_paths(root)
    train, val = load_sfm_db(pkl, "train", ims), load_sfm_db(pkl, "val", ims)
    # The cache holds the train anchors only: val anchors are translated online.
    cache = root / "night-cache"
    build_night_cache(cache, train.images, NightTranslator(load_generator(generator)), ratio=RATIO, image_size=64,
                      fmt="pt", workers=0, progress=False)
    test_dir = root / "test" / "oxford5k"
    (test_dir / "jpg").mkdir(parents=True)
    names = []
    for i, path in enumerate(val.images):
        names.append(f"im{i}")
        shutil.copy(path, test_dir / "jpg" / f"im{i}.jpg")
    gnd = [{"bbx": [0, 0, 40, 30], "junk": [],
            "ok": [j for j in range(len(names)) if val.clusters[j] == val.clusters[q] and j != q]} for q in (0, 3)]
    with open(test_dir / "gnd_oxford5k.pkl", "wb") as f:
        pickle.dump({"imlist": names, "qimlist": [names[0], names[3]], "gnd": gnd}, f)
    night = [_md5_night(n) for n in train.names]
    assert any(night) and not all(night)  # both kinds among the train images
    return {"root": root, "generator": generator, "cache": cache, "train": train, "val": val}


def _md5_night(name: str, label: str = "anc") -> bool:
    """The selection rule, literally (docs/reference.md §md5-selection)."""
    return label.startswith("anc") and int(hashlib.md5(name.encode()).hexdigest()[-4:], 16) / 65536 < RATIO


def _common(world, export) -> list[str]:
    return [str(export), "--arch", "squeezenet1_1", "--not-pretrained", "--epochs", "1", "--neg-num", str(NNUM),
            "--query-size", "6", "--pool-size", "20", "--image-size", "64", "--workers", "0", "--batch-size", "2",
            "--print-freq", "100"]


def _runtime(world) -> list[str]:
    return ["--dsa-data-root", str(world["root"]), "--dsa-no-download"]


def _all_dsa_flags(world) -> list[str]:
    return ["--dsa-generator", str(world["generator"]), "--dsa-night-ratio", str(RATIO), "--dsa-night-label", "anc",
            "--dsa-night-cache", str(world["cache"]), "--dsa-diverse-anchors", "--dsa-qpool-size", "12",
            "--dsa-similar-exclude", "0.2", "--dsa-similar-include", "0.8", "--dsa-clahe", "--dsa-device", "cpu",
            "--dsa-seed", "3"]


# ------------------------------------------------------------------------------------ independent checks


def _day_input(path: str, mean_std) -> torch.Tensor:
    """What a day image should look like at the network: PIL thumbnail(64, LANCZOS) -> [0,1] -> CLAHE -> normalise."""
    from PIL import Image

    from dsa_plugin.transforms import clahe

    with Image.open(path) as img:
        img = img.convert("RGB")
    img.thumbnail((64, 64), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()[None] / 255.0
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std)
    return (clahe(x) - mean) / std


def _night_input(path: str, generator, mean_std) -> torch.Tensor:
    """The same image through the generator first (0.5/0.5 in, tanh out -> [0,1]), then CLAHE and normalise."""
    from PIL import Image

    from dsa_plugin.transforms import clahe

    with Image.open(path) as img:
        img = img.convert("RGB")
    img.thumbnail((64, 64), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()[None] / 255.0
    with torch.no_grad():
        y = (generator(x * 2 - 1) * 0.5 + 0.5).clamp(0, 1)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std)
    return (clahe(y) - mean) / std


def _distance(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x - y).abs().mean().item() if x.shape == y.shape else math.inf


def _in_diverse_band(desc: torch.Tensor, picks: list[int], exclude: float, include: float) -> None:
    """Every pick after the first lies in the [include, exclude] quantile band of max-similarity, literally."""
    sims = (desc.double() @ desc.double().t()).tolist()
    pool = len(sims)
    assert picks[0] == 0 and len(set(picks)) == len(picks)
    for k in range(1, len(picks)):
        chosen = picks[:k]
        running = [math.inf if i in chosen else max(sims[i][c] for c in chosen) for i in range(pool)]
        ordered = sorted(running)
        valid = pool - k
        upper = max(int(valid * (1 - exclude)), 1)
        lower = min(int(valid * (1 - include)), upper - 1)
        value = running[picks[k]]
        assert ordered[lower] - 1e-5 <= value <= ordered[upper - 1] + 1e-5, (k, lower, upper, value, ordered)


# ------------------------------------------------------------------------------------ the DSA run


def _spies(monkeypatch):
    """Record what a cirtorch run does: network inputs in training mode, tuples served, anchor-pool
    descriptors, diverse picks and the CLAHE test transforms."""
    from cirtorch.networks.imageretrievalnet import ImageRetrievalNet

    from dsa_plugin.mining import DiverseAnchorSampler
    from dsa_plugin.training.tuples import NightTuplesDataset

    seen: list[torch.Tensor] = []  # every input the network gets in training mode, in order
    forward = ImageRetrievalNet.forward

    def spy_forward(self, x):
        if self.training:
            seen.append(x.detach().clone())
        return forward(self, x)

    served: list[tuple[str, int]] = []
    getitem = NightTuplesDataset.__getitem__

    def spy_getitem(self, index):
        served.append((self.mode, index))
        return getitem(self, index)

    pools: dict[str, tuple[list[int], torch.Tensor]] = {}
    extract = NightTuplesDataset.extract

    def spy_extract(self, indices, label, *a, **k):
        vecs = extract(self, indices, label, *a, **k)
        if label == "anc-pool-mine":
            pools[self.mode] = (list(indices), vecs.detach().clone())
        return vecs

    picks: list[tuple[torch.Tensor, list[int]]] = []
    sample = DiverseAnchorSampler.__call__

    def spy_sample(self, descriptors, num, *a, **k):
        out = sample(self, descriptors, num, *a, **k)
        picks.append((descriptors.detach().clone(), out.tolist()))
        return out

    clahe_transforms = []
    with_clahe = cirtorch_hooks._with_clahe

    def spy_with_clahe(transform, grid=8):
        out = with_clahe(transform, grid)
        clahe_transforms.append(out)
        return out

    monkeypatch.setattr(ImageRetrievalNet, "forward", spy_forward)
    monkeypatch.setattr(NightTuplesDataset, "__getitem__", spy_getitem)
    monkeypatch.setattr(NightTuplesDataset, "extract", spy_extract)
    monkeypatch.setattr(DiverseAnchorSampler, "__call__", spy_sample)
    monkeypatch.setattr(cirtorch_hooks, "_with_clahe", spy_with_clahe)

    return seen, served, pools, picks, clahe_transforms


def test_dsa_cirtorch_train_every_flag(world, tmp_path, monkeypatch, capsys):
    from dsa_plugin.models.checkpoints import load_generator
    from dsa_plugin.training.tuples import NightTuplesDataset

    seen, served, pools, picks, clahe_transforms = _spies(monkeypatch)
    export = tmp_path / "export"
    # --test-freq 2 with one epoch: cirtorch's test() runs once, before training (with CLAHE).
    argv = [*_common(world, export), "--test-datasets", "oxford5k", "--test-freq", "2",
            *_runtime(world), *_all_dsa_flags(world)]
    run = cirtorch_cli.run_training(argv)
    out = capsys.readouterr().out

    train_ds, val_ds = run.datasets
    assert isinstance(train_ds, NightTuplesDataset) and (train_ds.mode, val_ds.mode) == ("train", "val")
    assert run.config.generator == str(world["generator"]) and run.config.night_cache == str(world["cache"])

    # 1. The anchors chosen by the diverse rule were used.
    pool_idx, pool_vecs = pools["train"]
    desc, chosen = picks[0]
    assert torch.equal(desc, pool_vecs.t())
    _in_diverse_band(desc, chosen, 0.2, 0.8)
    assert train_ds.qidxs == [pool_idx[p] for p in chosen]
    train_served = [train_ds.qidxs[i] for mode, i in served if mode == "train"]
    assert sorted(train_served) == sorted(train_ds.qidxs) and len(train_served) == 6

    # 2. The hash-selected anchors reached the network as night images: count them at its input.
    generator = load_generator(world["generator"])
    mean_std = train_ds.mean_std
    assert len(seen) == 6 * TUPLE
    counted = 0
    for k, index in enumerate(i for mode, i in served if mode == "train"):
        anchor = train_ds.qidxs[index]
        path = train_ds.images[anchor]
        d_day = _distance(seen[k * TUPLE], _day_input(path, mean_std))
        d_night = _distance(seen[k * TUPLE], _night_input(path, generator, mean_std))
        assert min(d_day, d_night) < 1e-2, (anchor, d_day, d_night)
        is_night_at_net = d_night < d_day
        assert is_night_at_net == _md5_night(train_ds.names[anchor]), anchor
        counted += is_night_at_net
        # Positives and negatives reach the network as day images (CLAHE'd), never night.
        others = [train_ds.pidxs[index], *train_ds.nidxs[index]]
        for j, other in enumerate(others, start=1):
            assert _distance(seen[k * TUPLE + j], _day_input(train_ds.images[other], mean_std)) < 1e-2
    expected = sum(_md5_night(train_ds.names[a]) for a in train_served)
    assert 0 < expected < len(train_served)
    assert counted == expected == train_ds.night_served
    print(f"DSA check: diverse picks {chosen} of a {len(pool_idx)}-pair pool -> anchors {train_ds.qidxs}; "
          f"night anchors at the network input {counted}/{len(train_served)} (md5 rule {expected}, "
          f"loader counter {train_ds.night_served}); night cache hits {train_ds.night_source().stats['cached']}")
    assert train_ds.night_source().stats["cached"] > 0  # train anchors came from the night cache
    assert val_ds.night_served == sum(_md5_night(val_ds.names[val_ds.qidxs[i]]) for mode, i in served if mode == "val")
    assert val_ds.night_source().stats["online"] > 0  # val anchors are not cached: translated online
    assert train_ds.stats["night_anchors_mining"] == sum(_md5_night(train_ds.names[i]) for i in pool_idx)

    # 3. Negatives respect clusters (none from the anchor's cluster, at most one per cluster).
    for ds in (train_ds, val_ds):
        for q, negs in zip(ds.qidxs, ds.nidxs):
            clusters = [ds.clusters[n] for n in negs]
            assert len(negs) == NNUM and len(set(clusters)) == NNUM and ds.clusters[q] not in clusters

    # 4. CLAHE at test time, and checkpoints with the DSA settings in a DSA-named directory.
    assert len(clahe_transforms) == 2  # oxford5k database and queries
    assert type(clahe_transforms[0].transforms[0]).__name__ == "CLAHETransform"
    assert tuple(clahe_transforms[0].transforms[0].grid_size) == (8, 8)  # --dsa-clahe-grid's default
    fingerprint = run.generator_fingerprint
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    tag = f"_dsa_night0.5_anc_g{fingerprint[:8]}_diverse12_0.2-0.8_clahe"
    (export_dir,) = export.iterdir()
    assert export_dir.name.endswith("_imsize64" + tag)
    assert run.checkpoints == [str(export_dir / "model_epoch1.pth.tar")]
    assert (export_dir / "model_best.pth.tar").is_file()
    # --resume is looked up in this folder: the wrapper names it before main() runs, as cirtorch does.
    from dsa_plugin.integrations.cirtorch.args import _export_directory
    from dsa_plugin.integrations.cirtorch.flags import dsa_config_from_args

    parser = cirtorch_cli.build_parser(cirtorch_cli.load_train_module())
    fresh = parser.parse_args(argv)
    dsa_config_from_args(fresh, parser)
    assert _export_directory(fresh, tag) == str(export_dir)
    ckpt = torch.load(export_dir / "model_epoch1.pth.tar", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["meta"]["architecture"] == "squeezenet1_1"
    assert ckpt["dsa"]["config"] == run.config.to_dict() and ckpt["dsa"]["tag"] == tag
    assert ckpt["dsa"]["generator_fingerprint"] == fingerprint
    assert ckpt["dsa"]["stats"]["train"]["night_anchors"] == sum(_md5_night(train_ds.names[q]) for q in train_ds.qidxs)
    assert ">> oxford5k: mAP" in out and "DSA: done" in out


# ------------------------------------------------------------------------------------ no flags = upstream


def _record_upstream_tuples(monkeypatch) -> list:
    from cirtorch.datasets import traindataset

    records: list = []
    create = traindataset.TuplesDataset.create_epoch_tuples

    def spy(self, net):
        result = create(self, net)
        records.append((self.mode, list(map(int, self.qidxs)), list(map(int, self.pidxs)),
                        [list(map(int, n)) for n in self.nidxs]))
        return result

    monkeypatch.setattr(traindataset.TuplesDataset, "create_epoch_tuples", spy)
    return records


def test_without_dsa_flags_the_run_is_cirtorchs_own(world, tmp_path, monkeypatch):
    import cirtorch.datasets.traindataset as traindataset
    import cirtorch.utils.general as general

    records = _record_upstream_tuples(monkeypatch)
    root = str(world["root"])

    # cirtorch's own script, as a user would run it (plus what a CPU-only offline run needs).
    spec = importlib.util.spec_from_file_location("upstream_train", cirtorch_cli.cirtorch_train_script())
    upstream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upstream)
    compat.apply_runtime_fixes()
    for module in (general, traindataset, upstream):
        monkeypatch.setattr(module, "get_data_root", lambda: root)
    monkeypatch.setattr(upstream, "download_train", lambda d: None)
    monkeypatch.setattr(upstream, "download_test", lambda d: None)
    monkeypatch.setattr(upstream, "test", lambda datasets, net: None)
    monkeypatch.setattr(sys, "argv", ["train.py", *_common(world, tmp_path / "upstream")])
    with compat.cuda_noop():
        upstream.main()
    upstream_records = list(records)
    records.clear()

    run = cirtorch_cli.run_training([*_common(world, tmp_path / "wrapper"), *_runtime(world), "--dsa-skip-test"])
    assert not run.config.enabled and run.tag == ""
    assert [type(ds).__name__ for ds in run.datasets] == ["TuplesDataset", "TuplesDataset"]

    assert [r[0] for r in upstream_records] == ["train", "val"]
    assert records == upstream_records  # same anchors, positives and negatives, epoch by epoch
    (up_dir,) = (tmp_path / "upstream").iterdir()
    (wr_dir,) = (tmp_path / "wrapper").iterdir()
    assert up_dir.name == wr_dir.name  # no DSA tag
    a = torch.load(up_dir / "model_epoch1.pth.tar", weights_only=True)
    b = torch.load(wr_dir / "model_epoch1.pth.tar", weights_only=True)
    assert "dsa" not in b and set(a) == set(b)
    assert a["min_loss"] == b["min_loss"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dsa-generator", "/no/such/generator.pth"], "--dsa-generator: file not found: /no/such/generator.pth"),
        (["--dsa-night-ratio", "1.5"], "--dsa-night-ratio must be in [0, 1], got 1.5"),
        (["--dsa-similar-exclude", "0.9", "--dsa-similar-include", "0.1"],
         "--dsa-similar-include (0.1) must be >= --dsa-similar-exclude (0.9)"),
        (["--dsa-generator", "{root}/train/retrieval-SfM-120k/retrieval-SfM-120k.pkl"],
         "is not a day->night generator checkpoint"),
        (["--dsa-night-cache", "{root}/night-cache", "--dsa-night-ratio", "0.25"], "ratio: expected 0.25, found 0.5"),
        (["--test-datasets", "oxford5k,paris6k"], "--dsa-no-download: missing data file(s):"),
    ],
)
def test_bad_input_fails_before_any_data_is_loaded(world, tmp_path, monkeypatch, capsys, extra, message):
    from dsa_plugin.training import tuples

    def no_data(*a, **k):
        raise AssertionError("data was loaded")

    monkeypatch.setattr(tuples.NightTuplesDataset, "__init__", no_data)
    export = tmp_path / "export"
    extra = [e.replace("{root}", str(world["root"])) for e in extra]
    with pytest.raises(SystemExit) as exc:
        cirtorch_cli.main([*_common(world, export), *_runtime(world), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: dsa cirtorch-train" in err and message in err
    assert not export.exists()


def test_yaml_config_with_cli_override(tmp_path):
    """--config supplies cirtorch's and DSA's values; command-line flags win."""
    from dsa_plugin.integrations.cirtorch.config import apply_yaml_defaults

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"directory: {tmp_path / 'from_yaml'}\narch: alexnet\nloss-margin: 0.75\n"
                   "dsa:\n  clahe: true\n  night_ratio: 0.3\n")
    parser = cirtorch_cli.build_parser(cirtorch_cli.load_train_module())
    apply_yaml_defaults(parser, cfg)
    args = parser.parse_args(["--arch", "squeezenet1_1"])
    assert args.directory == str(tmp_path / "from_yaml") and args.arch == "squeezenet1_1"
    assert args.loss_margin == 0.75 and args.dsa_clahe and args.dsa_night_ratio == 0.3


def test_shipped_configs_parse_with_cirtorchs_real_parser():
    from dsa_plugin.integrations.cirtorch.config import apply_yaml_defaults
    from dsa_plugin.integrations.cirtorch.flags import dsa_config_from_args

    for cfg in sorted((REPO / "configs" / "cirtorch").glob("*.yaml")):
        parser = cirtorch_cli.build_parser(cirtorch_cli.load_train_module())
        apply_yaml_defaults(parser, cfg)
        args = parser.parse_args([])
        config = dsa_config_from_args(args, parser, check_files=False)
        assert args.test_whiten == "retrieval-SfM-120k" and args.optimizer == "adam" and args.pool == "gem"
        assert config.diverse_anchors and config.clahe and config.generator.startswith("http://")


# ------------------------------------------------------------------------------------ the patch


def _cirtorch_src() -> Path:
    src = os.environ.get("CIRTORCH_SRC")
    if not src:
        pytest.skip("set CIRTORCH_SRC to a cnnimageretrieval-pytorch clone to check the patch")
    src = Path(src)
    if not (src / "cirtorch" / "examples" / "train.py").is_file():
        pytest.fail(f"CIRTORCH_SRC={src} has no cirtorch/examples/train.py")
    return src


def test_patch_applies_to_cirtorch_source():
    src = _cirtorch_src()
    result = subprocess.run(["git", "apply", "--check", "-v", str(PATCH)], cwd=src, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    added = [ln for ln in PATCH.read_text().splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    assert len(added) <= 8  # a handful of lines


@pytest.mark.slow
def test_patched_script_trains_with_the_flags(world, tmp_path):
    src = _cirtorch_src()
    work = tmp_path / "cirtorch-patched"
    (work / "cirtorch" / "examples").mkdir(parents=True)
    shutil.copy(src / "cirtorch" / "examples" / "train.py", work / "cirtorch" / "examples" / "train.py")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run(["git", "apply", str(PATCH)], cwd=work, check=True)
    export = tmp_path / "export"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, str(work / "cirtorch" / "examples" / "train.py"), *_common(world, export), "--no-val",
           *_runtime(world), "--dsa-skip-test", *_all_dsa_flags(world)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (export_dir,) = export.iterdir()
    assert re.search(r"_imsize64_dsa_night0\.5_anc_g[0-9a-f]{8}_diverse12_0\.2-0\.8_clahe$", export_dir.name)
    ckpt = torch.load(export_dir / "model_epoch1.pth.tar", weights_only=True)
    assert ckpt["dsa"]["config"]["diverse_anchors"] is True and ckpt["dsa"]["stats"]["train"]["night_anchors"] >= 0
    assert "NightTuplesDataset retrieval-SfM-120k-train epoch 0" in result.stdout


# ------------------------------------------------------------------------------------ published embeddings


def _embedding_checkpoint(state_dict, arch: str) -> dict:
    """The gandtr 4-key layout of ``*_embed_<arch>.pth`` (docs/reference.md §checkpoint-format)."""
    return {"type": "SingleNetwork", "frozen": False,
            "network_params": {"model": {"architecture": "cirnet", "cir_architecture": arch, "local_whitening": False,
                                         "pooling": "gem", "pretrained": True, "regional": False, "whitening": False},
                               "runtime": {"wrappers": "cirfaketuplebatch",
                                           "data": {"transforms": "pil2np | apply_clahe:1.0 | totensor | normalize"}}},
            "model_state": state_dict}


@pytest.mark.parametrize("arch", ["vgg16", "resnet101"])
def test_embedding_layout_matches_cirtorchs_network(arch):
    """Key names and shapes of the published embeddings are those of cirtorch's GeM network.

    docs/reference.md §embedding-state-dict.
    """
    from cirtorch.networks.imageretrievalnet import init_network

    from dsa_plugin.models.gem import gem_resnet101, gem_vgg16

    with torch.device("meta"):  # shapes only, nothing allocated
        cir = init_network({"architecture": arch, "pooling": "gem", "pretrained": False})
    ours = (gem_vgg16 if arch == "vgg16" else gem_resnet101)(device="meta")
    cir_shapes = {k: tuple(v.shape) for k, v in cir.state_dict().items()}
    assert cir_shapes == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert len(cir_shapes) == {"vgg16": 27, "resnet101": 625}[arch] and cir_shapes["pool.p"] == (1,)


def test_published_embedding_in_cirtorch_with_clahe_multiscale_whitening(world, tmp_path):
    from dsa_plugin.integrations.cirtorch.eval import PAPER_SCALES, cirtorch_descriptors, load_cirtorch_embedding
    from dsa_plugin.models.gem import gem_vgg16

    torch.manual_seed(0)
    ours = gem_vgg16(device="meta").to_empty(device="cpu")  # random He init, without torchvision's slow one
    with torch.no_grad():
        for name, param in ours.named_parameters():
            if name.endswith("weight"):
                param.normal_(0, math.sqrt(2 / param[0].numel()))
            else:
                param.zero_()
        ours.pool.p.fill_(2.5)
    path = tmp_path / "hedngan_embed_vgg16.pth"
    torch.save(_embedding_checkpoint(ours.state_dict(), "vgg16"), path)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(512, 512)))
    lw = {"m": rng.normal(scale=0.01, size=(512, 1)), "P": q}
    lw_path = tmp_path / "hedngan_embed_vgg16_lw.pkl"
    with open(lw_path, "wb") as f:
        pickle.dump(lw, f)

    net = load_cirtorch_embedding(path)
    assert type(net).__name__ == "ImageRetrievalNet" and net.meta["architecture"] == "vgg16"
    assert abs(net.pool.p.item() - 2.5) < 1e-6 and not net.training
    images = world["val"].images[:3]
    vecs = cirtorch_descriptors(net, images, image_size=64, whitening=lw_path, workers=0)
    assert vecs.shape == (512, 3)

    # Independently: CLAHE -> ImageNet normalisation -> 3 scales -> GeM-p power mean -> L2 -> Lw -> L2.
    mean_std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for i, image in enumerate(images):
        x = _day_input(image, mean_std)
        acc = torch.zeros(512, dtype=torch.float64)
        with torch.no_grad():
            for s in PAPER_SCALES:
                xs = (
                    x
                    if s == 1
                    else torch.nn.functional.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
                )
                acc += ours(xs).squeeze(1).double().pow(2.5)
        v = (acc / 3).pow(1 / 2.5)
        v = (v / v.norm()).numpy()[:, None]
        w = lw["P"] @ (v - lw["m"])
        w = w / (np.linalg.norm(w) + 1e-6)
        np.testing.assert_allclose(vecs[:, i : i + 1], w, atol=2e-4)

