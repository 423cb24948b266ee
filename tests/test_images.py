"""Image loading: cirtorch-like RGB + LANCZOS thumbnail, every PIL mode converted or rejected by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dsa_plugin.core.images import ImageLoadError, load_rgb, pil_to_tensor01, to_rgb


def test_load_rgb_thumbnail_like_cirtorch(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    img = load_rgb(path)
    assert img.mode == "RGB" and (np.asarray(img) == arr).all()
    small = load_rgb(str(path), max_size=45)
    want = Image.fromarray(arr)
    want.thumbnail((45, 45), Image.LANCZOS)  # cirtorch's imresize
    assert small.size == (45, 30) and (np.asarray(small) == np.asarray(want)).all()
    assert load_rgb(path, max_size=1000).size == (90, 60)  # never enlarged


def test_pil_to_tensor01_is_uint8_over_255():
    arr = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    x = pil_to_tensor01(Image.fromarray(arr))
    assert x.shape == (3, 4, 4) and x.dtype == torch.float32
    want = torch.from_numpy(arr.astype(np.float32) / np.float32(255.0)).permute(2, 0, 1)
    assert torch.equal(x, want)


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGBA", "LA", "PA", "CMYK", "YCbCr", "RGBX"])
def test_modes_are_converted(mode):
    img = Image.new(mode, (5, 4))
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (5, 4)


def test_grayscale_and_palette_values():
    gray = Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8), "L")
    assert np.asarray(to_rgb(gray)).tolist() == [[[0, 0, 0], [100, 100, 100], [255, 255, 255]]]
    pal = Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8), "L").convert("P")
    assert np.asarray(to_rgb(pal))[0, 1].tolist() == [100, 100, 100]


def test_alpha_dropped_by_default_or_composited_on_white():
    rgba = Image.new("RGBA", (3, 2), (10, 20, 30, 0))
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [10, 20, 30]  # like cirtorch's convert("RGB")
    assert np.asarray(to_rgb(rgba, alpha="white"))[0, 0].tolist() == [255, 255, 255]
    half = Image.new("LA", (3, 2), (0, 128))
    assert np.asarray(to_rgb(half, alpha="white"))[0, 0].tolist() == [127, 127, 127]
    with pytest.raises(ValueError, match="alpha"):
        to_rgb(rgba, alpha="black")


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 1, 128, 255]
    path = tmp_path / "deep.png"
    img.save(path)
    loaded = load_rgb(path)
    assert np.asarray(loaded)[0, :, 0].tolist() == [0, 1, 128, 255]
    as_i = Image.fromarray(arr.astype(np.int32), "I")
    assert np.asarray(to_rgb(as_i))[0, :, 1].tolist() == [0, 1, 128, 255]


@pytest.mark.parametrize("img,mode", [
    (Image.new("F", (3, 3)), "'F'"),
    (Image.fromarray(np.array([[-5, 70000]], dtype=np.int32), "I"), "'I'"),
    (Image.new("HSV", (3, 3)), "'HSV'"),
])
def test_unconvertible_modes_are_rejected_by_name(img, mode):
    with pytest.raises(ValueError, match=mode):
        to_rgb(img)


def test_empty_image_rejected():
    with pytest.raises(ValueError, match="empty image"):
        to_rgb(Image.new("RGB", (0, 5)))
    with pytest.raises(ValueError, match="empty image"):
        pil_to_tensor01(Image.new("L", (4, 0)))


def test_missing_unreadable_truncated_files_name_the_path(tmp_path, monkeypatch):
    from PIL import ImageFile

    # HOW's evaluate module sets this process-wide at import (the suite imports HOW): Pillow's default here.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    with pytest.raises(ImageLoadError, match="not found.*nope.jpg"):
        load_rgb(tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        load_rgb(bad)
    good = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    cut = tmp_path / "truncated.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated.jpg"):
        load_rgb(cut)
    f_img = tmp_path / "float.tif"
    Image.new("F", (4, 4)).save(f_img)
    with pytest.raises(ImageLoadError, match="float.tif.*'F'"):
        load_rgb(f_img)
    assert issubclass(ImageLoadError, OSError)
    with pytest.raises(ValueError, match="max_size"):
        load_rgb(good, max_size=0)


def test_type_errors():
    with pytest.raises(TypeError, match="PIL image"):
        to_rgb(np.zeros((3, 3, 3), np.uint8))


def test_tensor01_to_pil_inverts_pil_to_tensor01_and_clamps():
    from dsa_plugin.core.images import tensor01_to_pil

    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    back = tensor01_to_pil(pil_to_tensor01(Image.fromarray(arr)))
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), arr)
    x = torch.tensor([-0.5, 0.5, 1.5]).view(3, 1, 1)  # 0.5 * 255 = 127.5 rounds half to even
    assert np.asarray(tensor01_to_pil(x)).ravel().tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        tensor01_to_pil(torch.zeros(1, 3, 2, 2))
