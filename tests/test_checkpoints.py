"""Checkpoint I/O: strict loading of reference-layout files with numerical identity against an
independent functional forward pass, clear errors for wrong/broken files, atomic saves."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from dsa_plugin.core.files import atomic_save
from dsa_plugin.models import HED, NLayerDiscriminator, ResnetGenerator, hed_preprocess
from dsa_plugin.models import checkpoint_files as ck
from dsa_plugin.models.checkpoint_files import (
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    state_dict_sha256,
)
from dsa_plugin.models.checkpoints import extract_state_dict, load_generator, load_hed, load_into, save_network
from test_models import spec_discriminator, spec_generator, spec_hed

H, W = 36, 44
GEN_PARAMS = {"architecture": "official_resnet_generator", "no_antialias": True, "no_antialias_up": True,
              "input_nc": 3, "output_nc": 3, "n_blocks": 2, "norm_layer": "batch"}
GEN_RUNTIME = {"wrappers": "", "data": {"transforms": "pil2np | totensor | normalize",
                                        "mean_std": [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]}}


def random_state(spec, seed=0):
    """Random weights for a spec key list (BN running_var kept positive), as another tool would write them."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in spec:
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            sd[key] = torch.randn(shape, generator=g) * 0.1
        elif key.endswith("weight") and len(shape) == 1:
            sd[key] = 1 + 0.2 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            sd[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return sd


def reference_file(path, model, sd, runtime=None):
    torch.save({"type": "SingleNetwork", "frozen": False,
                "network_params": {"model": model, "runtime": runtime or {}}, "model_state": sd}, path)
    return path


# ---- independent, literal forward passes (functional ops only) ----


def _norm(x, sd, prefix, norm):
    if norm == "batch":  # eval mode: running statistics
        m, v = sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"]
        x = (x - m[None, :, None, None]) / torch.sqrt(v[None, :, None, None] + 1e-5)
        return x * sd[f"{prefix}.weight"][None, :, None, None] + sd[f"{prefix}.bias"][None, :, None, None]
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + 1e-5)


def slow_generator(x, sd, norm, n_blocks):
    b = (lambda k: sd.get(k)) if norm == "instance" else (lambda k: None)
    nidx = (lambda i: f"model.{i + 1}") if norm == "batch" else (lambda i: None)
    y = F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), sd["model.1.weight"], b("model.1.bias"))
    y = F.relu(_norm(y, sd, nidx(1), norm))
    for i in (4, 7):
        y = F.relu(_norm(F.conv2d(y, sd[f"model.{i}.weight"], b(f"model.{i}.bias"), stride=2, padding=1),
                         sd, nidx(i), norm))
    for blk in range(10, 10 + n_blocks):
        p = f"model.{blk}.conv_block"
        r = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), sd[f"{p}.1.weight"], b(f"{p}.1.bias"))
        r = F.relu(_norm(r, sd, f"{p}.2" if norm == "batch" else None, norm))
        r = F.conv2d(F.pad(r, (1, 1, 1, 1), mode="reflect"), sd[f"{p}.5.weight"], b(f"{p}.5.bias"))
        y = y + _norm(r, sd, f"{p}.6" if norm == "batch" else None, norm)
    up = 10 + n_blocks
    for i in (up, up + 3):
        y = F.conv_transpose2d(y, sd[f"model.{i}.weight"], b(f"model.{i}.bias"), stride=2, padding=1,
                               output_padding=1)
        y = F.relu(_norm(y, sd, nidx(i), norm))
    head = up + 7
    y = F.conv2d(F.pad(y, (3, 3, 3, 3), mode="reflect"), sd[f"model.{head}.weight"], sd[f"model.{head}.bias"])
    return torch.tanh(y)


def slow_discriminator(x, sd, norm):
    y = F.leaky_relu(F.conv2d(x, sd["model.0.weight"], sd["model.0.bias"], stride=2, padding=1), 0.2)
    for i, stride in ((2, 2), (5, 2), (8, 1)):
        y = F.conv2d(y, sd[f"model.{i}.weight"], sd.get(f"model.{i}.bias"), stride=stride, padding=1)
        y = F.leaky_relu(_norm(y, sd, f"model.{i + 1}" if norm == "batch" else None, norm), 0.2)
    return F.conv2d(y, sd["model.11.weight"], sd["model.11.bias"], stride=1, padding=1)


