"""Adapter to diffvg (BachiLi/diffvg, Apache-2.0), the rasterizer of the official CLIPasso code.

Used when ``pydiffvg`` is importable. diffvg is on no package registry; it has to be built from source. The
scene is the one CLIPasso builds in ``models/painter_params.py``: one ``pydiffvg.Path`` per stroke
(``num_control_points = [2]``, i.e. one cubic segment, ``is_closed=False``), one ``ShapeGroup`` per
stroke with ``fill_color=None`` and an opaque black ``stroke_color``, rendered at 2×2 samples per pixel with
seed 0.

diffvg's ``stroke_width`` is a **half**-width (the distance from the centre line to the stroke's edge), so the
full widths used across clipkit are halved here: CLIPasso's ``--width 1.5`` is a 3-px line.
"""

from __future__ import annotations

import importlib.util

import torch

from clipkit.errors import ClipkitError

NOT_INSTALLED = (
    "the diffvg renderer needs pydiffvg, which is not installed (it is on no package registry: build "
    "BachiLi/diffvg from source), or use --renderer torch"
)


def available() -> bool:
    """Whether ``pydiffvg`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("pydiffvg") is not None


class DiffvgRenderer:
    """diffvg behind the :class:`clipkit.render.Renderer` interface (2×2 samples per pixel, as CLIPasso)."""

    name = "diffvg"

    def __init__(self, samples_per_axis: int = 2, seed: int = 0) -> None:
        if not available():
            raise ClipkitError(NOT_INSTALLED)
        import pydiffvg

        self._pydiffvg = pydiffvg
        self.samples_per_axis = samples_per_axis
        self.seed = seed

    def render(
        self, points: torch.Tensor, widths: torch.Tensor | float, height: int, width: int
    ) -> torch.Tensor:
        """Ink coverage Tensor[height, width] (diffvg's alpha channel) of strokes ``points`` Tensor[N, 4,
        2]."""
        dv = self._pydiffvg
        n = points.shape[0]
        half = 0.5 * torch.as_tensor(widths, dtype=torch.float32, device=points.device).reshape(-1).expand(n)
        shapes, groups = [], []
        black = torch.tensor([0.0, 0.0, 0.0, 1.0])
        for i in range(n):
            shapes.append(
                dv.Path(
                    num_control_points=torch.tensor([2], dtype=torch.int32),
                    points=points[i].float(),
                    stroke_width=half[i],
                    is_closed=False,
                )
            )
            groups.append(dv.ShapeGroup(shape_ids=torch.tensor([i]), fill_color=None, stroke_color=black))
        scene = dv.RenderFunction.serialize_scene(width, height, shapes, groups)
        img = dv.RenderFunction.apply(
            width, height, self.samples_per_axis, self.samples_per_axis, self.seed, None, *scene
        )
        return img[:, :, 3].to(points.dtype)
