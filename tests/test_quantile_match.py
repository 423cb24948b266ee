"""Per-channel quantile matching (the night-colours warm-up's target)."""

from __future__ import annotations

import pytest
import torch

from dsa_plugin.gan.quantile_match import QuantileMatch, channel_quantiles, match_quantiles


def _sets(seed=0):
    g = torch.Generator().manual_seed(seed)
    day = [torch.rand(3, 20, 30, generator=g) for _ in range(6)]
    # night: darker, blue-shifted, another shape of distribution
    night = [torch.rand(3, 25, 20, generator=g) ** 3 * torch.tensor([0.3, 0.4, 0.8]).view(3, 1, 1)
             for _ in range(6)]
    return day, night


def test_mapped_set_has_the_target_sets_quantiles():
    day, night = _sets()
    m = QuantileMatch.fit(day, night, per_image=10_000)
    mapped = [m(x) for x in day]
    got = channel_quantiles(mapped, levels=11, per_image=10_000)
    want = channel_quantiles(night, levels=11, per_image=10_000)
    assert torch.allclose(got, want, atol=0.02)
    # and not trivially: the day set's own quantiles are far from the night's
    assert (channel_quantiles(day, levels=11) - want).abs().max() > 0.3


def test_matching_a_set_onto_itself_is_the_identity_and_order_is_kept():
    day, _ = _sets(1)
    q = channel_quantiles(day, per_image=10_000)
    x = day[0]
    assert torch.allclose(match_quantiles(x, q, q), x, atol=1e-5)
    _, night = _sets(2)
    y = match_quantiles(x, q, channel_quantiles(night))
    order = x[2].flatten().argsort()
    assert bool((y[2].flatten()[order].diff() >= -1e-7).all())  # monotone per channel


def test_values_outside_the_source_range_clamp_to_the_target_ends_and_batches_work():
    src = torch.tensor([[0.2, 0.4, 0.6]] * 3)
    dst = torch.tensor([[0.0, 0.1, 0.3]] * 3)
    x = torch.tensor([0.0, 0.3, 0.5, 1.0]).view(1, 1, 1, 4).expand(2, 3, 1, 4)
    y = match_quantiles(x, src, dst)
    assert y.shape == x.shape
    assert torch.allclose(y[0, 0, 0], torch.tensor([0.0, 0.05, 0.2, 0.3]))
    inv = QuantileMatch(src, dst).inverse()
    assert torch.allclose(inv(y[0]), torch.tensor([0.2, 0.3, 0.5, 0.6]).view(1, 1, 4).expand(3, 1, 4))


def test_ties_in_the_source_quantiles_do_not_divide_by_zero():
    src = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    dst = torch.tensor([[0.0, 0.2, 0.4, 0.6]])
    y = match_quantiles(torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 3), src, dst)
    assert torch.isfinite(y).all() and torch.allclose(y.flatten(), torch.tensor([0.0, 0.3, 0.4]))


def test_the_pixel_sample_is_seeded():
    day, _ = _sets()
    a = channel_quantiles(day, per_image=50, seed=3)
    assert torch.equal(a, channel_quantiles(day, per_image=50, seed=3))
    assert not torch.equal(a, channel_quantiles(day, per_image=50, seed=4))


@pytest.mark.parametrize("call, message", [
    (lambda: channel_quantiles([]), "no images"),
    (lambda: channel_quantiles([torch.rand(3, 4, 4)], levels=1), "levels must be >= 2"),
    (lambda: channel_quantiles([torch.rand(4, 4)]), r"image 0 must be \[C, H, W\]"),
    (lambda: channel_quantiles([torch.rand(3, 4, 4), torch.rand(1, 4, 4)]), r"different channel counts \[1, 3\]"),
    (lambda: match_quantiles(torch.rand(3, 4, 4), torch.rand(3, 8), torch.rand(3, 9)), "must both be"),
    (lambda: match_quantiles(torch.rand(1, 4, 4), torch.rand(3, 8), torch.rand(3, 8)), r"\[\.\.\., 3, H, W\]"),
])
def test_bad_input_names_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()