def slow_hed(x, sd, first_scale=1.0):
    def conv(t, name, scale=1.0):
        return F.relu(F.conv2d(t, sd[f"{name}.weight"] * scale, sd[f"{name}.bias"], padding=1))

    blocks = [["vgg1.0", "vgg1.2"], ["vgg2.1", "vgg2.3"], ["vgg3.1", "vgg3.3", "vgg3.5"],
              ["vgg4.1", "vgg4.3", "vgg4.5"], ["vgg5.1", "vgg5.3", "vgg5.5"]]
    sides, t = [], x
    for i, names in enumerate(blocks):
        if i:
            t = F.max_pool2d(t, 2, 2)
        for name in names:
            t = conv(t, name, first_scale if name == "vgg1.0" else 1.0)
        s = F.conv2d(t, sd[f"score{i + 1}.weight"], sd[f"score{i + 1}.bias"])
        sides.append(F.interpolate(s, size=x.shape[2:], mode="bilinear", align_corners=False))
    return torch.sigmoid(F.conv2d(torch.cat(sides, 1), sd["fusion.0.weight"], sd["fusion.0.bias"]))


def _x(seed=1, h=H, w=W):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- strict load + numerical identity ----


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_generator_reference_file_loads_strictly_and_matches_literal_forward(tmp_path, norm):
    sd = random_state(spec_generator(norm, 2), seed=3)
    path = reference_file(tmp_path / f"gen_{norm}.pth", dict(GEN_PARAMS, norm_layer=norm), sd, GEN_RUNTIME)
    g = load_generator(path)
    assert isinstance(g, ResnetGenerator) and not g.training
    assert not any(p.requires_grad for p in g.parameters())
    assert g.checkpoint_info["runtime"] == GEN_RUNTIME
    x = _x()
    with torch.no_grad():
        ours = g(x)
    expected = slow_generator(x, sd, norm, 2)
    assert ours.shape == (1, 3, H, W)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert state_dict_sha256(g.state_dict()) == state_dict_sha256(sd)


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_generator_without_params_infers_architecture(tmp_path, norm):
    sd = random_state(spec_generator(norm, 1), seed=4)
    torch.save(sd, tmp_path / "raw.pth")
    g = load_generator(tmp_path / "raw.pth")
    assert g.checkpoint_info["model_params"]["norm_layer"] == norm
    assert g.checkpoint_info["model_params"]["n_blocks"] == 1
    x = _x(h=20, w=28)
    with torch.no_grad():
        torch.testing.assert_close(g(x), slow_generator(x, sd, norm, 1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_discriminator_reference_state_matches_literal_forward(tmp_path, norm):
    sd = random_state(spec_discriminator(norm), seed=5)
    path = reference_file(tmp_path / "d.pth", {"architecture": "official_p2p_discriminator", "input_nc": 3,
                                               "no_antialias": True, "norm_layer": norm}, sd)
    d = load_into(NLayerDiscriminator(norm=norm), extract_state_dict(load_checkpoint(path))).eval()
    x = _x(h=64, w=72)
    with torch.no_grad():
        torch.testing.assert_close(d(x), slow_discriminator(x, sd, norm), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def hed_state():
    return random_state(spec_hed(), seed=6)


def test_hed_reference_file_loads_strictly_and_matches_literal_forward(tmp_path, hed_state):
    sd = hed_state
    path = reference_file(tmp_path / "hed.pth", {"architecture": "hed_interpolation"}, sd)
    hed = load_hed(path)
    assert isinstance(hed, HED) and not hed.training
    x = hed_preprocess(_x())
    with torch.no_grad():
        torch.testing.assert_close(hed(x), slow_hed(x, sd), atol=1e-5, rtol=1e-5)


def test_hed_sniklaus_names_are_mapped_with_255_scaling(tmp_path, hed_state):
    sd = hed_state
    names = {"vgg1": "netVggOne", "vgg2": "netVggTwo", "vgg3": "netVggThr", "vgg4": "netVggFou",
             "vgg5": "netVggFiv", "score1": "netScoreOne", "score2": "netScoreTwo", "score3": "netScoreThr",
             "score4": "netScoreFou", "score5": "netScoreFiv", "fusion": "netCombine"}
    snik = {names[k.split(".")[0]] + k[len(k.split(".")[0]):]: v for k, v in sd.items()}
    torch.save(snik, tmp_path / "network-bsds500.pytorch")
    hed = load_hed(tmp_path / "network-bsds500.pytorch")
    x = _x(h=24, w=20)
    bgr01 = (x.flip(1) + 1) / 2
    # the original network: BGR in 0..255 minus the Caffe means
    original_in = bgr01 * 255 - torch.tensor([104.00698793, 116.66876762, 122.67891434]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(hed(hed_preprocess(x)), slow_hed(original_in, sd), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "ddp"])
def test_other_layouts_accepted(tmp_path, wrap):
    sd = random_state(spec_generator("instance", 1), seed=8)
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 3},
           "ddp": {f"module.{k}": v for k, v in sd.items()}}[wrap]
    torch.save(obj, tmp_path / "g.pth")
    g = load_generator(tmp_path / "g.pth")
    assert state_dict_sha256(g.state_dict()) == state_dict_sha256(sd)


# ---- our saved files use the reference 4-key layout ----


def test_save_network_writes_reference_layout(tmp_path):
    g = ResnetGenerator(n_blocks=2, norm="batch")
    path = tmp_path / "sub" / "generator_X_last.pth"
    save_network(path, g)
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"type", "frozen", "network_params", "model_state"}  # what the reference hub asserts
    assert obj["type"] == "SingleNetwork" and obj["frozen"] is False
    assert obj["network_params"]["model"] == dict(GEN_PARAMS, ngf=64)
    assert obj["network_params"]["runtime"] == GEN_RUNTIME
    assert [k for k in obj["model_state"]] == [k for k, _ in spec_generator("batch", 2)]
    g2 = load_generator(path)
    assert state_dict_sha256(g2.state_dict()) == state_dict_sha256(g.state_dict())
    hed_path = tmp_path / "detector.pth"
    save_network(hed_path, HED(), {"architecture": "hed_interpolation"}, runtime={"wrappers": "rgb2bgr_pre"})
    assert torch.load(hed_path, weights_only=True)["network_params"]["runtime"] == {"wrappers": "rgb2bgr_pre"}
    with pytest.raises(ValueError, match="needs model_params"):
        save_network(tmp_path / "x.pth", HED())


