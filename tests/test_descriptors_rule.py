"""The one descriptor-orientation rule (dsa_plugin.core.descriptors) and equal-size batching
(dsa_plugin.core.batching)."""

import pytest
import torch
from torch import nn

from dsa_plugin.core.batching import batches_by_size
from dsa_plugin.core.descriptors import as_columns, as_rows, declared_dim, net_rows


def test_rows_and_columns_by_batch_size():
    cols = torch.arange(21.0).view(7, 3)  # D x B, cirtorch
    assert torch.equal(as_rows(cols, 3), cols.t())
    assert torch.equal(as_rows(cols.t(), 3), cols.t())
    assert torch.equal(as_columns(cols, 3), cols)
    assert torch.equal(as_rows((cols, "extra"), 3), cols.t())  # tuple output: first element
    assert torch.equal(as_rows(cols.t()[:, :, None, None], 3), cols.t())  # pooled map B x D x 1 x 1


def test_one_dimensional_output_is_b_scalars():
    v = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(as_rows(v, 3), v[:, None])  # a batch of 3 -> 3 x 1, never 1 x 3
    assert torch.equal(as_columns(v, 3), v[None, :])
    assert torch.equal(as_rows(v, 1), v[None, :])  # one image: a squeezed D-vector
    with pytest.raises(ValueError, match="batch of 2"):
        as_rows(v, 2)


def test_b_equals_d_follows_the_declared_convention():
    out = torch.arange(9.0).view(3, 3)
    assert torch.equal(as_rows(out, 3, dim=3), out.t())  # declared outputdim: cirtorch's D x B
    assert torch.equal(as_rows(out, 3), out)  # nothing declared: B x D


def test_declared_dim_is_checked_and_bad_shapes_refused():
    with pytest.raises(ValueError, match="outputdim'\\] is 5"):
        as_rows(torch.zeros(7, 3), 3, dim=5)
    with pytest.raises(ValueError, match="batch of 4"):
        as_rows(torch.zeros(7, 3), 4)
    with pytest.raises(ValueError, match="D x B or B x D"):
        as_rows(torch.zeros(2, 3, 4), 2)


def test_net_rows_reads_meta_outputdim():
    class Cols(nn.Module):
        meta = {"outputdim": 4}

        def forward(self, x):
            return x.flatten(1)[:, :4].t()

    x = torch.rand(4, 3, 2, 2)  # B == D == 4
    assert declared_dim(Cols()) == 4 and declared_dim(nn.Identity()) is None
    assert torch.equal(net_rows(Cols(), x), x.flatten(1)[:, :4])
    assert torch.equal(net_rows(lambda t: t.flatten(1)[:, :4], x), x.flatten(1)[:, :4])


def test_batches_by_size_groups_chunks_and_keeps_every_index():
    sizes = [(2, 4), (5, 4), (2, 4), (2, 4), (5, 4), (2, 4), (7, 1)]
    xs = [torch.full((3, *hw), float(i)) for i, hw in enumerate(sizes)]
    got = list(batches_by_size(enumerate(xs), batch_size=2))
    assert [idx for idx, _ in got] == [[0, 2], [1, 4], [3, 5], [6]]
    for idx, group in got:
        assert [int(t[0, 0, 0]) for t in group] == idx
    assert [idx for idx, _ in batches_by_size(enumerate(xs))] == [[0, 2, 3, 5], [1, 4], [6]]
    # at most 3 held back: the fullest batch goes early
    assert [idx for idx, _ in batches_by_size(enumerate(xs), 4, max_buffered=3)] == [[0, 2], [1, 4], [3, 5], [6]]
    with pytest.raises(ValueError):
        list(batches_by_size(enumerate(xs), 0))
