"""CLIPasso's stroke initialisation: start points sampled from saliency × edges, then a short random walk.

Official code (yael-vinker/CLIPasso, ``models/painter_params.py``: ``set_inds_clip``, ``get_path``):

* the attention map is min–max normalised and multiplied by ``1 − XDoG(target)`` (``xdog_intersec = 1``;
  XDoG of the CLIP-normalised target, ``k = 10``);
* over the pixels where that product is > 0, probabilities are ``softmax(map / τ)`` with ``τ =
  softmax_temp = 0.3`` (0 elsewhere), and ``num_paths`` start pixels are drawn **without replacement**;
* each stroke starts at its pixel (x = column / W, y = row / H in [0, 1]) and adds 3 more control points by a
  random walk with steps ``0.05 · (U(0, 1) − 0.5)`` per coordinate (radius 0.05), then is scaled to the
  canvas.

Deviations: randomness comes from a seeded ``numpy.random.Generator`` (the official code uses the global
``random`` / ``numpy`` state), and when fewer pixels than strokes have non-zero probability the remaining
start points are drawn uniformly over the canvas (the official code would fail).
"""

from __future__ import annotations

import numpy as np

WALK_RADIUS = 0.05   # official get_path: radius = 0.05 (steps in ±0.025 of the canvas)


def start_probabilities(
    saliency: np.ndarray, edges: np.ndarray | None, temp: float
) -> np.ndarray:
    """Sampling probabilities float64 [H, W] (summing to 1) from a saliency map and an XDoG map.

    Args:
        saliency: float [H, W] (any range; min–max normalised here).
        edges: XDoG output float [H, W] (1 = flat, 0 = edge) or None to skip the edge term.
    """
    sal = np.asarray(saliency, dtype=np.float64)
    span = sal.max() - sal.min()
    sal = (sal - sal.min()) / span if span > 0 else np.ones_like(sal)
    if edges is not None:
        sal = (1.0 - np.asarray(edges, dtype=np.float64)) * sal
    prob = np.zeros_like(sal)
    pos = sal > 0
    if pos.any():
        logits = sal[pos] / temp
        e = np.exp(logits - logits.max())
        prob[pos] = e / e.sum()
    return prob


def sample_start_points(prob: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct start pixels drawn from ``prob`` [H, W] → float64 [n, 2], (x, y) = (col/W, row/H)."""
    h, w = prob.shape
    flat = prob.ravel()
    k = min(n, int((flat > 0).sum()))
    picks = rng.choice(flat.size, size=k, replace=False, p=flat / flat.sum()) if k else np.zeros(0, int)
    rows, cols = np.unravel_index(picks, (h, w))
    pts = np.stack([cols / w, rows / h], axis=1).astype(np.float64)
    if k < n:  # too few salient pixels: the rest start anywhere
        pts = np.concatenate([pts, rng.random((n - k, 2))])
    return pts


def random_walk_strokes(
    starts: np.ndarray, size: tuple[int, int], rng: np.random.Generator, radius: float = WALK_RADIUS
) -> np.ndarray:
    """Cubic strokes from start points: float32 [N, 4, 2] control points in canvas pixels (x, y).

    Args:
        starts: float [N, 2] normalised (x, y) start points.
        size: canvas (width, height).
    """
    steps = radius * (rng.random((len(starts), 3, 2)) - 0.5)
    pts = np.concatenate([starts[:, None, :], starts[:, None, :] + np.cumsum(steps, axis=1)], axis=1)
    return (pts * np.asarray(size, dtype=np.float64)).astype(np.float32)
