import pickle

import pytest

from dsa_plugin.core.config import ConfigError, DSAConfig
from dsa_plugin.data import SfMFormatError, load_sfm_db
from dsa_plugin.data.sfm import db_paths


def test_defaults_are_the_papers():
    c = DSAConfig()
    assert (c.night_ratio, c.night_label, c.qpool_size, c.similar_exclude, c.similar_include) == (
        0.25,
        "anc",
        10000,
        0.2,
        0.8,
    )
    assert not c.enabled and c.tag() == ""


def test_unknown_key_names_it_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"night_ration.*valid keys.*night_ratio"):
        DSAConfig.from_dict({"night_ration": 0.3})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"night_ratio": 1.5}, "night_ratio must be in"),
        ({"night_ratio": True}, "night_ratio must be float"),
        ({"qpool_size": "10"}, "qpool_size must be int"),
        ({"similar_exclude": 0.9, "similar_include": 0.1}, "must be >= similar_exclude"),
        ({"device": "gpu0"}, "device must be"),
        ({"diverse_anchors": "yes"}, "diverse_anchors must be bool"),
        ({"clahe_grid": 0}, "clahe_grid must be a positive number of tiles"),
        ({"clahe_grid": 2.5}, "clahe_grid must be int"),
    ],
)
def test_bad_values_are_rejected(values, message):
    with pytest.raises(ConfigError, match=message):
        DSAConfig.from_dict(values)


def test_tag_reflects_settings():
    tag = DSAConfig(generator="g.pth", diverse_anchors=True, clahe=True).tag()
    assert "night0.25_anc" in tag and "diverse10000" in tag and tag.endswith("_clahe")
    assert DSAConfig(clahe=True, clahe_grid=2).tag() == "_clahe2"


def test_tiny_db_roundtrip(tiny_db):
    pkl, ims = db_paths(tiny_db)
    train = load_sfm_db(pkl, "train")
    val = load_sfm_db(pkl, "val")
    assert len(train.images) == 24 and len(val.images) == 8
    assert set(train.clusters).isdisjoint(val.clusters)
    for q, p in zip(train.qidxs, train.pidxs):
        assert train.clusters[q] == train.clusters[p]
    assert all(__import__("os").path.isfile(p) for p in train.images)
    assert train.names[0] in train.images[0]


def test_wrong_layout_names_missing_key(tmp_path):
    bad = tmp_path / "db.pkl"
    bad.write_bytes(pickle.dumps({"train": {"cids": [], "qidxs": [], "pidxs": []}}))
    with pytest.raises(SfMFormatError, match=r"lacks key\(s\) \['cluster'\]"):
        load_sfm_db(bad, "train")
    with pytest.raises(SfMFormatError, match="missing split 'val'"):
        load_sfm_db(bad, "val")
