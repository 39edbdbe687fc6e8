"""A pure-PyTorch, anti-aliased, differentiable rasterizer for open cubic-Bézier strokes.

CLIPasso (yael-vinker/CLIPasso, ``models/painter_params.py``) renders its strokes with diffvg; diffvg is on no
package registry, so this module is the renderer that installs everywhere. It draws the same scene — black
strokes of a given width over a white canvas, composited "over" one another — and is differentiable w.r.t. the
control points and the stroke width.

Method, per stroke:

1. sample the cubic at ``samples`` parameter values (fixed, uniform in t) → a polyline of ``samples - 1``
   segments (differentiable: the samples are Bernstein combinations of the control points);
2. for every pixel centre (x + 0.5, y + 0.5) the distance ``d`` to the polyline is the distance to its nearest
   segment;
3. coverage of a band of width ``w`` seen through a pixel-sized soft filter:
   ``c(d) = σ((w/2 − d)/s) − σ((−w/2 − d)/s)`` with softness ``s`` (≈ 0.3 px, which matches a 1-px box
   filter's edge ramp); the second term makes thin lines (w < 1 px) come out with the right, sub-unit
   coverage;
4. the strokes are united as diffvg's "over" compositing of black strokes does: ``α = 1 − Π_k (1 − c_k)``.

Speed comes from two exact shortcuts:

* pixel–segment pairs farther than ``r = w/2 + cutoff·s`` are never formed: candidate pairs come from each
  segment's bounding box grown by ``r`` (fully vectorised via ``repeat_interleave``). So that dropping them is
  exactly continuous, the coverage is shifted by its value at ``r`` (``c(d) − c(r)``, ≈ 2.5e-3 at the default
  cutoff of 6), which makes it reach 0 at the cutoff instead of jumping;
* the nearest segment of each (pixel, stroke) is found without autograd (``scatter_reduce`` amin), then only
  that one pair is recomputed with gradients. The gradient of a minimum is the gradient of its argmin, so
  this is the exact gradient almost everywhere, at a fraction of the memory and time.

Coordinates: control points are in pixels of the canvas, x to the right, y down, origin at the top-left corner
of the top-left pixel (the SVG / diffvg convention). Widths are full widths in pixels (diffvg's
``stroke_width`` is a half-width: diffvg 1.5 ≡ width 3.0 here).
"""

from __future__ import annotations

import torch

