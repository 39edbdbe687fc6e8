"""Adapter to diffvg (BachiLi/diffvg, Apache-2.0), the rasterizer of the official CLIPasso code.

Used only when asked for by name (``--renderer diffvg``) and only when ``pydiffvg`` imports. diffvg is on no
package registry; it has to be built from source. The scene is the one CLIPasso builds in
``models/painter_params.py``: one ``pydiffvg.Path`` per stroke (``num_control_points = [2]``, i.e. one cubic
segment, ``is_closed=False``), one ``ShapeGroup`` per stroke with ``fill_color=None`` and an opaque black
``stroke_color``, rendered at 2×2 samples per pixel with seed 0.

diffvg's ``stroke_width`` is a **half**-width (the distance from the centre line to the stroke's edge), so the
full widths used across clipkit are halved here: CLIPasso's ``--width 1.5`` is a 3-px line.

Device: pydiffvg renders where its module-level device says (``pydiffvg.set_device``; it defaults to CUDA
whenever torch sees a GPU). The adapter sets it to the loss model's device. If a CUDA render fails — a
diffvg built without CUDA — it renders on the CPU from then on (points copied there, the image copied back;
gradients flow through the copies) and says so once on stderr.

Determinism: diffvg's CPU backward accumulates gradients in parallel, so identical calls differ by ~1e-7; Adam
amplifies that, so sketches drawn with diffvg are not bit-reproducible (the torch renderer's are).
"""

from __future__ import annotations

import sys

import torch

from clipkit.errors import ClipkitError

NOT_INSTALLED = (
    "the diffvg renderer needs pydiffvg, which is not installed (it is on no package registry: build "
    "BachiLi/diffvg from source), or use --renderer torch"
)
_IMPORT: dict[str, object] = {}  # {"module": pydiffvg} or {"error": "..."}, filled by the first import attempt


def _import() -> object | None:
    """``pydiffvg`` imported once (None when it cannot be; the reason is kept for :func:`import_error`)."""
    if not _IMPORT:
        try:
            import pydiffvg  # type: ignore[import-not-found]

            _IMPORT["module"] = pydiffvg
        except ModuleNotFoundError as exc:
            _IMPORT["error"] = NOT_INSTALLED if exc.name == "pydiffvg" else f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a broken build raises anything from ImportError to OSError
            _IMPORT["error"] = f"{type(exc).__name__}: {exc}"
    return _IMPORT.get("module")


def available() -> bool:
    """Whether ``pydiffvg`` actually imports (a package that exists but fails to import is not available)."""
    return _import() is not None


def import_error() -> str | None:
    """Why ``pydiffvg`` cannot be used (None when it imports)."""
    _import()
    return _IMPORT.get("error")  # type: ignore[return-value]


class DiffvgRenderer:
    """diffvg behind the :class:`clipkit.render.Renderer` interface (2×2 samples per pixel, as CLIPasso).

    Args:
        device: the device the strokes live on (default CPU); pydiffvg is told to render there.
    Raises:
        ClipkitError: pydiffvg cannot be imported (the message names the reason and ``--renderer torch``).
    """

    name = "diffvg"

    def __init__(
        self, samples_per_axis: int = 2, seed: int = 0, device: str | torch.device | None = None
    ) -> None:
        module = _import()
        if module is None:
            reason = import_error()
            raise ClipkitError(
                reason if reason == NOT_INSTALLED else f"pydiffvg is installed but cannot be imported "
                f"({reason}); use --renderer torch"
            )
        self._pydiffvg = module
        self.samples_per_axis = samples_per_axis
        self.seed = seed
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._set_device(self.device)

    def _set_device(self, device: torch.device) -> None:
        dv = self._pydiffvg
        dv.set_use_gpu(device.type == "cuda")
        dv.set_device(device)
        self.render_device = device

    def _render_on(
        self, device: torch.device, points: torch.Tensor, half: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        dv = self._pydiffvg
        pts, half = points.to(device), half.to(device)
        black = torch.tensor([0.0, 0.0, 0.0, 1.0], device=device)
        shapes, groups = [], []
        for i in range(pts.shape[0]):
            shapes.append(
                dv.Path(
                    num_control_points=torch.tensor([2], dtype=torch.int32),
                    points=pts[i].float(),
                    stroke_width=half[i],
                    is_closed=False,
                )
            )
            groups.append(dv.ShapeGroup(shape_ids=torch.tensor([i]), fill_color=None, stroke_color=black))
        scene = dv.RenderFunction.serialize_scene(width, height, shapes, groups)
        return dv.RenderFunction.apply(
            width, height, self.samples_per_axis, self.samples_per_axis, self.seed, None, *scene
        )

    def render(
        self, points: torch.Tensor, widths: torch.Tensor | float, height: int, width: int
    ) -> torch.Tensor:
        """Ink coverage Tensor[height, width] (diffvg's alpha channel) of strokes ``points`` Tensor[N, 4, 2],
        on ``points.device``."""
        n = points.shape[0]
        half = 0.5 * torch.as_tensor(widths, dtype=torch.float32, device=points.device).reshape(-1).expand(n)
        try:
            img = self._render_on(self.render_device, points, half, height, width)
        except RuntimeError as exc:
            if self.render_device.type != "cuda":
                raise
            print(f"clipkit: pydiffvg cannot render on {self.render_device} ({exc}); rendering on the CPU",
                  file=sys.stderr)
            self._set_device(torch.device("cpu"))
            img = self._render_on(self.render_device, points, half, height, width)
        return img[:, :, 3].to(device=points.device, dtype=points.dtype)
