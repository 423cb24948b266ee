"""Night cache: manifest, lossless storage, resume, stale/partial detection, bad input, `dsa translate`."""

import json
import os
import subprocess

import pytest
import torch

from dsa_plugin.core.images import load_image01
from dsa_plugin.data.lists import anchor_images_from_db, read_image_list
from dsa_plugin.data.sfm import db_paths, load_sfm_db
from dsa_plugin.models import ResnetGenerator
from dsa_plugin.models.checkpoints import save_network
from dsa_plugin.night import (
    NightCache,
    NightCacheError,
    NightTranslator,
    StaleCacheError,
    build_night_cache,
    image_name,
)
from dsa_plugin.night.cache import quantise_night

SIZE = 40  # the tiny db's 48x64 images are shrunk to 30x40, translated to 32x40


def tiny_translator(seed=0):
    torch.manual_seed(seed)
    return NightTranslator(ResnetGenerator(ngf=4, n_blocks=1))


def db_anchors(root):
    pkl, _ = db_paths(root)
    return anchor_images_from_db(pkl)


def literal_selected(paths, ratio):
    import hashlib

    out = set()
    for p in paths:
        name = os.path.basename(p)
        d = hashlib.md5(name.encode()).digest()
        if (d[-2] * 256 + d[-1]) / 65536 < ratio:
            out.add(name)
    return out


def test_anchor_images_are_the_query_images_of_both_splits(tiny_db):
    pkl, _ = db_paths(tiny_db)
    paths = anchor_images_from_db(pkl)
    want = []
    for split in ("train", "val"):
        db = load_sfm_db(pkl, split)
        want += [db.images[q] for q in dict.fromkeys(db.qidxs)]
    assert paths == want and len(paths) == len(set(paths)) == 24


def test_build_open_and_cached_equals_online(tiny_db, tmp_path):
    paths = db_anchors(tiny_db)
    t = tiny_translator()
    for fmt in ("png", "pt"):
        check_format(paths, t, tmp_path, fmt)


def check_format(paths, t, tmp_path, fmt):
    out = tmp_path / f"cache-{fmt}"
    cache = build_night_cache(out, paths, t, ratio=0.5, image_size=SIZE, fmt=fmt, batch_size=3, progress=False)
    assert set(cache.names) == literal_selected(paths, 0.5) and len(cache) > 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["generator"] == t.fingerprint
    assert (manifest["ratio"], manifest["prefix"], manifest["image_size"], manifest["clahe"], manifest["format"]) == (
        0.5, "anc", SIZE, None, fmt)
    reopened = NightCache.open(
        out, generator=t.fingerprint, ratio=0.5, prefix="anc", image_size=SIZE, clahe=None, format=fmt
    )
    by_name = {image_name(p): p for p in paths}
    for name in reopened.names:
        x01 = load_image01(by_name[name], SIZE)
        online = t.translate(x01.unsqueeze(0))[0]
        cached = reopened.load(name)
        assert cached.shape == online.shape == (3, 32, 40) and cached.dtype == torch.float32
        assert torch.equal(cached, quantise_night(online))  # both formats hold the snapped output exactly
        assert (cached - online).abs().max() <= 0.5 / 16384 + 1e-7
    # no temp files left behind
    assert not [f for _, _, files in os.walk(out) for f in files if f.endswith(".tmp")]


def test_resume_after_kill_translates_only_missing(tiny_db, tmp_path):
    paths = db_anchors(tiny_db)
    t = tiny_translator()
    out = tmp_path / "cache"
    cache = build_night_cache(out, paths, t, ratio=0.5, image_size=SIZE, progress=False)
    victim = cache.names[0]
    cache.path(victim).unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))  # what a killed build leaves
    orphan = cache.path(victim).parent / f".{victim}.png.x1y2z3.tmp"  # a write cut by SIGKILL
    orphan.write_bytes(b"half a png")
    with pytest.raises(StaleCacheError, match="partial night cache"):
        NightCache.open(out)
    stamps = {n: cache.path(n).stat().st_mtime_ns for n in cache.names[1:]}

    translated = []
    original = t.translate

    def spy(x):
        translated.append(x.shape[0])
        return original(x)

    t.translate = spy
    again = build_night_cache(out, paths, t, ratio=0.5, image_size=SIZE, progress=False)
    assert sum(translated) == 1 and victim in again
    assert {n: again.path(n).stat().st_mtime_ns for n in cache.names[1:]} == stamps
    assert not orphan.exists()


