"""Test-set readers: cirtorch test/<name>/ layout, folder datasets, and their error messages."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from dsa_plugin.evaluation.datasets import TestSetError, load_folder_dataset, load_test_set
from test_eval_helpers import make_folder, make_test_set


def test_revisited_test_set_reads_images_boxes_and_protocol(tmp_path):
    make_test_set(tmp_path, "roxford5k", revisited=True)
    rs = load_test_set("roxford5k", tmp_path)
    assert rs.protocol == "revisited"
    assert len(rs.images) == 8 and len(rs.qimages) == 2
    assert rs.images[0].endswith("test/roxford5k/jpg/db000.jpg")
    assert rs.bbxs[0] == (2.0, 3.0, 40.0, 30.0)
    assert not rs.all_vs_all


def test_old_protocol_and_all_vs_all(tmp_path):
    make_test_set(tmp_path, "247tokyo1k", revisited=False, all_vs_all=True)
    rs = load_test_set("247TOKYO1K", tmp_path)  # names are case-insensitive, like the standard code
    assert rs.protocol == "old"
    assert rs.all_vs_all and rs.bbxs == [None] * 8


def test_missing_gnd_file_is_named(tmp_path):
    with pytest.raises(TestSetError, match=r"test/rparis6k/gnd_rparis6k\.pkl"):
        load_test_set("rparis6k", tmp_path)
    with pytest.raises(TestSetError, match="known sets"):
        load_test_set("tokyo", tmp_path)


def test_listed_but_absent_image_is_named(tmp_path):
    base = make_test_set(tmp_path, "roxford5k")
    (base / "jpg" / "db005.jpg").unlink()
    with pytest.raises(TestSetError, match=r"gnd_roxford5k\.pkl: listed image not found: .*db005\.jpg"):
        load_test_set("roxford5k", tmp_path)
    assert len(load_test_set("roxford5k", tmp_path, check_images=False).images) == 8


def _rewrite(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_wrong_pickle_layout_names_file_and_key(tmp_path):
    base = make_test_set(tmp_path, "roxford5k")
    gnd_path = base / "gnd_roxford5k.pkl"
    with open(gnd_path, "rb") as f:
        cfg = pickle.load(f)
    _rewrite(gnd_path, {k: v for k, v in cfg.items() if k != "gnd"})
    with pytest.raises(TestSetError, match=r"gnd_roxford5k\.pkl: missing key\(s\) \['gnd'\]"):
        load_test_set("roxford5k", tmp_path)
    _rewrite(gnd_path, [1, 2, 3])
    with pytest.raises(TestSetError, match="expected a dict"):
        load_test_set("roxford5k", tmp_path)
    bad = dict(cfg, gnd=[{"easy": [0], "junk": []}, {"easy": [1], "junk": []}])
    _rewrite(gnd_path, bad)
    with pytest.raises(TestSetError, match=r"gnd_roxford5k\.pkl: .*gnd\[0\].*expected 'ok'"):
        load_test_set("roxford5k", tmp_path)
    bad = dict(cfg, gnd=[dict(g) for g in cfg["gnd"]])
    del bad["gnd"][1]["hard"]
    _rewrite(gnd_path, bad)
    with pytest.raises(TestSetError, match=r"gnd\[1\] lacks key\(s\) \['hard'\]"):
        load_test_set("roxford5k", tmp_path)
    bad = dict(cfg, gnd=[dict(g, easy=np.array([99])) for g in cfg["gnd"]])
    _rewrite(gnd_path, bad)
    with pytest.raises(TestSetError, match=r"gnd\[0\]\['easy'\] indexes outside imlist"):
        load_test_set("roxford5k", tmp_path)
    _rewrite(gnd_path, dict(cfg, qimlist=cfg["qimlist"][:1]))
    with pytest.raises(TestSetError, match="'gnd' has 2 entries but 'qimlist' has 1"):
        load_test_set("roxford5k", tmp_path)


def test_folder_night_to_day_and_day_to_day(tmp_path):
    make_folder(tmp_path)
    ds = load_folder_dataset(tmp_path)
    assert len(ds.files) == 15 and ds.domain_names == ["day", "night"]
    q, db, gnd = ds.split("night", "day")
    assert len(q) == 6 and len(db) == 9
    for qi, g in zip(q, gnd):
        assert sorted(ds.places[db[j]] for j in g["ok"]) == [ds.places[qi]] * 3
        assert len(g["junk"]) == 0
    q, db, gnd = ds.split("day", "day")
    for qi, g in zip(q, gnd):
        # the query is junk (= removed from its db) and not a positive of itself
        assert db[g["junk"][0]] == qi
        assert qi not in db[g["ok"]]
        assert len(g["ok"]) == 2


def test_folder_role_filter_and_errors(tmp_path):
    make_folder(tmp_path)
    ds = load_folder_dataset(tmp_path, role="eval")
    assert set(ds.places) == {"place0", "place2"}
    with pytest.raises(TestSetError, match=r"no row has role 'test' \(roles: \['eval', 'train'\]\)"):
        load_folder_dataset(tmp_path, role="test")
    with pytest.raises(TestSetError, match="no image has domain 'dusk'"):
        ds.split("dusk", "day")
    (tmp_path / "night" / "p1_0.jpg").unlink()
    with pytest.raises(TestSetError, match=r"labels\.csv: listed image not found: .*p1_0\.jpg"):
        load_folder_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("file,place_id\nday/p0_0.jpg,place0\n")
    with pytest.raises(TestSetError, match=r"missing column\(s\) \['domain'\]"):
        load_folder_dataset(tmp_path)
    with pytest.raises(TestSetError, match="labels file not found"):
        load_folder_dataset(tmp_path / "nowhere")


def test_amos_eval_places(amos_dir):
    ds = load_folder_dataset(amos_dir, role="eval")
    assert len(ds.files) == 143
    q, db, gnd = ds.split("night", "day")
    assert len(q) == 66 and len(db) == 77
    assert all(len(g["ok"]) >= 7 for g in gnd)  # every eval place has >= 7 day images
    assert len(set(ds.places)) == 6
