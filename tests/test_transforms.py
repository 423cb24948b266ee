"""CLAHE equals OpenCV's pipeline as the reference applies it; normalisation adapters round-trip."""

from __future__ import annotations

import pickle
from collections import defaultdict

import numpy as np
import pytest
import torch
from PIL import Image

from dsa_plugin.transforms import (
    CLAHE,
    HALF_MEAN_STD,
    IMAGENET_MEAN_STD,
    CLAHETransform,
    Renormalize,
    clahe,
    clahe_ops,
    denormalize,
    normalize,
    renormalize,
)
from dsa_plugin.transforms import lab as lab_codec

cv2 = pytest.importorskip("cv2")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: on the shared, oversubscribed CI/dev machines OpenMP's spin-waits make
    every multi-threaded op wait for a descheduled thread (measured 10-20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# the reference, literally (mdir/components/data/transform/functional.py: rgb2normspace "lab",
# ChannelClahe.apply_clahe, normspace2rgb "lab")


def reference_clahe(img: np.ndarray, clip_limit: float = 1.0, grid: int | tuple[int, int] = 8) -> np.ndarray:
    """``H x W x 3`` float32 RGB in [0, 1] -> the reference's CLAHE output (float32)."""
    grid = (grid, grid) if isinstance(grid, int) else grid
    engine = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=grid)
    spc = (cv2.cvtColor(img, cv2.COLOR_RGB2LAB) + np.array([0, 128, 128], dtype=np.float32)) / np.array(
        [100.0, 255.0, 255.0], dtype=np.float32)
    spc[:, :, 0] = engine.apply((spc[:, :, 0] * 255).astype(np.uint8)).astype(np.float32) / 255.0
    back = (spc * np.array([100.0, 255.0, 255.0], dtype=np.float32)) - np.array([0, 128, 128], dtype=np.float32)
    return cv2.cvtColor(back, cv2.COLOR_LAB2RGB)


def reference_l_u8(img: np.ndarray) -> np.ndarray:
    spc = (cv2.cvtColor(img, cv2.COLOR_RGB2LAB) + np.array([0, 128, 128], dtype=np.float32)) / np.array(
        [100.0, 255.0, 255.0], dtype=np.float32)
    return (spc[:, :, 0] * 255).astype(np.uint8)


