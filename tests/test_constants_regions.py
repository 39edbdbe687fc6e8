"""Region embeddings (clipkit/regions.py) pinned by hand-computed cases: ViLD-image's 1× and 1.5× crops summed,
padded to a square whose outside-the-crop part is exactly the normalisation mean (0) — computed from the box
geometry here — or stretched; the fast path's RoIAlign mean over the patch grid mapped from image pixels (also
for non-square images); the fast-path input size, the patch size in image pixels, the dense pass's defaults
(variant by model, 4 shifts), and the empty-box shapes.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipkit import regions
from clipkit.regions import RegionConfig, _crops, fast_embeddings, image_embeddings, square_boxes


def _cols_kept(lo: float, hi: float, n: int = 32) -> list[int]:
    """Output columns whose centre (i + .5)/n lies in [lo, hi]."""
    return [i for i in range(n) if lo <= (i + 0.5) / n <= hi]


def test_padded_crop_keeps_exactly_the_grown_box():
    x = torch.ones(1, 3, 100, 100)  # a constant normalised image
    # box 20 wide, 40 tall, grown 1.5x: rect x 25..55, y 20..80; square side 60: x 10..70, y 20..80
    crop = _crops(x, np.array([[30, 30, 50, 70]], np.float32), 1.5, (32, 32), True, 2)[0]
    kept = _cols_kept((25 - 10) / 60, (55 - 10) / 60)
    assert kept == list(range(8, 24))
    inside = torch.zeros(32, dtype=torch.bool)
    inside[kept] = True
    torch.testing.assert_close(crop[:, :, inside], torch.ones(3, 32, len(kept)))
    assert crop[:, :, ~inside].abs().max() == 0


def test_crop_context_stops_at_the_image_border():
    x = torch.ones(1, 3, 100, 100)
    # box 0..20, grown 1.5x: rect -5..25 clamped to 0..25 (both axes); square -5..25 (side 30)
    crop = _crops(x, np.array([[0, 0, 20, 20]], np.float32), 1.5, (32, 32), True, 2)[0]
    kept = _cols_kept(5 / 30, 1.0)
    assert kept[0] == 5
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[kept[0]:, kept[0]:] = True
    assert crop[:, ~mask].abs().max() == 0 and crop[:, mask].min() > 0.99


def test_stretched_crop_fills_the_square():
    x = torch.ones(1, 3, 100, 100)
    crop = _crops(x, np.array([[30, 30, 50, 70]], np.float32), 1.5, (32, 32), False, 2)[0]
    torch.testing.assert_close(crop, torch.ones(3, 32, 32))


def test_square_boxes_of_a_degenerate_box():
    square, rect = square_boxes(np.array([[5, 5, 5, 9]], np.float32), 2.0)  # zero width counts as 1 px
    np.testing.assert_allclose(rect[0].numpy(), [4, 3, 6, 11])
    np.testing.assert_allclose(square[0].numpy(), [1, 3, 9, 11])


class _MeanModel:
    """``encode_image`` = per-channel means of each crop, padded to 4-D: makes crops comparable by hand."""

    image_size = (16, 16)
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)
    device = torch.device("cpu")

    def __init__(self):
        self.calls = []

    def encode_image(self, crops):
        self.calls.append(len(crops))
        m = crops.mean((2, 3))
        return torch.cat([m, torch.ones(len(crops), 1)], 1)


def test_image_path_sums_the_default_scales_in_batches():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    boxes = np.array([[5, 5, 25, 30], [30, 10, 55, 35], [0, 0, 60, 40]], np.float32)
    model = _MeanModel()
    got = image_embeddings(model, img, boxes, cfg=RegionConfig(batch_size=2))
    assert model.calls == [2, 1, 2, 1]  # two scales, each in batches of 2
    x = regions.image_tensor(model, img)
    by_hand = sum(model.encode_image(_crops(x, boxes, s, (16, 16), True, 2)) for s in (1.0, 1.5))
    torch.testing.assert_close(got, F.normalize(by_hand, dim=-1))
    stretched = image_embeddings(model, img, boxes, cfg=RegionConfig(pad_square=False, sampling_ratio=1))
    assert (stretched - got).abs().max() > 1e-3


def test_region_image_tensor_by_hand():
    img = Image.new("RGB", (3, 2), (255, 128, 0))
    x = regions.image_tensor(_MeanModel(), img)
    expected = ((torch.tensor([1.0, 128 / 255, 0.0]) - 0.5) / 0.25).view(1, 3, 1, 1).expand(1, 3, 2, 3)
    torch.testing.assert_close(x, expected)


def test_fast_path_maps_image_pixels_to_a_non_square_grid():
    """Boxes in image pixels are scaled to the grid per axis, pooled by RoIAlign (aligned, 4×4 bins, 2×2
    samples per bin), averaged over the bins and L2-normalised."""
    from torchvision.ops import roi_align

    patches = torch.randn(1, 2, 4, 8, generator=torch.Generator().manual_seed(0))  # 2 x 4 cells over 80 x 20 px
    img = Image.new("RGB", (80, 20))
    boxes = np.array([[60, 10, 80, 20], [0, 0, 40, 10], [10, 2, 70, 18]], np.float32)
    got = fast_embeddings(SimpleNamespace(), img, boxes, patches=patches)
    grid_boxes = torch.tensor([[0, x0 * 4 / 80, y0 * 2 / 20, x1 * 4 / 80, y1 * 2 / 20] for x0, y0, x1, y1 in boxes])
    pooled = roi_align(patches.permute(0, 3, 1, 2), grid_boxes, output_size=4, spatial_scale=1.0, sampling_ratio=2,
                       aligned=True)
    torch.testing.assert_close(got, F.normalize(pooled.mean((2, 3)), dim=-1))
    assert fast_embeddings(SimpleNamespace(), img, np.zeros((0, 4)), patches=patches).shape == (0, 8)


def test_fast_input_size_and_patch_pixels(tiny_model):
    img = Image.new("RGB", (100, 37))
    x = regions.fast_input(tiny_model, img, None)  # long side 100 -> 32; 37 * 0.32 = 11.84 -> 1 patch of 8
    assert x.shape[-2:] == (8, 32)
    assert regions.fast_input(tiny_model, img, 64).shape[-2:] == (24, 64)
    assert regions.fast_input(tiny_model, Image.new("RGB", (400, 10)), None).shape[-2:] == (8, 32)
    assert regions.patch_pixels(tiny_model, img) == pytest.approx(8 * 100 / 32)
    assert regions.patch_pixels(tiny_model, img, RegionConfig(fast_long_side=64)) == pytest.approx(8 * 100 / 64)


def test_dense_pass_defaults(tiny_model):
    from clipkit.dense import patch_embeddings

    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    got = regions.dense_patches(tiny_model, img)
    with torch.no_grad():
        ref = patch_embeddings(tiny_model, regions.fast_input(tiny_model, img, None),
                               variant=regions.default_variant(tiny_model), shifts=4)
    assert got.shape == (1, 16, 16, 32)
    torch.testing.assert_close(got, ref)


def test_empty_boxes_give_empty_embeddings_of_the_right_width(tiny_model):
    assert image_embeddings(tiny_model, Image.new("RGB", (8, 8)), np.zeros((0, 4))).shape == (0, 32)
    no_proj = SimpleNamespace(model=SimpleNamespace(visual=SimpleNamespace(proj=None), embed_dim=24),
                              device=torch.device("cpu"))
    assert image_embeddings(no_proj, Image.new("RGB", (8, 8)), np.zeros((0, 4))).shape == (0, 24)


def _ramp(w: int = 100, h: int = 60) -> torch.Tensor:
    """``[1, 3, h, w]``: channel 0 grows with x, channel 1 with y (pixel index / 100), channel 2 random."""
    x = torch.zeros(1, 3, h, w)
    x[0, 0] = torch.arange(w, dtype=torch.float32)[None, :] / 100
    x[0, 1] = torch.arange(h, dtype=torch.float32)[:, None] / 100
    x[0, 2] = torch.rand(h, w, generator=torch.Generator().manual_seed(0))
    return x


@pytest.mark.parametrize("box", [[30, 20, 50, 30], [40, 10, 90, 50]])  # wide boxes: rows are masked too
def test_padded_crop_samples_the_square_and_masks_outside_the_grown_box(box):
    """Inside the grown box the crop is RoIAlign (aligned, 2×2 samples) over the *square*; outside it is 0."""
    from torchvision.ops import roi_align

    x = _ramp()
    square, rect = square_boxes(np.array([box], np.float32), 1.5)
    rect[:, [0, 2]] = rect[:, [0, 2]].clamp(0, 100)
    rect[:, [1, 3]] = rect[:, [1, 3]].clamp(0, 60)
    crop = _crops(x, np.array([box], np.float32), 1.5, (32, 32), True, 2)[0]
    full = roi_align(x, torch.cat([torch.zeros(1, 1), square], 1), output_size=(32, 32), spatial_scale=1.0,
                     sampling_ratio=2, aligned=True)[0]
    s = float(square[0, 2] - square[0, 0])
    centres = (torch.arange(32) + 0.5) / 32
    rows = (centres >= (rect[0, 1] - square[0, 1]) / s) & (centres <= (rect[0, 3] - square[0, 1]) / s)
    cols = (centres >= (rect[0, 0] - square[0, 0]) / s) & (centres <= (rect[0, 2] - square[0, 0]) / s)
    inside = rows[:, None] & cols[None, :]
    assert 0 < int(rows.sum()) < 32 and 0 < int(cols.sum()) <= 32
    torch.testing.assert_close(crop[:, inside], full[:, inside])
    assert crop[:, ~inside].abs().max() == 0


@pytest.mark.parametrize("box", [[0, 0, 20, 20], [80, 40, 100, 60]])  # top-left and bottom-right corners
def test_crop_is_clipped_to_the_image_on_every_side(box):
    """Grown 1.3×, the context would leave the 100×60 image; columns/rows whose centre lies outside it are 0
    (RoIAlign alone would smear the border pixel into the first of them)."""
    x = torch.ones(1, 3, 60, 100)
    crop = _crops(x, np.array([box], np.float32), 1.3, (32, 32), True, 2)[0]
    square, _ = square_boxes(np.array([box], np.float32), 1.3)
    s = float(square[0, 2] - square[0, 0])
    cx = float(square[0, 0]) + (torch.arange(32) + 0.5) * s / 32  # column centres in image pixels
    cy = float(square[0, 1]) + (torch.arange(32) + 0.5) * s / 32
    outside = ((cx < 0) | (cx > 100))[None, :] | ((cy < 0) | (cy > 60))[:, None]
    assert outside.any() and (~outside).any()
    assert crop[:, outside].abs().max() == 0 and crop[:, ~outside].min() > 0.99


def test_stretched_crop_is_roi_align_over_the_clipped_box():
    from torchvision.ops import roi_align

    x = _ramp()
    box = np.array([[70, 5, 98, 40]], np.float32)
    _, rect = square_boxes(box, 1.5)
    rect[:, [0, 2]] = rect[:, [0, 2]].clamp(0, 100)
    rect[:, [1, 3]] = rect[:, [1, 3]].clamp(0, 60)
    ref = roi_align(x, torch.cat([torch.zeros(1, 1), rect], 1), output_size=(16, 16), spatial_scale=1.0,
                    sampling_ratio=2, aligned=True)
    torch.testing.assert_close(_crops(x, box, 1.5, (16, 16), False, 2), ref)


def test_region_helpers_small_cases():
    assert regions.region_config({"roi_output": 2}).roi_output == 2 and regions.region_config().roi_output == 4
    square, rect = square_boxes(np.array([[5, 5, 9, 5]]), 2.0)  # integer input, zero height counts as 1 px
    assert square.dtype == torch.float32
    np.testing.assert_allclose(rect[0].numpy(), [3, 4, 11, 6])
    grey = regions.image_tensor(_MeanModel(), Image.new("L", (2, 2), 255))
    torch.testing.assert_close(grey, torch.full((1, 3, 2, 2), 2.0))
    bare = SimpleNamespace(model=SimpleNamespace(visual=SimpleNamespace()), device=torch.device("cpu"))
    assert image_embeddings(bare, Image.new("RGB", (8, 8)), np.zeros((0, 4))).shape == (0, 512)


def test_fast_input_converts_any_mode(tiny_model):
    assert regions.fast_input(tiny_model, Image.new("L", (64, 64)), None).shape == (1, 3, 32, 32)
