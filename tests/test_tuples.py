"""NightTuplesDataset: cirtorch's TuplesDataset contract, night anchors, CLAHE, diverse anchors, bad input."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from dsa_plugin.core.config import DSAConfig
from dsa_plugin.core.images import load_image01
from dsa_plugin.data import SfMFormatError, load_sfm_db, make_tiny_sfm_db
from dsa_plugin.mining import diverse_anchors
from dsa_plugin.night.selection import is_night
from dsa_plugin.training.tuples import NightTuplesDataset

IMSIZE = 32
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _normalize(x, mean_std):
    """Literal per-channel ``(x - mean) / std``, independent of the code under test."""
    mean, std = (torch.tensor(v, dtype=x.dtype).view(3, 1, 1) for v in mean_std)
    return (x - mean) / std


class TinyGeM(nn.Module):
    """A GeM-like net: conv, ReLU, GeM pooling, L2 norm; returns D x B columns like cirtorch."""

    def __init__(self, dim: int = 8, rows: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, dim, 3, stride=2, padding=1)
        self.meta = {"outputdim": dim, "mean": list(IMAGENET[0]), "std": list(IMAGENET[1])}
        self.rows = rows

    def forward(self, x):
        y = torch.relu(self.conv(x)).clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
        y = y / (y.norm(dim=1, keepdim=True) + 1e-6)
        return y if self.rows else y.t()


class InvertNight:
    """Stand-in for NightSource: 'night' = the negative image (same size), counts its calls."""

    def __init__(self):
        self.calls = []

    def night(self, name, x01):
        self.calls.append(name)
        return 1.0 - x01


def make(root, config=None, **kw):
    args = dict(imsize=IMSIZE, nnum=3, qsize=8, poolsize=100, data_root=root, seed=7, progress=False, config=config)
    args.update(kw)
    return NightTuplesDataset("retrieval-SfM-120k", "train", **args)


def check_negatives(ds):
    for q, negs in zip(ds.qidxs, ds.nidxs):
        clusters = [ds.clusters[n] for n in negs]
        assert len(negs) == ds.nnum
        assert ds.clusters[q] not in clusters
        assert len(set(clusters)) == len(clusters)


def test_contract_and_collate(tiny_db):
    ds = make(tiny_db)
    assert len(ds) == 8
    with pytest.raises(RuntimeError, match="create_epoch_tuples"):
        ds[0]
    avg = ds.create_epoch_tuples(TinyGeM())
    assert isinstance(avg, float) and avg > 0
    assert len(ds.qidxs) == len(ds.pidxs) == len(ds.nidxs) == 8
    pairs = set(zip(ds.qpool, ds.ppool))
    assert all((q, p) in pairs for q, p in zip(ds.qidxs, ds.pidxs))
    assert len(set(zip(ds.qidxs, ds.pidxs))) == 8  # a random permutation prefix: no pair twice
    check_negatives(ds)
    images, target = ds[3]
    assert len(images) == 5 and target.tolist() == [-1, 1, 0, 0, 0]
    for img in images:
        assert img.shape[:2] == (1, 3) and max(img.shape[2:]) == IMSIZE
    # plain images: ImageNet-normalised pixels of the thumbnail, as cirtorch's ToTensor+Normalize
    x01 = load_image01(ds.images[ds.pidxs[3]], IMSIZE)
    torch.testing.assert_close(images[1], _normalize(x01[None], IMAGENET))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=lambda b: ([x[0] for x in b], [x[1] for x in b]))
    batch, targets = next(iter(loader))
    assert len(batch) == 3 and len(batch[0]) == 5 and len(targets) == 3
    assert ds.stats["anchors"] == 8 and not ds.stats["diverse"] and ds.stats["poolsize"] == 24
    assert set(ds.stats["timings"]) >= {"extract_anchors_s", "extract_pool_s", "hard_negatives_s", "total_s"}


def test_core_dataset_imports_no_toolkit():
    code = ("import sys, dsa_plugin.training.tuples as t, torch.utils.data as d; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('cirtorch', 'how')], 'toolkit imported'; "
            "assert issubclass(t.NightTuplesDataset, d.Dataset); "
            "assert {c.__module__.split('.')[0] for c in t.NightTuplesDataset.__mro__} <= {'dsa_plugin', 'torch', "
            "'typing', 'builtins'}")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cirtorch_subclass_and_collate(tiny_db, monkeypatch):
    traindataset = pytest.importorskip("cirtorch.datasets.traindataset")
    datahelpers = pytest.importorskip("cirtorch.datasets.datahelpers")
    from dsa_plugin.integrations.cirtorch import tuples as cirtorch_tuples

    assert not isinstance(make(tiny_db), traindataset.TuplesDataset)  # the core class is toolkit-free
    cls = cirtorch_tuples.NightTuplesDataset
    args = dict(imsize=IMSIZE, nnum=3, qsize=8, poolsize=100, data_root=tiny_db, seed=7, progress=False)
    ds = cls("retrieval-SfM-120k", "train", **args)
    assert isinstance(ds, traindataset.TuplesDataset) and isinstance(ds, NightTuplesDataset)
    assert pickle.loads(pickle.dumps(cls)) is cls  # DataLoader workers find the class by name
    general = pytest.importorskip("cirtorch.utils.general")
    monkeypatch.delenv("DSA_DATA_ROOT", raising=False)
    monkeypatch.setattr(general, "get_data_root", lambda: str(tiny_db))  # cirtorch's root is the default
    assert cls("retrieval-SfM-120k", "train", **{**args, "data_root": None}).pkl_path == ds.pkl_path
    with pytest.raises(ValueError, match="no training db location"):
        NightTuplesDataset("retrieval-SfM-120k", "train", **{**args, "data_root": None})
    ds.create_epoch_tuples(TinyGeM())
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=datahelpers.collate_tuples)
    images, targets = next(iter(loader))
    assert len(images) == 2 and len(images[0]) == 5 and targets[0].tolist() == [-1, 1, 0, 0, 0]
    assert "Number of tuples processed in an epoch: 8" in repr(ds)


def test_private_generator_reproducible_per_epoch(tiny_db):
    net = TinyGeM()
    a, b = make(tiny_db), make(tiny_db)
    torch.manual_seed(0)
    a.create_epoch_tuples(net)
    torch.manual_seed(0)
    first = (a.qidxs, a.nidxs)
    a.create_epoch_tuples(net)  # the toolkits reseed the global RNG each epoch: tuples must still change
    assert (a.qidxs, a.nidxs) != first
    torch.manual_seed(123)
    b.create_epoch_tuples(net)
    assert (b.qidxs, b.nidxs) == first  # same seed, epoch 0: same tuples whatever the global RNG
    b.set_epoch(0)
    b.create_epoch_tuples(net)
    assert (b.qidxs, b.nidxs) == first


def test_row_descriptors_and_batching_give_the_same_tuples(tiny_db):
    cols, rows = make(tiny_db, batch_size=1), make(tiny_db, batch_size=16)
    d_cols = cols.create_epoch_tuples(TinyGeM())
    d_rows = rows.create_epoch_tuples(TinyGeM(rows=True))
    assert (cols.qidxs, cols.nidxs) == (rows.qidxs, rows.nidxs)
    assert d_cols == pytest.approx(d_rows, abs=1e-5)
    idx = list(range(len(cols.images)))
    one = cols.extract(idx, "neg-pool-mine", TinyGeM(), batch_size=1)
    many = cols.extract(idx, "neg-pool-mine", TinyGeM(), batch_size=7)
    assert one.shape == (8, len(idx))
    torch.testing.assert_close(one, many, atol=1e-5, rtol=1e-5)
    assert cols._last_extract["batches"] < len(idx)  # equal-size images really were batched


def test_night_anchors_in_mining_and_tuples(tiny_db):
    source = InvertNight()
    config = DSAConfig(night_ratio=0.5)
    ds = make(tiny_db, config=config, night_source=source, qsize=18)
    ds.create_epoch_tuples(TinyGeM())
    expected = [q for q in ds.qidxs if is_night(ds.names[q], "anc", 0.5)]
    assert 0 < len(expected) < 18
    assert ds.night_anchor_indices == expected
    assert ds.stats["night_anchors"] == len(expected)
    # mining extracted the anchors with night applied (label anc-mine), the negative pool never
    assert ds.stats["night_anchors_mining"] == len(expected)
    assert sorted(source.calls) == sorted(ds.names[q] for q in expected)
    net = TinyGeM()
    night_q = expected[0]
    as_anchor = ds.extract([night_q], "anc-mine", net)
    as_negative = ds.extract([night_q], "neg-pool-mine", net)
    assert not torch.allclose(as_anchor, as_negative)
    served_before = ds.night_served
    for i, q in enumerate(ds.qidxs):
        images, _ = ds[i]
        x01 = load_image01(ds.images[q], IMSIZE)
        want = 1.0 - x01 if q in expected else x01
        torch.testing.assert_close(images[0], _normalize(want[None], IMAGENET))
        p01 = load_image01(ds.images[ds.pidxs[i]], IMSIZE)  # positives are never night
        torch.testing.assert_close(images[1], _normalize(p01[None], IMAGENET))
    assert ds.night_served - served_before == len(expected)


@pytest.mark.parametrize("grid", [8, 2])
def test_clahe_on_every_image(tiny_db, grid):
    from dsa_plugin.transforms import clahe

    ds = make(tiny_db, config=DSAConfig(clahe=True, clahe_grid=grid), mean_std=((0.5,) * 3, (0.5,) * 3))
    ds.create_epoch_tuples(TinyGeM())
    images, _ = ds[0]
    for img, idx in zip(images, [ds.qidxs[0], ds.pidxs[0], *ds.nidxs[0]]):
        x01 = load_image01(ds.images[idx], IMSIZE)
        torch.testing.assert_close(img, (clahe(x01[None], grid_size=(grid, grid)) - 0.5) / 0.5)
        if grid != 8:  # the grid really reaches the images
            assert not torch.allclose(img, (clahe(x01[None]) - 0.5) / 0.5)


def test_transform_mean_std_and_custom_transform(tiny_db):
    from torchvision import transforms as T

    plain = T.Compose([T.ToTensor(), T.Normalize(mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2])])
    ds = make(tiny_db, transform=plain)
    assert ds.mean_std == ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    custom = T.Compose([T.ToTensor(), T.Normalize(mean=[0.5] * 3, std=[0.5] * 3), T.Lambda(lambda x: x * 2)])
    ds = make(tiny_db, transform=custom, config=DSAConfig(clahe=True))
    ds.create_epoch_tuples(TinyGeM())
    images, _ = ds[0]
    assert images[0].shape[:2] == (1, 3) and float(images[0].abs().max()) <= 2.0 + 1e-6


def test_diverse_anchors_follow_the_sampler(tiny_db):
    config = DSAConfig(diverse_anchors=True, qpool_size=15, similar_exclude=0.2, similar_include=0.8)
    ds = make(tiny_db, config=config, qsize=6)
    net = TinyGeM()
    ds.create_epoch_tuples(net)
    assert ds.stats["diverse"] and ds.stats["qpool_size"] == 15 and ds.stats["anchors"] == 6
    assert "average_new_query_max_score" in ds.stats
    check_negatives(ds)
    # the same steps by hand, with the same generator stream
    gen = torch.Generator().manual_seed(7)
    order = torch.randperm(len(ds.qpool), generator=gen)[:15]
    vecs = ds.extract([ds.qpool[i] for i in order], "anc-pool-mine", net)
    picks = diverse_anchors(vecs.t(), 6, similar_exclude=0.2, similar_include=0.8, generator=gen)
    assert ds.qidxs == [ds.qpool[i] for i in order[picks]]
    assert ds.pidxs == [ds.ppool[i] for i in order[picks]]
    negpool = torch.randperm(len(ds.images), generator=gen)[: ds.poolsize].tolist()
    assert all(n in negpool for row in ds.nidxs for n in row)


def test_nnum_zero(tiny_db):
    ds = make(tiny_db, nnum=0)
    assert ds.create_epoch_tuples(TinyGeM()) == 0
    images, target = ds[0]
    assert len(images) == 2 and target.tolist() == [-1, 1]


def test_bad_input(tmp_path, tiny_db):
    with pytest.raises(ValueError, match="at least nnum \\+ 1 = 7"):
        make(tiny_db, nnum=6)  # the tiny train split has 6 clusters
    with pytest.warns(UserWarning, match="qsize=500 is larger than the 18 pairs"):
        ds = make(tiny_db, qsize=500)
    assert len(ds) == 18
    with pytest.raises(ValueError, match="mode must be"):
        NightTuplesDataset("retrieval-SfM-120k", "test", data_root=tiny_db)
    db = load_sfm_db(tiny_db / "train/retrieval-SfM-120k/retrieval-SfM-120k.pkl", "train")
    gone = db.images[:7]
    for p in gone:
        shutil.move(p, p + ".moved")
    with pytest.raises(FileNotFoundError, match="7 of 24 images") as err:
        make(tiny_db)
    assert gone[0] in str(err.value) and "and 2 more" in str(err.value)
    for p in gone:
        shutil.move(p + ".moved", p)
    bad = tmp_path / "bad.pkl"
    with open(bad, "wb") as f:
        pickle.dump({"train": {"cids": [], "cluster": [], "qidxs": []}, "val": {}}, f)
    with pytest.raises(SfMFormatError, match="pidxs"):
        NightTuplesDataset("x", "train", pkl_path=bad, progress=False)
    with pytest.raises(SfMFormatError, match="training db not found"):
        NightTuplesDataset("no-such-db", "train", data_root=tmp_path)


def test_small_negative_pool_is_a_clear_error(tmp_path):
    make_tiny_sfm_db(tmp_path, clusters=6, images_per_cluster=4)  # train split: 4 clusters
    ds = make(tmp_path, nnum=3, poolsize=2)
    from dsa_plugin.mining import NotEnoughClustersError

    with pytest.raises(NotEnoughClustersError, match="use a larger pool"):
        ds.create_epoch_tuples(TinyGeM())


def test_night_from_a_generator_checkpoint(tiny_db, tmp_path):
    """config.generator -> night_source_from_config -> NightTranslator, in mining and in tuples."""
    checkpoints = pytest.importorskip("dsa_plugin.models.checkpoints")
    from dsa_plugin.models import ResnetGenerator

    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=4, n_blocks=1).eval()
    path = tmp_path / "gen.pth"
    checkpoints.save_network(path, gen)
    config = DSAConfig(generator=str(path), night_ratio=0.5)
    ds = make(tiny_db, config=config, qsize=18, nnum=2)
    ds.create_epoch_tuples(TinyGeM())
    expected = [q for q in ds.qidxs if is_night(ds.names[q], "anc", 0.5)]
    assert ds.night_anchor_indices == expected and ds.stats["night_anchors_mining"] == len(expected)
    i = ds.qidxs.index(expected[0])
    anchor = ds[i][0][0]
    x01 = load_image01(ds.images[expected[0]], IMSIZE)
    night = ds.night_source().night(ds.names[expected[0]], x01)
    torch.testing.assert_close(anchor, _normalize(night[None], IMAGENET))
    assert not torch.allclose(anchor, _normalize(x01[None], IMAGENET), atol=1e-2)


class BatchOneNet(TinyGeM):
    """Like HOW's global descriptor: a 1 x D accumulator, so only batch 1 works."""

    def forward(self, x):
        desc = torch.zeros(1, self.meta["outputdim"])
        desc += super().forward(x).t().squeeze()
        return desc


