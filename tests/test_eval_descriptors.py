"""Test-time descriptors (multi-scale GeM-p, batching, orientation, HOW), network loading, `dsa evaluate`."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dsa_plugin.core.images import load_image, pil_to_tensor01
from dsa_plugin.evaluation.descriptors import (
    DEFAULT_SCALES,
    descriptor_rows,
    extract_descriptors,
    multiscale_descriptors,
    multiscale_power,
)
from dsa_plugin.models.gem import gem_small
from dsa_plugin.transforms import clahe
from test_eval_helpers import make_folder, make_test_set, place_image


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny convolutions: intra-op threads only add contention on a shared CPU; restored afterwards
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_net(dim=16, seed=0):
    torch.manual_seed(seed)
    return gem_small(outputdim=dim).eval()


def literal_multiscale(net, x1, scales, p):
    """One image [1,3,H,W]: per scale resize, forward, power mean, L2 (written out)."""
    total = torch.zeros(net.meta["outputdim"], dtype=torch.float64)
    for s in scales:
        xs = x1 if s == 1 else F.interpolate(x1, scale_factor=s, mode="bilinear", align_corners=False)
        col = net(xs)[:, 0].double()  # GeMNet returns D x B
        total += col**p
    v = (total / len(scales)) ** (1.0 / p)
    return (v / v.norm()).float()


def test_scales_and_power_follow_the_standard():
    assert DEFAULT_SCALES == pytest.approx((1.0, 1 / math.sqrt(2), 0.5))
    net = small_net()
    with torch.no_grad():
        net.pool.p.fill_(2.5)
    assert multiscale_power(net) == pytest.approx(2.5)
    net.meta["whitening"] = True  # a whitened cirtorch net aggregates with p = 1
    assert multiscale_power(net) == 1.0
    assert multiscale_power(nn.Linear(2, 2)) == 1.0


def test_multiscale_matches_literal_per_image():
    net = small_net()
    with torch.no_grad():
        net.pool.p.fill_(3.3)
    x = torch.rand(2, 3, 32, 40)
    with torch.no_grad():
        got = multiscale_descriptors(net, x, DEFAULT_SCALES, power=3.3)
        for i in range(2):
            ref = literal_multiscale(net, x[i : i + 1], DEFAULT_SCALES, 3.3)
            torch.testing.assert_close(got[i], ref, rtol=1e-5, atol=1e-6)
    assert got.norm(dim=1).sub(1).abs().max() < 1e-5


def test_orientation_of_bxd_and_dxb_networks():
    net = small_net(dim=5)
    x = torch.rand(5, 3, 24, 24)  # B == D: ambiguous shape, resolved by cirtorch meta

    class RowNet(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, t):
            return self.inner(t).T  # B x D, no meta

    with torch.no_grad():
        a = descriptor_rows(net, x)
        b = descriptor_rows(RowNet(net), x)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a[0], net(x[:1])[:, 0])


def test_load_image_crops_bbox_then_scales_like_full_image(tmp_path):
    path = tmp_path / "im.png"
    Image.new("RGB", (200, 100), (10, 20, 30)).save(path)
    assert load_image(path, 50).size == (50, 25)
    # crop 100x40, scaled by the factor the full image gets (50 / 200)
    assert load_image(path, 50, bbox=(10, 0, 110, 40)).size == (25, 10)
    assert load_image(path, 500).size == (200, 100)  # thumbnail never enlarges
    from dsa_plugin.evaluation.descriptors import ImageReadError

    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        load_image(tmp_path / "broken.jpg")


def test_batched_extraction_equals_one_by_one(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        place_image(i, i % 2 == 1, i, size=(40, 32) if i % 3 else (36, 36)).save(p)
        paths.append(str(p))
    net = small_net()
    kw = dict(image_size=None, clahe=True, progress=False)
    batched = extract_descriptors(net, paths, batch_size=4, **kw)
    single = extract_descriptors(net, paths, batch_size=1, **kw)
    assert batched.shape == (5, 16)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    # the literal pipeline: load, CLAHE, normalise, multi-scale
    x = pil_to_tensor01(load_image(paths[2]))[None]
    x = clahe(x)
    mean, std = torch.tensor(net.meta["mean"]).view(1, 3, 1, 1), torch.tensor(net.meta["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = literal_multiscale(net, (x - mean) / std, DEFAULT_SCALES, float(net.pool.p))
    torch.testing.assert_close(batched[2], ref, rtol=1e-5, atol=1e-6)
    no_clahe = extract_descriptors(net, paths, clahe=False, **{k: v for k, v in kw.items() if k != "clahe"})
    assert (no_clahe - batched).abs().max() > 1e-4


def _clahe_opencv(x01: torch.Tensor, clip_limit: float = 1.0, grid_size=(8, 8)) -> torch.Tensor:
    """CLAHE on the L channel of Lab as the reference applies it (OpenCV, L truncated to uint8)."""
    import cv2
    import numpy as np

    op = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tuple(grid_size))
    out = []
    for img in x01.detach().cpu().permute(0, 2, 3, 1).numpy().astype(np.float32):
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
        L = (lab[..., 0] / 100.0 * 255.0).astype(np.uint8)
        lab[..., 0] = op.apply(L).astype(np.float32) / 255.0 * 100.0
        out.append(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(device=x01.device, dtype=x01.dtype)


def test_evaluation_clahe_agrees_with_opencv():
    pytest.importorskip("cv2")
    x = pil_to_tensor01(place_image(1, True, 0, (64, 48)))[None]
    torch.testing.assert_close(clahe(x), _clahe_opencv(x), atol=2 / 255, rtol=0)


def test_how_like_networks_get_scales_and_batch_one(tmp_path):
    calls = []

    class HowLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 6)
            self.runtime = {"mean_std": [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]}

        def features_attentions(self, x, *, scales):  # pragma: no cover - presence marks a HOW net
            raise AssertionError

        def forward_global(self, x, *, scales):
            calls.append((x.shape[0], tuple(scales)))
            return F.normalize(self.lin(x.mean(dim=(2, 3))), dim=1)

        def forward(self, x):
            return self.forward_global(x, scales=[1])

    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        place_image(i, False, i, (32, 32)).save(p)
        paths.append(str(p))
    out = extract_descriptors(HowLike(), paths, image_size=None, batch_size=8, scales=(1, 0.5), progress=False)
    assert out.shape == (3, 6)
    assert {c for c in calls if c[1] == (1, 0.5)} == {(1, (1, 0.5))}


# ---------------------------------------------------------------- network loading


def test_plugin_gemnet_checkpoint_roundtrip(tmp_path):
    from dsa_plugin.evaluation.networks import load_embedding_network
    from dsa_plugin.models.checkpoints import save_network

    net = small_net(dim=24, seed=3)
    save_network(tmp_path / "gem.pth", net, model_params={"architecture": "gem_small", "outputdim": 24})
    back = load_embedding_network(tmp_path / "gem.pth", "cpu")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x))
    assert not any(p.requires_grad for p in back.parameters())


def test_reference_and_cirtorch_layouts(tmp_path):
    from dsa_plugin.evaluation.networks import build_gem_network, load_embedding_network

    net = small_net(dim=32, seed=1)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    ref = {
        "type": "SingleNetwork",
        "frozen": False,
        "network_params": {
            "model": {"architecture": "cirnet", "cir_architecture": "gem_small", "outputdim": 32},
            "runtime": {},
        },
        "model_state": sd,
    }
    torch.save(ref, tmp_path / "embed_best.pth")
    meta = {"architecture": "gem_small", "pooling": "gem", "local_whitening": False, "regional": False,
            "whitening": False, "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2], "outputdim": 32}
    torch.save({"meta": meta, "state_dict": sd, "epoch": 3}, tmp_path / "cirtorch.pth.tar")
    wsd = dict(sd, **{"whiten.weight": torch.randn(8, 32), "whiten.bias": torch.randn(8)})
    torch.save({"meta": dict(meta, whitening=True), "state_dict": wsd}, tmp_path / "cirtorch_w.pth.tar")
    torch.save(sd, tmp_path / "raw.pth")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = load_embedding_network(tmp_path / "embed_best.pth")
        torch.testing.assert_close(a(x), net(x))
        b = load_embedding_network(tmp_path / "cirtorch.pth.tar")
        assert b.meta["mean"] == [0.4, 0.4, 0.4]
        torch.testing.assert_close(b(x), net(x))
        c = load_embedding_network(tmp_path / "cirtorch_w.pth.tar")
        assert c(x).shape == (8, 1) and multiscale_power(c) == 1.0
        o = net(x)[:, 0]
        w = F.normalize(wsd["whiten.weight"] @ o + wsd["whiten.bias"], dim=0)
        torch.testing.assert_close(c(x)[:, 0], w, rtol=1e-4, atol=1e-5)
        raw = load_embedding_network(tmp_path / "raw.pth")  # architecture and outputdim inferred from keys
        torch.testing.assert_close(raw(x), net(x))
    r18 = build_gem_network("resnet18")
    assert r18.meta["outputdim"] == 512 and r18.meta["architecture"] == "resnet18"


def test_network_errors_and_whitening_attach(tmp_path):
    import numpy as np

    from dsa_plugin.evaluation.networks import attached_whitening, load_embedding_network
    from dsa_plugin.models.checkpoint_files import CheckpointError
    from dsa_plugin.models.checkpoints import save_network

    net = small_net(dim=8)
    save_network(tmp_path / "g.pth", net, model_params={"architecture": "gem_small"})
    from dsa_plugin.evaluation.whitening import save_whitening

    save_whitening({"m": np.zeros((8, 1)), "P": np.eye(8)}, tmp_path / "g_lw.pkl")
    loaded = load_embedding_network(tmp_path / "g.pth", whitening=tmp_path / "g_lw.pkl")
    assert attached_whitening(loaded)["P"].shape == (8, 8)
    save_whitening({"m": np.zeros((4, 1)), "P": np.eye(4)}, tmp_path / "bad_lw.pkl")
    with pytest.raises(CheckpointError, match="D = 4 but the network outputs 8"):
        load_embedding_network(tmp_path / "g.pth", whitening=tmp_path / "bad_lw.pkl")
    save_network(tmp_path / "odd.pth", net, model_params={"architecture": "alexnet"})
    with pytest.raises(CheckpointError, match="unsupported embedding architecture 'alexnet'"):
        load_embedding_network(tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="nothere.pth"):
        load_embedding_network(tmp_path / "nothere.pth")


# ---------------------------------------------------------------- runners and CLI


def test_evaluate_folder_programmatic(tmp_path):
    from dsa_plugin.evaluation.runner import evaluate_folder

    make_folder(tmp_path)
    r = evaluate_folder(small_net(), tmp_path, image_size=48, scales=(1,), clahe=False, progress=False)
    assert set(r) >= {"night->day", "day->day", "num_images", "settings"}
    nd = r["night->day"]
    assert nd["num_queries"] == 6 and nd["num_db"] == 9 and 0 < nd["map"] <= 1
    assert set(nd) >= {"mp@1", "mp@5", "mp@10"}
    assert r["day->day"]["num_queries"] == 9


def test_dsa_evaluate_cli_folder_and_named_sets(tmp_path, capsys):
    from dsa_plugin.cli import main

    make_folder(tmp_path / "folder", places=3, day=2, night=1)
    make_test_set(tmp_path / "data", "roxford5k", revisited=True, n_db=4)
    make_test_set(tmp_path / "data", "247tokyo1k", revisited=False, all_vs_all=True, n_db=4)
    out = tmp_path / "res.json"
    rc = main([
        "evaluate", "--arch", "gem_small", "--outputdim", "16", "--random-init", "--folder", str(tmp_path / "folder"),
        "--role", "eval", "--datasets", "247tokyo1k,roxford5k", "--data-root", str(tmp_path / "data"),
        "--image-size", "48", "--no-progress", "--out", str(out),
    ])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Tokyo" in text and "ROxf M" in text and "ROxf H" in text
    assert "night→day" in text and "day→day" in text
    res = json.loads(out.read_text())
    assert [t["dataset"] for t in res["test_sets"]] == ["247tokyo1k", "roxford5k"]
    assert res["test_sets"][1]["protocol"] == "revisited" and "hard" in res["test_sets"][1]
    assert res["folders"][0]["night->day"]["num_queries"] == 2  # role eval: places 0 and 2


def test_dsa_evaluate_cli_reports_bad_input(tmp_path, capsys):
    from dsa_plugin.evaluation.cli import main

    rc = main(
        [
            "--arch",
            "gem_small",
            "--random-init",
            "--datasets",
            "rparis6k",
            "--data-root",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 2
    assert "gnd_rparis6k.pkl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--arch", "gem_small", "--folder", str(tmp_path)])  # untrained without --random-init


def test_learn_whitening_from_db_cli(tmp_path):
    import pickle

    from dsa_plugin.data.sfm import cid_to_path
    from dsa_plugin.evaluation.cli import main
    from dsa_plugin.evaluation.whitening import load_whitening

    cids = [f"c{i:08d}" for i in range(12)]
    ims = tmp_path / "ims"
    for i, c in enumerate(cids):
        p = cid_to_path(ims, c)
        import os

        os.makedirs(os.path.dirname(p), exist_ok=True)
        place_image(i // 3, i % 3 == 2, i, (32, 32)).save(p, format="JPEG")
    with open(tmp_path / "whiten.pkl", "wb") as f:
        pickle.dump({"cids": cids, "qidxs": [0, 3, 6, 9, 1, 4, 7, 10], "pidxs": [1, 4, 7, 10, 2, 5, 8, 11]}, f)
    make_folder(tmp_path / "folder", places=2, day=2, night=1)
    rc = main(
        [
            "--arch",
            "gem_small",
            "--outputdim",
            "4",
            "--random-init",
            "--learn-whitening",
            str(tmp_path / "whiten.pkl"),
            "--save-whitening",
            str(tmp_path / "lw.pkl"),
            "--folder",
            str(tmp_path / "folder"),
            "--image-size",
            "32",
            "--single-scale",
            "--no-clahe",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert load_whitening(tmp_path / "lw.pkl")["P"].shape == (4, 4)
