"""Night cache vs online translation: the network sees the same input bit for bit; changed inputs are caught."""

import csv
import os
import warnings

import pytest
import torch

from dsa_plugin.core.images import load_image01
from dsa_plugin.models import ResnetGenerator
from dsa_plugin.night import NightCache, NightSource, NightTranslator, StaleCacheError, build_night_cache, image_name
from dsa_plugin.night.cache import quantise_night
from dsa_plugin.transforms import IMAGENET_MEAN_STD, clahe, normalize


def translator(seed=0):
    torch.manual_seed(seed)
    return NightTranslator(ResnetGenerator(ngf=4, n_blocks=1))


def network_input(night01):
    """What the tuple loader's plain path hands the network: CLAHE, then ImageNet mean/std."""
    return normalize(clahe(night01), IMAGENET_MEAN_STD)


def amos_photos(amos_dir, n=6):
    with open(amos_dir / "labels.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    day = [r["file"] for r in rows if r["domain"] == "day"][: n // 2]
    night = [r["file"] for r in rows if r["domain"] == "night"][: n - n // 2]
    return [str(amos_dir / f) for f in day + night]


@pytest.mark.parametrize("image_size", [96, 181])
def test_cached_and_online_network_inputs_are_bitwise_equal_on_real_photos(amos_dir, tmp_path, image_size):
    paths = amos_photos(amos_dir)
    t = translator()
    cache = build_night_cache(tmp_path / "cache", paths, t, ratio=1.0, image_size=image_size, fmt="png",
                              batch_size=2, workers=1, progress=False)
    assert len(cache) == len(paths)
    cached = NightSource(cache=NightCache.open(tmp_path / "cache", generator=t.fingerprint), ratio=1.0)
    online = NightSource(t, ratio=1.0)
    eight_bit_differs = False
    for path in paths:
        name = image_name(path)
        x01 = load_image01(path, image_size).unsqueeze(0)
        assert max(x01.shape[-2:]) == image_size
        a, b = cached.night(name, x01), online.night(name, x01)
        assert torch.equal(network_input(a), network_input(b)), path
        # the snap to the cache's grid keeps the reference semantics: CLAHE of the raw float output is unchanged
        raw = t.translate(x01)
        assert torch.equal(clahe(raw), clahe(b))
        # and the old 8-bit storage was not good enough (this is what the test guards against)
        eight = torch.round(raw * 255) / 255
        eight_bit_differs |= not torch.equal(network_input(eight), network_input(raw))
    assert cached.stats["cached"] == online.stats["online"] == len(paths)
    assert eight_bit_differs


def test_changed_input_is_detected(amos_dir, tmp_path):
    src = amos_photos(amos_dir, n=4)
    work = tmp_path / "ims"
    work.mkdir()
    paths = []
    for p in src:
        dst = work / os.path.basename(p)
        dst.write_bytes(open(p, "rb").read())
        paths.append(str(dst))
    t = translator()
    out = tmp_path / "cache"
    cache = build_night_cache(out, paths, t, ratio=1.0, image_size=64, workers=1, progress=False)
    by_name = {image_name(p): p for p in paths}
    cache.check_inputs(by_name)  # unchanged: fine
    # same name, other content (another photo copied over it)
    victim, other = paths[0], paths[1]
    old_night = cache.load(image_name(victim))
    with open(other, "rb") as f:
        data = f.read()
    with open(victim, "wb") as f:
        f.write(data)
    with pytest.raises(
        StaleCacheError, match=rf"1 input image\(s\) changed since it was built, e\.g\. {victim}"
    ) as err:
        NightCache.open(out).check_inputs(by_name)
    assert "\n" not in str(err.value)
    # the same build command re-translates the changed image (and only it), then the cache is accepted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = build_night_cache(out, paths, t, ratio=1.0, image_size=64, workers=1, progress=False)
    assert any(f"1 input image(s) changed since {out} was built" in str(w.message) for w in caught)
    rebuilt.check_inputs(by_name)
    new_night = rebuilt.load(image_name(victim))
    want = quantise_night(t.translate(load_image01(victim, 64).unsqueeze(0))[0])
    assert torch.equal(new_night, want) and not torch.equal(new_night, old_night)


def test_check_inputs_is_wired_into_the_tuple_loader_config(amos_dir, tmp_path):
    from dsa_plugin.night.source import night_source_from_config

    src = amos_photos(amos_dir, n=2)[0]
    img = tmp_path / os.path.basename(src)
    img.write_bytes(open(src, "rb").read())
    t = translator()
    build_night_cache(tmp_path / "cache", [str(img)], t, ratio=1.0, image_size=64, workers=1, progress=False)

    class Config:
        generator, night_cache, night_ratio, night_label, device = None, str(tmp_path / "cache"), 1.0, "anc", "cpu"

    night_source_from_config(Config, image_size=64, inputs={image_name(str(img)): str(img)})
    os.utime(img, ns=(1, 1))
    with pytest.raises(StaleCacheError, match="changed since it was built"):
        night_source_from_config(Config, image_size=64, inputs={image_name(str(img)): str(img)})