class BatchDependentNet(TinyGeM):
    """Normalises over the whole batch: runs, but descriptors depend on the batch."""

    def forward(self, x):
        return super().forward(x / x.abs().max())


@pytest.mark.parametrize("net_cls", [BatchOneNet, BatchDependentNet])
def test_nets_that_are_not_batch_safe_fall_back_to_one_by_one(tiny_db, net_cls):
    ds = make(tiny_db, batch_size=8)
    idx = list(range(12))
    with pytest.warns(UserWarning, match="one image at a time"):
        got = ds.extract(idx, "neg-pool-mine", net_cls())
    want = torch.cat([ds.extract([i], "neg-pool-mine", net_cls(), batch_size=1) for i in idx], dim=1)
    torch.testing.assert_close(got, want)


def test_pool_day_descriptors_serve_the_negative_pool(tiny_db):
    """With diverse anchors, negative-pool images that were in the anchor pool as day are not
    extracted again; the tuples equal those of a run that extracts everything."""
    config = DSAConfig(diverse_anchors=True, qpool_size=15, night_ratio=0.5)
    kw = dict(config=config, qsize=6, night_source=InvertNight())
    reused, fresh = make(tiny_db, **kw), make(tiny_db, reuse_anchor_descriptors=False, **kw)
    d_reused = reused.create_epoch_tuples(TinyGeM())
    d_fresh = fresh.create_epoch_tuples(TinyGeM())
    assert reused.stats["descriptors_reused"] > 0 and fresh.stats["descriptors_reused"] == 0
    assert reused.stats["images_extracted"] == fresh.stats["images_extracted"] - 6 - reused.stats["descriptors_reused"]
    assert (reused.qidxs, reused.pidxs, reused.nidxs) == (fresh.qidxs, fresh.pidxs, fresh.nidxs)
    assert d_reused == pytest.approx(d_fresh, abs=1e-5)
    check_negatives(reused)


def test_tuple_images_batched_clahe_equals_one_call_per_image(tiny_db):
    from dsa_plugin.transforms import clahe, normalize

    ds = make(tiny_db, config=DSAConfig(clahe=True, night_ratio=0.5), night_source=InvertNight())
    ds.create_epoch_tuples(TinyGeM())
    for i in range(3):
        images, _ = ds[i]
        labels = ["anc", "pos"] + ["neg"] * ds.nnum
        for img, idx, label in zip(images, [ds.qidxs[i], ds.pidxs[i], *ds.nidxs[i]], labels):
            x01 = load_image01(ds.images[idx], IMSIZE)
            if label == "anc" and is_night(ds.names[idx], "anc", 0.5):
                x01 = 1.0 - x01
            assert torch.equal(img, normalize(clahe(x01[None]), IMAGENET))
