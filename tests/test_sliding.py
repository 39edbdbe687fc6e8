"""Sliding-window inference (clipkit.sliding) against a brute-force transcription of the official
NACLIP/SCLIP/ClearCLIP ``forward_slide``: non-square windows, crops that need padding to the patch grid, overlaps
of uneven depth, several images pooled into shared crop batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipkit.sliding import sliding_logits, sliding_logits_batch


def _crop_fn(crops: torch.Tensor) -> torch.Tensor:
    """A crop → logits map that depends on where a pixel sits in its (padded) crop, so a misplaced window, a
    wrong pad or a wrong overlap count all change the answer: channel 0 = the first input channel × (1 + row),
    channel 1 = the second × (1 + column), at the crop's own resolution."""
    _, _, h, w = crops.shape
    rows = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    return torch.stack([crops[:, 0] * (1 + rows), crops[:, 1] * (1 + cols)], dim=1)


def _official(pixels: np.ndarray, window, stride, patch) -> np.ndarray:
    """forward_slide as the official repos write it (loops, y1/y2 clamping, ClearCLIP's centred zero pad)."""
    _, H, W = pixels.shape
    h_crop, w_crop = window
    h_stride, w_stride = stride
    h_grids = max(H - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(W - w_crop + w_stride - 1, 0) // w_stride + 1
    total = np.zeros((2, H, W))
    count = np.zeros((1, H, W))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, H), min(x1 + w_crop, W)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop = pixels[:, y1:y2, x1:x2]
            ch, cw = crop.shape[1:]
            pad_h, pad_w = (-ch) % patch[0], (-cw) % patch[1]
            top, left = pad_h // 2, pad_w // 2
            padded = np.zeros((crop.shape[0], ch + pad_h, cw + pad_w))
            padded[:, top:top + ch, left:left + cw] = crop
            out = _crop_fn(torch.from_numpy(padded[None]).float())[0].numpy()
            total[:, y1:y2, x1:x2] += out[:, top:top + ch, left:left + cw]
            count[:, y1:y2, x1:x2] += 1
    return total / count


@pytest.mark.parametrize(("size", "window", "stride", "patch"), [
    ((23, 37), (10, 14), (4, 6), (4, 4)),   # non-square windows, both sides padded, uneven overlaps
    ((16, 40), (16, 12), (16, 5), (4, 5)),  # one row of windows, only the width padded
    ((14, 33), (12, 14), (1, 6), (4, 5)),   # stride 1; (W - window) % stride == 1: the last column must come
    ((9, 11), (12, 12), (6, 6), (4, 4)),    # the window larger than the image: one clipped, padded crop
])
def test_windows_pads_and_overlaps_follow_forward_slide(size, window, stride, patch):
    gen = torch.Generator().manual_seed(sum(size))
    pixels = torch.rand(1, 3, *size, generator=gen)
    got = sliding_logits(pixels, _crop_fn, window=window, stride=stride, patch=patch, batch=3)
    want = _official(pixels[0].numpy(), window, stride, patch)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_pooled_images_get_their_own_windows():
    gen = torch.Generator().manual_seed(7)
    images = [torch.rand(1, 3, 23, 37, generator=gen), torch.rand(1, 3, 16, 40, generator=gen),
              torch.rand(1, 3, 23, 37, generator=gen)]
    calls = []

    def fn(crops):
        calls.append(len(crops))
        return _crop_fn(crops)

    got = sliding_logits_batch(images, fn, window=(10, 14), stride=(4, 6), patch=(4, 4), batch=7)
    for image, out in zip(images, got, strict=True):
        want = _official(image[0].numpy(), (10, 14), (4, 6), (4, 4))
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-5)
    assert max(calls) == 7  # crops of several images share a call, up to the batch size
    assert F.mse_loss(got[0], got[2]) > 0  # and each image is its own
