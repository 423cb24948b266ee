"""Runtime fixes for old toolkit code: Pillow ANTIALIAS, numpy in1d, .cuda() on CPU, spawn workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from dsa_plugin.integrations import compat


def test_pillow_antialias_is_lanczos():
    compat.fix_pillow_antialias()
    assert Image.ANTIALIAS == Image.Resampling.LANCZOS
    assert compat.fix_pillow_antialias() is False  # idempotent
    # What cirtorch's imresize does with it: thumbnail == LANCZOS thumbnail.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    a, b = Image.fromarray(pixels), Image.fromarray(pixels)
    a.thumbnail((20, 20), Image.ANTIALIAS)
    b.thumbnail((20, 20), Image.Resampling.LANCZOS)
    assert a.size == (20, 14)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def _in1d_literal(a, b):
    members = set(np.asarray(b).ravel().tolist())
    return np.array([x in members for x in np.asarray(a).ravel().tolist()], dtype=bool)


@pytest.mark.parametrize("invert", [False, True])
def test_in1d_matches_literal_membership(invert):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 20, (4, 6))  # 2-D: in1d flattens, np.isin would keep the shape
    b = rng.integers(0, 20, 7)
    got = compat.in1d(a, b, invert=invert)
    expected = _in1d_literal(a, b)
    assert got.shape == (24,)
    assert np.array_equal(got, ~expected if invert else expected)
    compat.fix_numpy_in1d()
    assert np.array_equal(np.in1d(a, b), _in1d_literal(a, b))


def test_cirtorch_style_ranking_positions_with_in1d():
    compat.fix_numpy_in1d()
    ranks = np.array([[3, 0], [1, 2], [0, 3], [2, 1]])
    pos = np.arange(ranks.shape[0])[np.in1d(ranks[:, 0], np.array([0, 2]))]
    assert pos.tolist() == [2, 3]


def test_cuda_noop_scoped_and_restored():
    original_tensor_cuda, original_module_cuda = torch.Tensor.cuda, torch.nn.Module.cuda
    t = torch.arange(3.0)
    m = torch.nn.Linear(2, 2)
    with compat.cuda_noop() as active:
        assert active and compat.cuda_noop_active()
        assert t.cuda() is t and t.cuda(non_blocking=True) is t
        assert m.cuda() is m and m.weight.device.type == "cpu"
    assert torch.Tensor.cuda is original_tensor_cuda and torch.nn.Module.cuda is original_module_cuda
    assert not compat.cuda_noop_active()
    with pytest.raises(RuntimeError):
        with compat.cuda_noop():
            raise RuntimeError("boom")
    assert torch.Tensor.cuda is original_tensor_cuda  # restored after an exception too
    with compat.cuda_noop(enabled=False) as active:
        assert active is False and torch.Tensor.cuda is original_tensor_cuda


def test_cpu_only_run():
    assert compat.cpu_only_run("cpu") is True
    assert compat.cpu_only_run(None) is (not torch.cuda.is_available())


def test_with_runtime_fixes_is_transparent_and_reapplies_on_unpickle(monkeypatch):
    from torchvision import transforms as T

    tf = T.Compose([T.ToTensor()])
    wrapped = compat.WithRuntimeFixes(tf)
    img = Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8))
    assert torch.equal(wrapped(img), tf(img))
    assert repr(wrapped) == repr(tf) and wrapped.transforms is tf.transforms
    # Simulate a fresh worker interpreter: the alias is gone until the transform is unpickled.
    monkeypatch.delattr(Image, "ANTIALIAS", raising=False)
    clone = pickle.loads(pickle.dumps(wrapped))
    assert Image.ANTIALIAS == Image.Resampling.LANCZOS
    assert torch.equal(clone(img), tf(img))


class _UsesAntialias(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 2

    def __getitem__(self, i):
        img = Image.fromarray(np.full((30, 40, 3), 10 * i, dtype=np.uint8))
        img.thumbnail((8, 8), Image.ANTIALIAS)  # cirtorch's imresize
        return self.transform(img)


@pytest.mark.slow
def test_fixes_reach_spawned_dataloader_workers():
    from torchvision import transforms as T

    compat.apply_runtime_fixes()
    ds = _UsesAntialias(compat.WithRuntimeFixes(T.ToTensor()))
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1, multiprocessing_context="spawn")
    shapes = [tuple(x.shape) for x in loader]
    assert shapes == [(1, 3, 6, 8), (1, 3, 6, 8)]


def test_rebind_restores_attributes_and_mapping_entries():
    import contextlib
    import types

    ns, env = types.SimpleNamespace(x=1), {"kept": "a"}
    with pytest.raises(RuntimeError), contextlib.ExitStack() as stack:
        compat.rebind(stack, ns, "x", 2)
        compat.rebind(stack, env, "kept", "b")
        compat.rebind(stack, env, "new", "c")
        assert (ns.x, env) == (2, {"kept": "b", "new": "c"})
        raise RuntimeError("boom")
    assert ns.x == 1 and env == {"kept": "a"}  # restored, the missing key removed again
    with compat.rebound(ns, "x", 3):
        assert ns.x == 3
    assert ns.x == 1


def test_global_patches_name_real_functions():
    import importlib

    assert len({p.patch for p in compat.GLOBAL_PATCHES}) == len(compat.GLOBAL_PATCHES)
    for patch in compat.GLOBAL_PATCHES:
        module, _, name = patch.set_by.rpartition(".")
        function = getattr(importlib.import_module(module), name)
        assert callable(function) and function.__module__ == module, patch.set_by  # the one real name
        assert patch.why_global and patch.when