def test_overwrite_deletes_only_the_files_the_cache_listed(tiny_db, tmp_path):
    paths = db_anchors(tiny_db)
    out = tmp_path / "cache"
    cache = build_night_cache(out, paths, tiny_translator(), ratio=0.5, image_size=SIZE, progress=False)
    listed = cache.path(cache.names[0])
    user_files = [listed.parent / "holiday.png", out / "ab" / "notes.pt", out / "readme.png"]
    for f in user_files:
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"the user's own")
    # another ratio selects other images: the old cache's files go, the user's stay
    rebuilt = build_night_cache(out, paths, tiny_translator(seed=1), ratio=1.0, image_size=SIZE, overwrite=True,
                                progress=False)
    assert all(f.read_bytes() == b"the user's own" for f in user_files)
    stored = {p for p in out.rglob("*") if p.is_file() and p.suffix in (".png", ".pt")} - set(user_files)
    assert stored == {rebuilt.path(n) for n in rebuilt.names}


def test_stale_cache_names_the_field(tiny_db, tmp_path):
    paths = db_anchors(tiny_db)
    t = tiny_translator()
    out = tmp_path / "cache"
    build_night_cache(out, paths, t, ratio=0.5, image_size=SIZE, progress=False)
    other = tiny_translator(seed=1)
    with pytest.raises(StaleCacheError) as err:
        NightCache.open(out, generator=other.fingerprint)
    assert "generator" in str(err.value) and other.fingerprint in str(err.value) and t.fingerprint in str(err.value)
    with pytest.raises(StaleCacheError, match=r"ratio: expected 0.25, found 0.5"):
        NightCache.open(out, ratio=0.25)
    with pytest.raises(StaleCacheError, match=r"image_size: expected 362, found 40"):
        NightCache.open(out, image_size=362)
    with pytest.raises(StaleCacheError, match="clahe"):
        NightCache.open(out, clahe=True)
    with pytest.raises(StaleCacheError, match="no night cache"):
        NightCache.open(tmp_path / "elsewhere")
    with pytest.raises(TypeError, match="unknown setting"):
        NightCache.open(out, ratoi=0.5)
    # building into it with another generator or ratio is refused, unless overwrite
    with pytest.raises(NightCacheError, match="other settings.*generator"):
        build_night_cache(out, paths, other, ratio=0.5, image_size=SIZE, progress=False)
    with pytest.raises(NightCacheError, match="ratio: expected 0.25, found 0.5"):
        build_night_cache(out, paths, t, ratio=0.25, image_size=SIZE, progress=False)
    rebuilt = build_night_cache(out, paths, other, ratio=0.5, image_size=SIZE, overwrite=True, progress=False)
    assert rebuilt.settings["generator"] == other.fingerprint
    by_name = {image_name(p): p for p in paths}
    for name in rebuilt.names:  # really re-translated, not resumed from the old generator's files
        online = other.translate(load_image01(by_name[name], SIZE))
        assert torch.equal(rebuilt.load(name), quantise_night(online))
    # a listed file that vanished
    rebuilt.path(rebuilt.names[0]).unlink()
    with pytest.raises(StaleCacheError, match="missing"):
        NightCache.open(out)


def test_missing_image_and_unwritable_dir(tiny_db, tmp_path):
    t = tiny_translator()
    paths = db_anchors(tiny_db)[:3] + [str(tmp_path / "no" / "such_image.jpg")]
    with pytest.raises(NightCacheError, match=r"1 selected image\(s\) not found: .*such_image.jpg"):
        build_night_cache(tmp_path / "c", paths, t, ratio=1.0, image_size=SIZE, progress=False)
    assert not (tmp_path / "c").exists()  # nothing done before the check
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NightCacheError, match=f"cannot write the night cache to {blocker / 'cache'}"):
        build_night_cache(blocker / "cache", paths[:3], t, ratio=1.0, image_size=SIZE, progress=False)
    if os.geteuid() != 0:
        ro = tmp_path / "readonly"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(NightCacheError, match="cannot write"):
            build_night_cache(ro, paths[:3], t, ratio=1.0, image_size=SIZE, progress=False)


def test_duplicate_names_refused(tiny_db, tmp_path):
    a = db_anchors(tiny_db)[0]
    b = tmp_path / "other" / os.path.basename(a)
    b.parent.mkdir()
    b.write_bytes(open(a, "rb").read())
    with pytest.raises(NightCacheError, match="share the name"):
        build_night_cache(tmp_path / "c", [a, str(b)], tiny_translator(), ratio=1.0, progress=False)


def test_image_list(tmp_path, tiny_db):
    paths = db_anchors(tiny_db)[:4]
    lst = tmp_path / "list.txt"
    lst.write_text("# night candidates\n" + "\n".join(os.path.relpath(p, tmp_path) for p in paths) + "\n\n")
    assert read_image_list(lst) == [os.path.join(tmp_path, os.path.relpath(p, tmp_path)) for p in paths]
    with pytest.raises(FileNotFoundError, match="image list not found"):
        read_image_list(tmp_path / "missing.txt")


