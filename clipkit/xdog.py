"""XDoG edges (Winnemöller et al. 2012) with the parameters and binarisation of the official CLIPasso code.

CLIPasso (yael-vinker/CLIPasso, ``models/painter_params.py``, class ``XDoG_``) multiplies its attention
saliency map by ``1 − XDoG(image)`` so that stroke start points fall on edges. Its XDoG: grey = ``rgb2gray``
(Rec. 709
luma weights), ``D = G_σ(grey) − γ·G_{kσ}(grey)`` with σ = 0.8, k = 10, γ = 0.98; soft threshold
``1`` where ``D < ε`` else ``1 + tanh(φ·D)`` with ε = −0.1, φ = 200; min–max normalised; binarised at Otsu's
threshold (``>= t`` → 1). So the result is 1 on flat paper and 0 on the dark side of edges.

Deviation: Gaussian blurs use OpenCV (kernel radius ⌈4σ⌉, reflected borders), which matches scipy's
``gaussian_filter`` (truncate 4, mode "reflect") used officially up to rounding; Otsu is computed here over a
256-bin histogram, as scikit-image's ``threshold_otsu`` does.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float64)  # scikit-image's rgb2gray weights


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    radius = math.ceil(4.0 * sigma)
    return cv2.GaussianBlur(img, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REFLECT)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a float array (256-bin histogram, bin centres), as ``skimage.threshold_otsu``."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(flat, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w1 = np.cumsum(hist)
    w2 = np.cumsum(hist[::-1])[::-1]
    m1 = np.cumsum(hist * centres) / np.maximum(w1, 1)
    m2 = (np.cumsum((hist * centres)[::-1]) / np.maximum(w2[::-1], 1))[::-1]
    between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centres[int(np.argmax(between))])


def xdog(
    image: np.ndarray,
    *,
    sigma: float = 0.8,
    k: float = 10.0,
    gamma: float = 0.98,
    eps: float = -0.1,
    phi: float = 200.0,
    binarize: bool = True,
) -> np.ndarray:
    """XDoG of an image.

    Args:
        image: float array [H, W, 3] (RGB) or [H, W]. CLIPasso passes the CLIP-normalised target here.
    Returns:
        float32 [H, W]: 1 = flat / background, 0 = edge line (binary when ``binarize``).
    """
    img = np.asarray(image, dtype=np.float64)
    grey = img @ _LUMA if img.ndim == 3 and img.shape[2] == 3 else img
    diff = _gaussian(grey, sigma) - gamma * _gaussian(grey, sigma * k)
    out = np.where(diff < eps, 1.0, 1.0 + np.tanh(phi * diff))
    out -= out.min()
    peak = out.max()
    if peak > 0:
        out /= peak
    if binarize:
        out = (out >= otsu_threshold(out)).astype(np.float64)
    return out.astype(np.float32)