# ---- wrong / broken checkpoints ----


def test_discriminator_given_as_generator(tmp_path):
    sd = random_state(spec_discriminator("batch"))
    reference_file(tmp_path / "discriminator_Y_best.pth", {"architecture": "official_p2p_discriminator"}, sd)
    with pytest.raises(CheckpointError, match=r"discriminator_Y_best\.pth is not a generator.*PatchGAN discr"):
        load_generator(tmp_path / "discriminator_Y_best.pth")
    torch.save(sd, tmp_path / "raw_d.pth")
    with pytest.raises(CheckpointError, match=r"not a ResnetGenerator.*PatchGAN discriminator"):
        load_generator(tmp_path / "raw_d.pth")


def test_generator_given_as_hed_lists_missing_and_unexpected(tmp_path):
    torch.save(random_state(spec_generator("instance", 1)), tmp_path / "g.pth")
    with pytest.raises(CheckpointError) as info:
        load_hed(tmp_path / "g.pth")
    msg = str(info.value)
    assert "g.pth does not match HED" in msg and "ResNet generator (instance norm)" in msg
    assert "missing keys (38): vgg1.0.weight" in msg
    assert "unexpected keys (" in msg and "model.1.weight" in msg


def test_shape_mismatch_is_listed():
    sd = random_state(spec_generator("instance", 1))
    sd["model.18.weight"] = torch.zeros(1, 64, 7, 7)
    with pytest.raises(CheckpointError, match=r"shape differences \(1\): model\.18\.weight: checkpoint "
                                              r"\(1, 64, 7, 7\) vs model \(3, 64, 7, 7\)"):
        load_into(ResnetGenerator(n_blocks=1, norm="instance"), sd, source="ckpt.pth")


