"""CycleGAN's image pool (docs/reference.md §image-pool): fill first, then swap with probability 1/2."""

import pytest
import torch

from dsa_plugin.gan.image_pool import ImagePool


def batch(start: int, n: int) -> torch.Tensor:
    """``n`` 1x1x1 images whose single value is their serial number, so each can be traced."""
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1)


def ids(images: torch.Tensor) -> list[int]:
    return [int(v) for v in images.flatten()]


def test_until_full_every_image_is_stored_and_returned():
    pool = ImagePool(5, seed=0)
    assert ids(pool.query(batch(0, 3))) == [0, 1, 2]
    assert ids(pool.query(batch(3, 2))) == [3, 4]
    assert sorted(ids(torch.cat(pool.images))) == [0, 1, 2, 3, 4]


def test_full_pool_swaps_half_of_the_images_with_stored_ones():
    size, n = 50, 4000
    pool = ImagePool(size, seed=0)
    pool.query(batch(0, size))  # fill
    swapped = 0
    for i in range(size, size + n):
        before = ids(torch.cat(pool.images))
        out = ids(pool.query(batch(i, 1)))[0]
        after = ids(torch.cat(pool.images))
        if out == i:  # returned as is; the pool is unchanged
            assert after == before
        else:  # a stored image came out and the new one took its place
            swapped += 1
            k = before.index(out)
            assert after[k] == i and after[:k] + after[k + 1:] == before[:k] + before[k + 1:]
    # Binomial(4000, 1/2): standard deviation 0.0079 of the fraction; 0.4 or 0.6 is > 12 sigma away.
    assert swapped / n == pytest.approx(0.5, abs=0.04)


def test_swap_draws_every_slot():
    pool = ImagePool(10, seed=1)
    pool.query(batch(0, 10))
    out = ids(pool.query(batch(10, 2000)))
    assert {v for v in out if v < 10} == set(range(10))  # every original slot was drawn at some point


def test_seeded_and_resumable():
    a, b = ImagePool(8, seed=3), ImagePool(8, seed=3)
    assert ids(a.query(batch(0, 30))) == ids(b.query(batch(0, 30)))
    state = a.state_dict()
    c = ImagePool(8, seed=99)
    c.load_state_dict(state)
    assert ids(a.query(batch(30, 40))) == ids(c.query(batch(30, 40)))


def test_size_zero_passes_through_detached():
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    out = ImagePool(0).query(x)
    assert torch.equal(out, x) and not out.requires_grad
