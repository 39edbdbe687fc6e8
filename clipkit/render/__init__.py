"""Differentiable stroke rasterizers behind one interface.

A renderer turns N open cubic-Bézier strokes — control points ``Tensor[N, 4, 2]`` in canvas pixels (x right,
y down, origin at the canvas's top-left corner) and full stroke widths in pixels — into the ink coverage
``Tensor[H, W]`` in [0, 1] of black strokes composited "over" one another, differentiably w.r.t. the points
(and the widths). :func:`to_image` turns that coverage into the white-paper RGB image CLIPasso feeds to CLIP.

* ``"torch"`` — :class:`clipkit.render.torch_raster.TorchRenderer`, pure PyTorch, installs everywhere.
* ``"diffvg"`` — :class:`clipkit.render.diffvg.DiffvgRenderer`, the renderer of the official CLIPasso
  code, used when ``pydiffvg`` is importable (it is on no package registry; build it from source to use it).
* ``"auto"`` — diffvg when importable, else torch.
"""

from __future__ import annotations

from typing import Protocol

import torch

from clipkit.errors import UsageError

RENDERERS = ("auto", "torch", "diffvg")


class Renderer(Protocol):
    """What every rasterizer provides."""

    name: str

    def render(
        self, points: torch.Tensor, widths: torch.Tensor | float, height: int, width: int
    ) -> torch.Tensor:
        """Ink coverage Tensor[height, width] in [0, 1] of black strokes ``points`` Tensor[N, 4, 2]."""
        ...


def to_image(alpha: torch.Tensor) -> torch.Tensor:
    """Black ink on white paper: coverage Tensor[H, W] → RGB Tensor[1, 3, H, W] in [0, 1] (1 = white)."""
    return (1.0 - alpha).expand(1, 3, *alpha.shape)


def get_renderer(name: str = "auto") -> Renderer:
    """A renderer by name: ``"auto"`` (diffvg when importable, else torch), ``"torch"`` or ``"diffvg"``.

    Raises:
        UsageError: an unknown name.
        ClipkitError: ``"diffvg"`` asked for but ``pydiffvg`` is not installed.
    """
    from clipkit.render import diffvg as _diffvg
    from clipkit.render.torch_raster import TorchRenderer

    if name not in RENDERERS:
        raise UsageError(f"unknown renderer {name!r}; choose one of: {', '.join(RENDERERS)}")
    if name == "torch" or (name == "auto" and not _diffvg.available()):
        return TorchRenderer()
    return _diffvg.DiffvgRenderer()


__all__ = ["RENDERERS", "Renderer", "get_renderer", "to_image"]