# Bernstein basis of a cubic evaluated at the sample parameters, cached per (samples, dtype, device).
_BASIS_CACHE: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _bernstein(samples: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Cubic Bernstein basis, Tensor[samples, 4], at t = linspace(0, 1, samples)."""
    key = (samples, dtype, device)
    basis = _BASIS_CACHE.get(key)
    if basis is None:
        t = torch.linspace(0.0, 1.0, samples, dtype=dtype, device=device)
        u = 1.0 - t
        basis = torch.stack([u**3, 3 * u**2 * t, 3 * u * t**2, t**3], dim=1)
        _BASIS_CACHE[key] = basis
    return basis


def sample_beziers(points: torch.Tensor, samples: int) -> torch.Tensor:
    """Points on each cubic: ``points`` Tensor[N, 4, 2] → Tensor[N, samples, 2] (same units)."""
    basis = _bernstein(samples, points.dtype, points.device)
    return torch.einsum("sk,nkd->nsd", basis, points)


def _band(d: torch.Tensor, half: torch.Tensor, softness: float) -> torch.Tensor:
    """Soft coverage of a band of half-width ``half`` at distance ``d`` ≥ 0 from its centre line."""
    return torch.sigmoid((half - d) / softness) - torch.sigmoid((-half - d) / softness)


def _point_segment_distance(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance from points ``p`` to segments ``a``–``b``; all Tensor[..., 2] → Tensor[...]."""
    ab = b - a
    ap = p - a
    denom = (ab * ab).sum(-1).clamp_min(1e-12)
    t = ((ap * ab).sum(-1) / denom).clamp(0.0, 1.0)
    diff = ap - t.unsqueeze(-1) * ab
    # The epsilon keeps the gradient of the square root finite on the centre line.
    return torch.sqrt((diff * diff).sum(-1) + 1e-12)


def _candidate_pairs(
    seg_a: torch.Tensor, seg_b: torch.Tensor, radius: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """All (segment, pixel) pairs whose pixel centre lies in the segment's bounding box grown by ``radius``.

    seg_a, seg_b: Tensor[M, 2] segment end points (pixels, no grad); radius: Tensor[M].
    Returns (segment index Tensor[K] int64, flat pixel index Tensor[K] int64, y * width + x).
    """
    lo = torch.minimum(seg_a, seg_b) - radius[:, None] - 0.5
    hi = torch.maximum(seg_a, seg_b) + radius[:, None] - 0.5
    # Pixel centres are at integer + 0.5, so pixel i is inside when lo <= i <= hi.
    x0 = lo[:, 0].ceil().clamp(0, width).long()
    x1 = hi[:, 0].floor().clamp(-1, width - 1).long() + 1
    y0 = lo[:, 1].ceil().clamp(0, height).long()
    y1 = hi[:, 1].floor().clamp(-1, height - 1).long() + 1
    bw = (x1 - x0).clamp_min(0)
    bh = (y1 - y0).clamp_min(0)
    counts = bw * bh
    total = int(counts.sum())
    device = seg_a.device
    if total == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    seg = torch.repeat_interleave(torch.arange(len(counts), device=device), counts, output_size=total)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=device) - starts[seg]
    w_seg = bw[seg]
    px = x0[seg] + local % w_seg
    py = y0[seg] + local // w_seg
    return seg, py * width + px


@torch.no_grad()
def _nearest_pairs(
    seg_a: torch.Tensor,
    seg_b: torch.Tensor,
    seg_stroke: torch.Tensor,
    radius: torch.Tensor,
    n: int,
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every (stroke, pixel) within ``radius`` of a stroke, its nearest segment (no autograd).

    seg_a, seg_b: Tensor[M, 2] segment end points; seg_stroke: Tensor[M] stroke of each segment;
    radius: Tensor[N] per-stroke cutoff distance. Returns (segment Tensor[K], flat pixel Tensor[K],
    stroke Tensor[K], pixel centre Tensor[K, 2]), one row per (stroke, pixel) pair kept.
    """
    dtype, device = seg_a.dtype, seg_a.device
    n_pix = height * width
    seg_idx, pix = _candidate_pairs(seg_a, seg_b, radius[seg_stroke], height, width)
    px = (pix % width).to(dtype) + 0.5
    py = torch.div(pix, width, rounding_mode="floor").to(dtype) + 0.5
    centres = torch.stack([px, py], dim=-1)
    d = _point_segment_distance(centres, seg_a[seg_idx], seg_b[seg_idx])
    stroke = seg_stroke[seg_idx]
    key = stroke * n_pix + pix  # one slot per (stroke, pixel)
    dmin = torch.full((n * n_pix,), float("inf"), dtype=dtype, device=device)
    dmin.scatter_reduce_(0, key, d, reduce="amin")
    # Keep, for each (stroke, pixel), the first candidate that attains the minimum and lies inside r.
    cand = torch.nonzero((d <= dmin[key]) & (d < radius[stroke])).squeeze(1)
    first = torch.full((n * n_pix,), cand.numel(), dtype=torch.long, device=device)
    first.scatter_reduce_(0, key[cand], torch.arange(cand.numel(), device=device), reduce="amin")
    chosen = cand[first[first < cand.numel()]]
    return seg_idx[chosen], pix[chosen], stroke[chosen], centres[chosen]


def render_alpha(
    points: torch.Tensor,
    widths: torch.Tensor | float,
    height: int,
    width: int,
    *,
    samples: int = 24,
    softness: float = 0.3,
    cutoff: float = 6.0,
) -> torch.Tensor:
    """Ink coverage of black strokes.

    Args:
        points: Tensor[N, 4, 2] float, control points of N cubic Béziers in canvas pixels (x, y).
        widths: full stroke width in pixels, a float or Tensor[] / Tensor[N] (differentiable).
        height, width: canvas size in pixels.
        samples: points sampled on each cubic (the polyline has ``samples - 1`` segments).
        softness: edge softness ``s`` in pixels of the sigmoid coverage ramp.
        cutoff: pairs farther than ``w/2 + cutoff·s`` from a segment are skipped (coverage shifted to be
        0 there).

    Returns:
        Tensor[height, width] of ``points.dtype`` in [0, 1]: 0 = white paper, 1 = fully inked.
    """
    n = points.shape[0]
    dtype, device = points.dtype, points.device
    n_pix = height * width
    if n == 0:
        return torch.zeros(height, width, dtype=dtype, device=device)
    w = torch.as_tensor(widths, dtype=dtype, device=device).reshape(-1).expand(n)
    half = 0.5 * w                                                   # [N]
    radius = half + cutoff * softness                                # [N]

    curve = sample_beziers(points, samples)                          # [N, S+1, 2], with grad
    seg_a, seg_b = curve[:, :-1], curve[:, 1:]                       # [N, S, 2]
    n_seg = samples - 1
    flat_a = seg_a.reshape(-1, 2)
    flat_b = seg_b.reshape(-1, 2)
    seg_stroke = torch.arange(n, device=device).repeat_interleave(n_seg)  # [M]

    with torch.no_grad():
        sel_seg, sel_pix, sel_stroke, sel_centres = _nearest_pairs(
            flat_a.detach(), flat_b.detach(), seg_stroke, radius.detach(), n, height, width
        )

    # Recompute only the chosen pairs with gradients flowing to the control points and widths.
    dist = _point_segment_distance(sel_centres, flat_a[sel_seg], flat_b[sel_seg])
    h = half[sel_stroke]
    cov = _band(dist, h, softness) - _band(radius[sel_stroke], h, softness)
    # Clamp below 1 so log(1 - c) and its gradient stay finite on fully inked pixels of wide strokes.
    cov = cov.clamp(0.0, 1.0 - 1e-6)
    log_keep = torch.zeros(n_pix, dtype=dtype, device=device).index_add(0, sel_pix, torch.log1p(-cov))
    return (1.0 - torch.exp(log_keep)).reshape(height, width)


class TorchRenderer:
    """The default renderer: :func:`render_alpha` behind the :class:`clipkit.render.Renderer` interface."""

    name = "torch"

    def __init__(self, samples: int = 24, softness: float = 0.3, cutoff: float = 6.0) -> None:
        self.samples = samples
        self.softness = softness
        self.cutoff = cutoff

    def render(
        self, points: torch.Tensor, widths: torch.Tensor | float, height: int, width: int
    ) -> torch.Tensor:
        """Ink coverage Tensor[height, width] in [0, 1] of strokes ``points`` Tensor[N, 4, 2] (pixels)."""
        return render_alpha(
            points, widths, height, width, samples=self.samples, softness=self.softness, cutoff=self.cutoff
        )