def test_missing_truncated_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"not found: .*nope\.pth"):
        load_generator(tmp_path / "nope.pth")
    save_network(tmp_path / "g.pth", ResnetGenerator(n_blocks=1, norm="instance"))
    data = (tmp_path / "g.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*trunc\.pth .*truncated or corrupt"):
        load_generator(tmp_path / "trunc.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match=r"text\.pth"):
        load_checkpoint(tmp_path / "text.pth")
    torch.save({"epoch": 3, "note": "x"}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match=r"not a state dict.*top-level keys: \['epoch', 'note'\]"):
        load_generator(tmp_path / "meta.pth")


def test_unsafe_pickle_is_refused(tmp_path):
    import argparse

    torch.save({"model_state": {"w": torch.zeros(1)}, "obj": argparse.Namespace(cmd="rm -rf")}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(tmp_path / "evil.pth")


def test_multi_network_dict_needs_subnet(tmp_path):
    sd = random_state(spec_generator("instance", 1))
    entry = {"type": "SingleNetwork", "frozen": False, "network_params": {"model": dict(
        GEN_PARAMS, n_blocks=1, norm_layer="instance"), "runtime": {}}, "model_state": sd}
    torch.save({"generator_X": entry, "net": {"type": "NetworkSet"}}, tmp_path / "set.pth")
    with pytest.raises(CheckpointError, match=r"several networks \['generator_X'\]"):
        load_generator(tmp_path / "set.pth")
    g = load_generator(tmp_path / "set.pth", subnet="generator_X")
    assert state_dict_sha256(g.state_dict()) == state_dict_sha256(sd)


def test_unreachable_url_gives_clear_error(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    url = "http://127.0.0.1:9/iccv23_gan/hedngan_generator_X.pth"
    with pytest.raises(CheckpointError) as info:
        load_generator(url)
    msg = str(info.value)
    assert url in msg and str(hub / "checkpoints") in msg and "offline" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__
    # a file already in the cache is used without any network access
    save_network(hub / "checkpoints" / "hedngan_generator_X.pth", ResnetGenerator(n_blocks=1))
    assert isinstance(load_generator(url), ResnetGenerator)
    assert not list((hub / "checkpoints").glob("*.tmp")) and not list((hub / "checkpoints").glob("*.partial"))


# ---- atomic saves and fingerprints ----


def test_atomic_save_never_leaves_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    atomic_save({"a": torch.arange(5)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt  # e.g. Ctrl-C while writing

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"a": torch.arange(1000)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pth"]  # no temp file left behind
    atomic_save({"a": torch.arange(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pth"]


def test_state_dict_sha256_is_stable_and_sensitive():
    sd = random_state(spec_generator("batch", 1))
    h = state_dict_sha256(sd)
    assert h == state_dict_sha256(dict(reversed(list(sd.items()))))  # key order irrelevant
    assert h == state_dict_sha256({k: v.clone() for k, v in sd.items()})
    changed = dict(sd)
    changed["model.18.bias"] = sd["model.18.bias"].clone()
    changed["model.18.bias"][0] += 1e-6
    assert state_dict_sha256(changed) != h
    assert state_dict_sha256(dict(sd, **{"model.18.bias": sd["model.18.bias"].double()})) != h
    assert state_dict_sha256({"w": torch.zeros(2, 3)}) != state_dict_sha256({"w": torch.zeros(3, 2)})
    assert len(h) == 64 and ck.state_dict_sha256({"b": torch.ones(2, dtype=torch.bfloat16)})


def test_published_short_names_resolve_to_urls(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert ck.PUBLISHED["hedngan"].endswith("/iccv23_gan/hedngan_generator_X.pth")
    save_network(hub / "checkpoints" / "cyclegan_generator_X.pth", ResnetGenerator(n_blocks=1, norm="instance"))
    g = load_generator("cyclegan")  # from the hub cache, no network
    assert g.norm == "instance" and g.checkpoint_info["source"] == ck.PUBLISHED["cyclegan"]
