"""NightSource: the cached and the online path give the same night tensor; config wiring."""

import pytest
import torch

from dsa_plugin.core.config import DSAConfig
from dsa_plugin.core.images import load_image01
from dsa_plugin.data.lists import anchor_images_from_db
from dsa_plugin.data.sfm import db_paths
from dsa_plugin.models import ResnetGenerator
from dsa_plugin.models.checkpoints import save_network
from dsa_plugin.night import (
    NightCache,
    NightSource,
    NightTranslator,
    StaleCacheError,
    build_night_cache,
    image_name,
    night_source_from_config,
)

SIZE = 40


@pytest.fixture()
def setup(tiny_db, tmp_path):
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=4, n_blocks=1)
    ckpt = tmp_path / "g.pth"
    save_network(ckpt, g)
    translator = NightTranslator.from_checkpoint(ckpt)
    paths = anchor_images_from_db(db_paths(tiny_db)[0])
    cache_dir = tmp_path / "cache"
    build_night_cache(cache_dir, paths, translator, ratio=0.5, image_size=SIZE, progress=False)
    return translator, ckpt, cache_dir, {image_name(p): p for p in paths}


def test_cached_and_online_give_the_same_tensor(setup):
    translator, _, cache_dir, by_name = setup
    cache = NightCache.open(cache_dir, generator=translator.fingerprint)
    cached, online = NightSource(translator, cache, ratio=0.5), NightSource(translator, ratio=0.5)
    cache_only = NightSource(cache=cache, ratio=0.5)
    for name in cache.names:
        x01 = load_image01(by_name[name], SIZE).unsqueeze(0)  # 1x3x30x40, what the tuple loader holds
        a, b, c = cached.night(name, x01), online.night(name, x01), cache_only.night(name, x01)
        assert a.shape == b.shape == (1, 3, 32, 40)
        assert torch.equal(a, b)  # cached == online, bit for bit
        assert torch.equal(a, c)
        assert cached.night(name, x01[0]).shape == (3, 32, 40)
    assert cached.stats == {"cached": 2 * len(cache), "online": 0}
    assert online.stats == {"cached": 0, "online": len(cache)}
    # maybe_night: positives pass through unchanged; anchors are translated only when selected
    name = cache.names[0]
    x01 = load_image01(by_name[name], SIZE).unsqueeze(0)
    assert cached.maybe_night(name, "pos", x01) is x01
    assert cached.maybe_night(name, "anc-pool-mine", x01).shape == (1, 3, 32, 40)
    unselected = next(n for n in by_name if n not in cache)
    y = load_image01(by_name[unselected], SIZE).unsqueeze(0)
    assert cached.maybe_night(unselected, "anc", y) is y


def test_cache_miss_and_wrong_size(setup):
    translator, _, cache_dir, by_name = setup
    cache = NightCache.open(cache_dir)
    unselected = next(n for n in by_name if n not in cache)
    x01 = load_image01(by_name[unselected], SIZE).unsqueeze(0)
    with pytest.raises(StaleCacheError, match="not in the night cache"):
        NightSource(cache=cache, ratio=0.5).night(unselected, x01)
    # falls back to the generator when one is given
    assert NightSource(translator, cache, ratio=0.5).night(unselected, x01).shape == (1, 3, 32, 40)
    name = cache.names[0]
    big = load_image01(by_name[name], 64).unsqueeze(0)
    with pytest.raises(StaleCacheError, match="image_size=40"):
        NightSource(cache=cache, ratio=0.5).night(name, big)


def test_source_refuses_a_cache_of_other_settings(setup):
    translator, _, cache_dir, _ = setup
    cache = NightCache.open(cache_dir)
    with pytest.raises(StaleCacheError, match="ratio: expected 0.25, found 0.5"):
        NightSource(translator, cache, ratio=0.25)
    torch.manual_seed(5)
    other = NightTranslator(ResnetGenerator(ngf=4, n_blocks=1))
    with pytest.raises(StaleCacheError, match="generator: expected"):
        NightSource(other, cache, ratio=0.5)
    with pytest.raises(ValueError, match="translator, a cache"):
        NightSource()


def test_night_source_from_config(setup, tmp_path):
    translator, ckpt, cache_dir, by_name = setup
    assert night_source_from_config(DSAConfig(), "cpu", SIZE) is None
    online = night_source_from_config(DSAConfig(generator=str(ckpt), night_ratio=0.5), "cpu", SIZE)
    assert online.cache is None and online.translator.fingerprint == translator.fingerprint
    both = night_source_from_config(
        DSAConfig(generator=str(ckpt), night_cache=str(cache_dir), night_ratio=0.5), "cpu", SIZE
    )
    assert both.cache is not None and both.translator is not None
    only = night_source_from_config(DSAConfig(night_cache=str(cache_dir), night_ratio=0.5), "cpu", SIZE)
    assert only.translator is None and len(only.cache) > 0
    with pytest.raises(StaleCacheError, match="ratio: expected 0.25, found 0.5"):
        night_source_from_config(DSAConfig(generator=str(ckpt), night_cache=str(cache_dir)), "cpu", SIZE)
    with pytest.raises(StaleCacheError, match="image_size: expected 362, found 40"):
        night_source_from_config(DSAConfig(night_cache=str(cache_dir), night_ratio=0.5), "cpu", 362)
    other = tmp_path / "other.pth"
    torch.manual_seed(7)
    save_network(other, ResnetGenerator(ngf=4, n_blocks=1))
    with pytest.raises(StaleCacheError, match="generator"):
        night_source_from_config(
            DSAConfig(generator=str(other), night_cache=str(cache_dir), night_ratio=0.5), "cpu", SIZE
        )