def to_batch(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def to_hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy()


def smooth_random(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random image with some spatial structure (CLAHE is boring on pure noise)."""
    base = rng.random((max(h // 4, 1) + 1, max(w // 4, 1) + 1, 3)).astype(np.float32)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
    noise = rng.normal(0, 0.05, (h, w, 3)).astype(np.float32)
    return np.clip(img + noise, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# exactness of the building blocks


def test_lab_table_equals_opencv_at_every_grid_point():
    grid = np.arange(33, dtype=np.float32) / np.float32(32)
    b, g, r = np.meshgrid(grid, grid, grid, indexing="ij")
    img = np.stack([r, g, b], -1).reshape(-1, 1, 3).astype(np.float32)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    want = np.stack([np.rint(lab[:, 0] / 100 * 16384), np.rint((lab[:, 1] + 128) * 64),
                     np.rint((lab[:, 2] + 128) * 64)], -1).astype(np.int32)
    got = lab_codec._lab_grid().reshape(-1, 3)
    assert (got == want).all(), f"{(got != want).sum()} of {got.size} table entries differ from OpenCV"


def test_truncated_l_channel_is_bit_exact_on_random_colours():
    rng = np.random.default_rng(0)
    img = rng.random((64, 256, 3), dtype=np.float32)
    img[:8] = np.round(img[:8] * 255) / 255  # also colours that come from uint8 images
    lum, a, b = lab_codec._lab_encode(to_batch([img]), lab_codec._lab_table(torch.device("cpu")))
    assert (lum[0].numpy() == reference_l_u8(img)).all()
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)  # a and b are kept to within one code (1/64)
    for got_ab, want_ab in ((a, lab[:, :, 1]), (b, lab[:, :, 2])):
        err = np.abs(got_ab[0].numpy() / 64 - 128 - want_ab) * 64
        assert err.max() <= 1 + 1e-3 and (err > 0.5).mean() < 0.1


@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (40, 13), (13, 40), (5, 3), (1, 1), (2, 9), (8, 8), (16, 19)])
@pytest.mark.parametrize("clip", [1.0, 4.0, 0.0])
def test_clahe_core_is_bit_exact_vs_opencv(shape, clip):
    rng = np.random.default_rng(sum(shape))
    lum = (smooth_random(rng, *shape)[:, :, 0] * 255).astype(np.uint8)
    want = cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(lum)
    got = clahe_ops._clahe_u8(torch.from_numpy(lum.astype(np.int64))[None], clip, 8, 8)[0].numpy()
    assert (got == want).all()


def test_clahe_core_non_square_grid_and_batch():
    rng = np.random.default_rng(1)
    lums = [(smooth_random(rng, 30, 45)[:, :, 1] * 255).astype(np.uint8) for _ in range(3)]
    got = clahe_ops._clahe_u8(torch.from_numpy(np.stack(lums).astype(np.int64)), 2.0, 3, 5).numpy()
    for g, lum in zip(got, lums):
        assert (g == cv2.createCLAHE(clipLimit=2.0, tileGridSize=(5, 3)).apply(lum)).all()


# ---------------------------------------------------------------------------------------------
# the whole pipeline


def assert_close_to_reference(got: np.ndarray, want: np.ndarray, mean_tol=0.25 / 255, p999_tol=1 / 255):
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    assert diff.mean() <= mean_tol, f"mean abs diff {diff.mean() * 255:.4f}/255"
    assert np.quantile(diff, 0.999) <= p999_tol, f"p99.9 abs diff {np.quantile(diff, 0.999) * 255:.4f}/255"


@pytest.mark.parametrize("shape", [(48, 64), (37, 53), (5, 3), (1, 1), (7, 200)])
def test_clahe_matches_reference_on_odd_sizes(shape):
    rng = np.random.default_rng(shape[0])
    imgs = [smooth_random(rng, *shape) for _ in range(2)]
    out = clahe(to_batch(imgs))
    assert out.shape == (2, 3, *shape) and out.dtype == torch.float32
    for o, img in zip(out, imgs):
        want = reference_clahe(img)
        assert_close_to_reference(to_hwc(o), want)
        # much tighter than required: L is bit-exact, a/b and the sRGB curve within float noise
        diff = np.abs(to_hwc(o) - want)
        assert diff.max() <= 1 / 255 and diff.mean() <= 0.05 / 255


def test_clahe_dtype_grid_and_module():
    rng = np.random.default_rng(3)
    img = smooth_random(rng, 40, 56)
    x = to_batch([img])
    y = CLAHE(clip_limit=2.0, grid_size=(4, 7))(x.double())
    assert y.dtype == torch.float64
    assert_close_to_reference(to_hwc(y[0].float()), reference_clahe(img, 2.0, (7, 4)))
    assert torch.equal(clahe(x, grid_size=8), clahe(x, grid_size=(8, 8)))


class DiffStats:
    """Running mean and tail of |got - want| in units of 1/255 (p99.9 <= 1 <=> at most 0.1% above 1)."""

    def __init__(self):
        self.n, self.total, self.above, self.max = 0, 0.0, 0, 0.0

    def add(self, got: np.ndarray, want: np.ndarray) -> None:
        d = np.abs(got.astype(np.float64) - want) * 255
        self.n += d.size
        self.total += float(d.sum())
        self.above += int((d > 1.0).sum())
        self.max = max(self.max, float(d.max()))

    def check(self, name: str) -> None:
        mean, tail = self.total / self.n, self.above / self.n
        assert mean <= 0.25, f"{name}: mean {mean:.4f}/255"
        assert tail <= 0.001, f"{name}: {tail:.4%} of values differ by more than 1/255 (max {self.max:.3f}/255)"


def test_clahe_on_real_photos_both_forms(amos_dir, amos_labels):
    """Must show: all 399 photos at native size vs OpenCV as tensor batches; the PIL transform (the same
    computation, one image at a time, rounded to uint8) on every 4th photo to keep the test short."""
    by_size: dict[tuple[int, int], list[Image.Image]] = defaultdict(list)
    for row in amos_labels:
        with Image.open(amos_dir / row["file"]) as im:
            pil = im.convert("RGB")
        by_size[(pil.height, pil.width)].append(pil)
    assert sum(map(len, by_size.values())) == 399
    tensor, pil_form = DiffStats(), DiffStats()
    transform = CLAHETransform()
    for pils in by_size.values():  # one batch per webcam size
        arrs = [np.asarray(p, dtype=np.float32) / np.float32(255.0) for p in pils]
        refs = [reference_clahe(a) for a in arrs]
        for o, want in zip(clahe(to_batch(arrs)), refs):
            tensor.add(to_hwc(o), want)
        for p, want in list(zip(pils, refs))[::4]:
            # a PIL result is rounded to uint8: compare with the reference rounded the same way
            pil_form.add(np.asarray(transform(p)) / 255.0, np.round(want * 255) / 255.0)
    assert tensor.n > 399 * 3 * 250 * 500 and pil_form.n > 399 // 4 * 3 * 250 * 500
    tensor.check("tensor")
    pil_form.check("PIL")


# ---------------------------------------------------------------------------------------------
# CLAHETransform


def test_transform_returns_the_type_it_got():
    rng = np.random.default_rng(4)
    img = smooth_random(rng, 30, 41)
    u8 = np.round(img * 255).astype(np.uint8)
    t = CLAHETransform()
    f = t(u8.astype(np.float32) / 255)
    assert isinstance(f, np.ndarray) and f.dtype == np.float32 and f.shape == (30, 41, 3)
    np.testing.assert_allclose(f, reference_clahe(u8.astype(np.float32) / 255), atol=1e-3)
    a = t(u8)
    assert isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.shape == (30, 41, 3)
    p = t(Image.fromarray(u8))
    assert isinstance(p, Image.Image) and p.mode == "RGB" and p.size == (41, 30)
    assert (np.asarray(p) == a).all()
    x = CLAHETransform(as_tensor=True)(Image.fromarray(u8))
    assert x.shape == (3, 30, 41)
    np.testing.assert_allclose(to_hwc(x), f, atol=1e-6)
    clone = pickle.loads(pickle.dumps(t))  # DataLoader workers receive it pickled
    assert (np.asarray(clone(Image.fromarray(u8))) == a).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_clahe_on_cuda_matches_cpu():
    rng = np.random.default_rng(6)
    x = to_batch([smooth_random(rng, 61, 90) for _ in range(3)])
    got = clahe(x.cuda())
    assert got.is_cuda and got.shape == x.shape
    want = clahe(x)
    assert (got.cpu() - want).abs().max() <= 1e-4  # same integer pipeline; float ops may round differently
    h = CLAHE()(x.cuda().half())
    assert h.dtype == torch.float16
    assert (h.float().cpu() - clahe(x.half().float())).abs().max() <= 1e-3  # half output rounding


def test_transform_converts_other_modes_and_works_in_compose():
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(5)
    gray = Image.fromarray((smooth_random(rng, 20, 24)[:, :, 0] * 255).astype(np.uint8), "L")
    compose = torchvision.transforms.Compose([CLAHETransform(), torchvision.transforms.ToTensor()])
    y = compose(gray)
    assert y.shape == (3, 20, 24)
    rgba = Image.new("RGBA", (9, 7), (10, 200, 30, 0))
    assert CLAHETransform()(rgba).mode == "RGB"
    with pytest.raises(ValueError, match="'F'"):
        CLAHETransform()(Image.new("F", (4, 4)))


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("bad", [
    torch.rand(3, 8, 8), torch.rand(1, 1, 8, 8), torch.rand(1, 4, 8, 8), torch.rand(2, 8, 8, 3),
])
def test_wrong_shape_names_expected_shape(bad):
    with pytest.raises(ValueError, match="B×3×H×W float in \\[0,1\\]"):
        clahe(bad)


def test_wrong_dtype_range_and_empty_are_rejected():
    with pytest.raises(TypeError, match="B×3×H×W float in \\[0,1\\]"):
        clahe((torch.rand(1, 3, 8, 8) * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="B×3×H×W float in \\[0,1\\].*values in"):
        clahe(torch.rand(1, 3, 8, 8) * 255)
    with pytest.raises(ValueError, match="values in"):
        clahe(normalize(torch.rand(1, 3, 8, 8), IMAGENET_MEAN_STD))
    with pytest.raises(ValueError, match="values in"):
        clahe(torch.full((1, 3, 4, 4), float("nan")))
    for shape in [(0, 3, 8, 8), (1, 3, 0, 8), (1, 3, 8, 0)]:
        with pytest.raises(ValueError, match="empty"):
            clahe(torch.rand(shape))
    with pytest.raises(TypeError, match="torch.Tensor"):
        clahe(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="grid_size"):
        clahe(torch.rand(1, 3, 8, 8), grid_size=(0, 8))
    # tiny overshoot (e.g. generator rounding) is clipped like OpenCV does
    x = torch.rand(1, 3, 16, 16)
    x[0, 0, 0, 0] = 1.0005
    assert clahe(x).max() <= 1.0


def test_transform_bad_input():
    t = CLAHETransform()
    with pytest.raises(ValueError, match="H×W×3"):
        t(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        t(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        t(Image.new("RGB", (0, 0)))
    with pytest.raises(TypeError, match="dtype"):
        t(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(TypeError, match="tensors"):
        t(torch.rand(3, 4, 4))
    with pytest.raises(TypeError, match="PIL image"):
        t("image.jpg")


# ---------------------------------------------------------------------------------------------
# normalisation adapters


def test_normalize_round_trips_and_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    for ms in (IMAGENET_MEAN_STD, HALF_MEAN_STD):
        torch.testing.assert_close(denormalize(normalize(x, ms), ms), x)
        want = torchvision.transforms.functional.normalize(x, list(ms.mean), list(ms.std))
        torch.testing.assert_close(normalize(x, ms), want)
    torch.testing.assert_close(normalize(x, HALF_MEAN_STD), x * 2 - 1)
    torch.testing.assert_close(normalize(x[0]), normalize(x)[0])  # also 3 x H x W


def test_renormalize_half_to_imagenet_like_meanstd_post():
    x = torch.rand(2, 3, 4, 4)
    g = x * 2 - 1  # generator output convention
    want = (g * 0.5 + 0.5 - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(renormalize(g, HALF_MEAN_STD, IMAGENET_MEAN_STD), want)
    torch.testing.assert_close(Renormalize()(g), want)
    back = Renormalize(IMAGENET_MEAN_STD, HALF_MEAN_STD)(want)
    torch.testing.assert_close(back, g, atol=1e-6, rtol=0)
    torch.testing.assert_close(renormalize(g, ([0.5] * 3, [0.5] * 3), IMAGENET_MEAN_STD), want)


def test_normalize_bad_input():
    with pytest.raises(ValueError, match="3 values"):
        normalize(torch.rand(1, 3, 4, 4), ((0.5, 0.5), (0.5, 0.5)))
    with pytest.raises(ValueError, match=r"normalisation std\[0\] = 0\.0 .*a finite non-zero number"):
        normalize(torch.rand(1, 3, 4, 4), ((0.5,) * 3, (0.0,) * 3))
    with pytest.raises(ValueError, match=r"std\[1\] = 0\.0 \(mean \[0\.5, 0\.5, 0\.5\], std \[0\.5, 0\.0, 0\.5\]\)"):
        normalize(torch.rand(1, 3, 4, 4), ((0.5,) * 3, (0.5, 0.0, 0.5)))
    with pytest.raises(ValueError, match=r"mean\[2\] = nan"):
        normalize(torch.rand(1, 3, 4, 4), ((0.5, 0.5, float("nan")), (0.5,) * 3))
    with pytest.raises(ValueError, match="3, H, W"):
        normalize(torch.rand(1, 4, 4, 4))


def test_zero_std_refused_where_it_is_configured(tiny_db):
    from dsa_plugin.evaluation.networks import network_from_checkpoint
    from dsa_plugin.models.checkpoint_files import CheckpointError
    from dsa_plugin.models.gem import gem_small
    from dsa_plugin.transforms import check_mean_std

    with pytest.raises(ValueError, match=r"^the loader: normalisation std\[2\] = 0\.0"):
        check_mean_std(((0.4, 0.4, 0.4), (0.2, 0.2, 0)), "the loader")
    net = gem_small(outputdim=8)
    obj = {"meta": {**net.meta, "std": [0.229, 0.0, 0.225]}, "state_dict": net.state_dict()}
    with pytest.raises(
        CheckpointError, match=r"^net\.pth: the input normalisation it records: normalisation std\[1\] = 0\.0"
    ):
        network_from_checkpoint(obj, source="net.pth")
    # the tuple loader refuses it when built, not in the middle of an epoch
    import torchvision.transforms as T

    from dsa_plugin.data.sfm import db_paths
    from dsa_plugin.training.tuples import NightTuplesDataset

    pkl, ims = db_paths(tiny_db)
    tf = T.Compose([T.ToTensor(), T.Normalize(mean=[0.5] * 3, std=[0.0, 0.5, 0.5])])
    with pytest.raises(ValueError, match=r"tuple loader's mean/std .*std\[0\] = 0\.0"):
        NightTuplesDataset(name="retrieval-SfM-120k", mode="train", imsize=40, nnum=1, qsize=2, poolsize=4,
                      transform=tf, pkl_path=pkl, ims_root=ims)
