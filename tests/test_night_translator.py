"""NightTranslator: frozen, eval-mode, batched generator on [0, 1] images.

docs/reference.md §generator, §generator-output.
"""

import numpy as np
import pytest
import torch

from dsa_plugin.models import NLayerDiscriminator, ResnetGenerator
from dsa_plugin.models.checkpoint_files import state_dict_sha256
from dsa_plugin.models.checkpoints import save_network
from dsa_plugin.night import NightTranslator, TranslatorError


def tiny_generator(seed=0, norm="batch"):
    torch.manual_seed(seed)
    g = ResnetGenerator(ngf=4, n_blocks=1, norm=norm)
    # Non-trivial running statistics, so eval vs train mode would give different outputs.
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return g


def literal_translate(g, x01):
    """Slow literal version of the reference: normalise 0.5/0.5, G in eval, tanh -> [0, 1], per image."""
    g = g.eval()
    outs = []
    with torch.no_grad():
        for x in x01:
            y = g(((x - 0.5) / 0.5).unsqueeze(0))[0]
            outs.append(y * 0.5 + 0.5)
    return torch.stack(outs)


def test_output_size_range_and_values():
    g = tiny_generator()
    t = NightTranslator(g)
    x = torch.rand(2, 3, 29, 42)
    y = t.translate(x)
    assert y.shape == (2, 3, 32, 44)  # 4*ceil(29/4), 4*ceil(42/4)
    assert y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
    torch.testing.assert_close(y, literal_translate(tiny_generator(), x), atol=1e-5, rtol=0)
    assert t.translate(x[0]).shape == (3, 32, 44)  # unbatched in, unbatched out
    assert t(x).shape == y.shape


def test_frozen_and_always_eval():
    t = NightTranslator(tiny_generator())
    assert all(not p.requires_grad for p in t.parameters())
    parent = torch.nn.Sequential(t)
    parent.train()
    assert not t.generator.training
    bn = next(m for m in t.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    y = t.translate(torch.rand(1, 3, 16, 16, requires_grad=True))
    assert torch.equal(bn.running_mean, before)
    assert not y.requires_grad


def test_translate_many_batches_by_size_and_keeps_order():
    t = NightTranslator(tiny_generator())
    torch.manual_seed(1)
    images = [
        torch.rand(3, 20, 24),
        torch.rand(3, 17, 30),
        torch.rand(3, 20, 24),
        torch.rand(3, 17, 30),
        torch.rand(3, 20, 24),
    ]
    calls = []
    original = t.translate

    def spy(x):
        calls.append(tuple(x.shape))
        return original(x)

    t.translate = spy
    out = t.translate_many(images, batch_size=2)
    assert sorted(calls) == sorted([(2, 3, 20, 24), (1, 3, 20, 24), (2, 3, 17, 30)])
    for img, y in zip(images, out):
        torch.testing.assert_close(y, original(img), atol=1e-5, rtol=0)


def test_translate_pil():
    from PIL import Image

    t = NightTranslator(tiny_generator())
    img = Image.fromarray((torch.rand(21, 30, 3) * 255).to(torch.uint8).numpy())
    out = t.translate_pil(img)
    assert out.mode == "RGB" and out.size == (32, 24)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    want = (t.translate(x) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert (np.asarray(out) == want).all()
    with pytest.raises(TranslatorError, match="PIL image"):
        t.translate_pil(x)


def test_to_network_input_is_g_then_clahe_then_meanstd():
    transforms = pytest.importorskip("dsa_plugin.transforms")
    t = NightTranslator(tiny_generator())
    x = torch.rand(1, 3, 24, 32)
    got = t.to_network_input(x)
    g = t.translate(x)
    want = transforms.normalize(transforms.clahe(g, clip_limit=1.0, grid_size=(8, 8)), transforms.IMAGENET_MEAN_STD)
    torch.testing.assert_close(got, want)
    plain = t.to_network_input(x, clahe=False, mean_std=transforms.HALF_MEAN_STD)
    torch.testing.assert_close(plain, g * 2 - 1, atol=1e-6, rtol=0)


def test_amp_cpu_close_to_fp32():
    g = tiny_generator()
    x = torch.rand(1, 3, 16, 20)
    y32 = NightTranslator(g).translate(x)
    y16 = NightTranslator(g, amp=True).translate(x)
    assert y16.dtype == torch.float32
    assert (y16 - y32).abs().max() < 0.05


def test_from_checkpoint_and_fingerprint(tmp_path):
    g = tiny_generator(seed=3)
    path = tmp_path / "g.pth"
    save_network(path, g)
    t = NightTranslator.from_checkpoint(path, device="cpu")
    assert t.fingerprint == state_dict_sha256(g.state_dict())
    x = torch.rand(1, 3, 12, 12)
    torch.testing.assert_close(t.translate(x), NightTranslator(g).translate(x))
    assert NightTranslator(tiny_generator(seed=4)).fingerprint != t.fingerprint


def test_wrong_architecture_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "discriminator.pth"
    torch.save(NLayerDiscriminator(ndf=4).state_dict(), path)
    with pytest.raises(TranslatorError) as err:
        NightTranslator.from_checkpoint(path)
    assert str(path) in str(err.value) and "generator" in str(err.value)
    assert "discriminator" in str(err.value).lower()

    # A generator file whose weights do not fit its stated architecture.
    bad = tmp_path / "bad_generator.pth"
    save_network(bad, tiny_generator(), model_params={"architecture": "official_resnet_generator", "ngf": 4,
                                                      "n_blocks": 3, "norm_layer": "batch"})
    with pytest.raises(TranslatorError, match="missing keys"):
        NightTranslator.from_checkpoint(bad)

    with pytest.raises(TranslatorError, match="not found"):
        NightTranslator.from_checkpoint(tmp_path / "nope.pth")


def test_bad_input():
    t = NightTranslator(tiny_generator())
    with pytest.raises(TranslatorError, match="B x 3 x H x W"):
        t.translate(torch.rand(1, 1, 8, 8))
    with pytest.raises(TranslatorError, match="dtype"):
        t.translate(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TranslatorError, match="RGB to RGB"):
        NightTranslator(ResnetGenerator(output_nc=1, ngf=4, n_blocks=1))
