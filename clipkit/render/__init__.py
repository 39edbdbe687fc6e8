"""Differentiable stroke rasterizers behind one interface.

A renderer turns N open cubic-Bézier strokes — control points ``Tensor[N, 4, 2]`` in canvas pixels (x right,
y down, origin at the canvas's top-left corner) and full stroke widths in pixels — into the ink coverage
``Tensor[H, W]`` in [0, 1] of black strokes composited "over" one another, differentiably w.r.t. the points
(and the widths). :func:`to_image` turns that coverage into the white-paper RGB image CLIPasso feeds to CLIP.

* ``"torch"`` — :class:`clipkit.render.torch_raster.TorchRenderer`, pure PyTorch, installs everywhere. Its
  forward and backward passes are deterministic on CPU (same points, same threads → bit-identical images and
  gradients), so a sketch is reproducible for a seed.
* ``"diffvg"`` — :class:`clipkit.render.diffvg.DiffvgRenderer`, the renderer of the official CLIPasso code.
  Only when asked for by name, and only when ``pydiffvg`` actually imports (it is on no package registry;
  build it from source). Its CPU gradients vary by ~1e-7 between identical calls (parallel accumulation), which
  Adam amplifies: sketches are *not* reproducible with it.
* ``"auto"`` — the torch rasterizer. The rule: ``auto`` never picks diffvg, because diffvg would break
  reproducibility and may be a broken or CPU-only build; diffvg is used only when the user asks for it.
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


def resolve_renderer(name: str = "auto") -> str:
    """The renderer a name stands for: ``"auto"`` → ``"torch"``; ``"torch"``/``"diffvg"`` as given.

    Raises:
        UsageError: an unknown name.
    """
    if name not in RENDERERS:
        raise UsageError(f"unknown renderer {name!r}; choose one of: {', '.join(RENDERERS)}")
    return "torch" if name == "auto" else name


def get_renderer(name: str = "auto", device: str | torch.device | None = None) -> Renderer:
    """A renderer by name (see the module docstring for the ``auto`` rule).

    Args:
        name: ``"auto"`` (= torch), ``"torch"`` or ``"diffvg"``.
        device: where the strokes live (the loss model's device). diffvg is told to render there
            (``pydiffvg.set_device``); the torch renderer follows its input tensors.
    Raises:
        UsageError: an unknown name.
        ClipkitError: ``"diffvg"`` asked for but ``pydiffvg`` cannot be imported (the message says why).
    """
    from clipkit.render.torch_raster import TorchRenderer

    if resolve_renderer(name) == "torch":
        return TorchRenderer()
    from clipkit.render.diffvg import DiffvgRenderer

    return DiffvgRenderer(device=device)


__all__ = ["RENDERERS", "Renderer", "get_renderer", "resolve_renderer", "to_image"]