def run_dsa(capsys, *args):
    from dsa_plugin.cli import main

    capsys.readouterr()
    code = main(["translate", *args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_cli_translate(tiny_db, tmp_path, capsys):
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=4, n_blocks=1)
    ckpt = tmp_path / "g.pth"
    save_network(ckpt, g)
    out = tmp_path / "night"
    res = run_dsa(capsys, "--generator", str(ckpt), "--data-root", str(tiny_db), "--out", str(out), "--ratio", "0.5",
                  "--image-size", str(SIZE), "--no-progress")
    assert res.returncode == 0, res.stderr
    fp = NightTranslator(g).fingerprint
    cache = NightCache.open(out, generator=fp, ratio=0.5, image_size=SIZE)
    assert set(cache.names) == literal_selected(db_anchors(tiny_db), 0.5)
    assert f"{len(cache)} night images of 24 candidates" in res.stdout

    # wrong-architecture generator: exit code 2, message names the file
    bad = tmp_path / "bad.pth"
    torch.save({"model.0.weight": torch.zeros(4, 3, 4, 4)}, bad)
    res = run_dsa(capsys, "--generator", str(bad), "--data-root", str(tiny_db), "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and str(bad) in res.stderr and "generator" in res.stderr


def test_amp_is_a_setting_a_resume_cannot_mix(tiny_db, tmp_path):
    """A killed fp32 build resumed with --amp would mix fp32 and autocast pixels: refused."""
    paths = db_anchors(tiny_db)
    out = tmp_path / "cache"
    cache = build_night_cache(out, paths, tiny_translator(), ratio=0.5, image_size=SIZE, progress=False)
    assert cache.settings["amp"] is False
    amp = tiny_translator()
    amp.amp = True
    with pytest.raises(NightCacheError, match=r"amp: expected True, found False"):
        build_night_cache(out, paths, amp, ratio=0.5, image_size=SIZE, progress=False)
    with pytest.raises(StaleCacheError, match="amp"):
        NightCache.open(out, amp=True)


def test_files_without_manifest_are_not_adopted(tiny_db, tmp_path):
    paths = db_anchors(tiny_db)
    out = tmp_path / "cache"
    t = tiny_translator()
    cache = build_night_cache(out, paths, t, ratio=0.5, image_size=SIZE, progress=False)
    (out / "manifest.json").unlink()
    victim = cache.path(cache.names[0])
    victim.write_bytes(b"not the generator's output")
    with pytest.raises(NightCacheError, match="no manifest.json; refusing to adopt"):
        build_night_cache(out, paths, t, ratio=0.5, image_size=SIZE, progress=False)
    rebuilt = build_night_cache(out, paths, t, ratio=0.5, image_size=SIZE, overwrite=True, progress=False)
    rebuilt.load(cache.names[0])  # re-translated: a valid image again


def _hand_made_cache(root, **manifest):
    """A complete one-image cache written by hand (``manifest`` overrides its keys)."""
    import json

    from dsa_plugin.night.cache import CACHE_KIND, CACHE_VERSION, MANIFEST, entry_file

    name = "0123456789abcdef"
    (root / entry_file(name, "png")).parent.mkdir(parents=True)
    (root / entry_file(name, "png")).write_bytes(b"")
    values = {"kind": CACHE_KIND, "version": CACHE_VERSION, "generator": "0" * 64, "ratio": 1.0, "prefix": "",
              "image_size": 362, "clahe": None, "format": "png", "amp": False, "source": "x", "complete": True,
              "count": 1, "inputs": {}, "entries": {name: entry_file(name, "png")}, **manifest}
    (root / MANIFEST).write_text(json.dumps(values))
    return root


def test_open_refuses_another_cache_version(tmp_path):
    from dsa_plugin.night.cache import CACHE_VERSION, NightCache, StaleCacheError

    assert len(NightCache.open(_hand_made_cache(tmp_path / "ok"))) == 1  # the same cache at this version opens
    for version in (CACHE_VERSION - 1, CACHE_VERSION + 1, None):
        with pytest.raises(StaleCacheError, match=rf"manifest version {version!r}; this dsa_plugin reads version"):
            NightCache.open(_hand_made_cache(tmp_path / f"v{version}", version=version))


@pytest.mark.parametrize("entry", ["../../../../etc/hostname", "/etc/hostname", "ef/../../x.png", "ef/other.png"])
def test_open_refuses_manifest_entries_outside_the_cache(tmp_path, entry):
    from dsa_plugin.night.cache import NightCache, NightCacheError

    root = _hand_made_cache(tmp_path / "c", entries={"0123456789abcdef": entry})
    with pytest.raises(NightCacheError, match="is not a file of this cache"):
        NightCache.open(root, verify_files=False)
