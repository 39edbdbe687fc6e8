"""The differentiable stroke rasterizers (clipkit.render)."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from clipkit.errors import ClipkitError, UsageError
from clipkit.render import diffvg as diffvg_mod
from clipkit.render import get_renderer, to_image
from clipkit.render.torch_raster import TorchRenderer, render_alpha, sample_beziers

pytestmark = pytest.mark.usefixtures("one_thread")


def _line(x0, y0, x1, y1, dtype=torch.float32):
    """A straight cubic from (x0, y0) to (x1, y1), control points at thirds."""
    p0, p3 = torch.tensor([x0, y0], dtype=dtype), torch.tensor([x1, y1], dtype=dtype)
    return torch.stack([p0, p0 + (p3 - p0) / 3, p0 + 2 * (p3 - p0) / 3, p3])[None]


def test_horizontal_line_covers_the_right_pixels():
    # Centre line y = 10.5 (the centre of pixel row 10), width 3: rows 9-11 inked (the sigmoid ramp leaves the
    # outer two at ~0.84 and spills ~0.16 onto rows 8 and 12), rows 7 and 13 blank.
    alpha = render_alpha(_line(5.0, 10.5, 25.0, 10.5), 3.0, 20, 32)
    assert alpha.shape == (20, 32)
    assert alpha[10, 8:22].min() > 0.97
    assert alpha[[9, 11], 8:22].min() > 0.8
    assert alpha[[8, 12], 8:22].max() < 0.2
    assert alpha[[7, 13], 8:22].max() < 0.01
    assert alpha[:, 28:].max() == 0  # beyond the round cap + cutoff
    # Ink area ≈ length × width + the two round caps (π (w/2)²).
    area = float(alpha.sum())
    assert area == pytest.approx(20 * 3 + 3.14159 * 1.5**2, rel=0.05)


def _supersampled(points: torch.Tensor, width: float, size: int, k: int = 8) -> torch.Tensor:
    """Reference: a hard inside/outside test at k×k samples per pixel against a densely sampled curve."""
    curve = sample_beziers(points.double(), 150).reshape(-1, 2)
    offs = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    ys = (torch.arange(size, dtype=torch.float64)[:, None] + offs).reshape(-1)
    grid = torch.stack(torch.meshgrid(ys, ys, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
    inside = torch.zeros(len(grid), dtype=torch.bool)
    for s in range(len(points)):
        c = curve[s * 150:(s + 1) * 150]
        inside |= torch.cdist(grid, c).min(dim=1).values <= width / 2
    return inside.double().reshape(size, k, size, k).mean(dim=(1, 3))


def test_matches_a_supersampled_reference():
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(4, 1, 2, generator=g) * 20 + 10 + torch.randn(4, 4, 2, generator=g) * 6
    ours = render_alpha(pts, 3.0, 40, 40).double()
    ref = _supersampled(pts, 3.0, 40)
    assert float(ours.sum()) == pytest.approx(float(ref.sum()), rel=0.03)
    ink = ref > 0
    assert float((ours - ref).abs()[ink].mean()) < 0.1  # per-pixel error on the strokes
    assert float((ours - ref).abs().mean()) < 0.02


def test_thin_line_has_partial_coverage_and_area_scales_with_width():
    a1 = render_alpha(_line(4.0, 16.0, 60.0, 40.0), 1.0, 64, 64)
    a4 = render_alpha(_line(4.0, 16.0, 60.0, 40.0), 4.0, 64, 64)
    assert a1.max() < 0.9  # a 1-px line never fully covers a pixel unless aligned
    assert float(a4.sum()) / float(a1.sum()) == pytest.approx(4.0, rel=0.12)


def test_strokes_union_like_over_compositing():
    a = _line(2.0, 8.5, 30.0, 8.5)
    b = _line(16.5, 1.0, 16.5, 30.0)
    both = render_alpha(torch.cat([a, b]), 3.0, 32, 32)
    ra, rb = render_alpha(a, 3.0, 32, 32), render_alpha(b, 3.0, 32, 32)
    assert torch.allclose(both, 1 - (1 - ra) * (1 - rb), atol=1e-5)
    assert torch.equal(to_image(both)[0, 0], 1 - both)


def test_curve_sampling_hits_end_points():
    pts = torch.tensor([[[0.0, 0.0], [10.0, 20.0], [30.0, -5.0], [40.0, 8.0]]])
    s = sample_beziers(pts, 24)
    assert torch.allclose(s[0, 0], pts[0, 0]) and torch.allclose(s[0, -1], pts[0, 3])


def test_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(0)
    pts = (torch.rand(3, 1, 2, generator=g) * 20 + 6) + torch.randn(3, 4, 2, generator=g) * 5
    pts = pts.double().requires_grad_(True)
    width = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(32, 32, generator=g, dtype=torch.float64)

    def loss(p, w):
        return (render_alpha(p, w, 32, 32) * weights).sum()

    loss(pts, width).backward()
    eps = 1e-4
    with torch.no_grad():
        flat = pts.detach().clone().reshape(-1)
        for i in range(0, flat.numel(), 3):  # every third coordinate keeps the test fast
            up, down = flat.clone(), flat.clone()
            up[i] += eps
            down[i] -= eps
            fd = (loss(up.view_as(pts), width) - loss(down.view_as(pts), width)) / (2 * eps)
            assert float(pts.grad.reshape(-1)[i]) == pytest.approx(float(fd), rel=2e-3, abs=2e-4)
        fd_w = (loss(pts, width + eps) - loss(pts, width - eps)) / (2 * eps)
        assert float(width.grad) == pytest.approx(float(fd_w), rel=2e-3, abs=2e-4)
    assert pts.grad.abs().sum() > 0


def test_renders_nothing_off_canvas_and_keeps_the_graph():
    pts = (_line(-50.0, -50.0, -40.0, -45.0)).requires_grad_(True)
    alpha = render_alpha(pts, 3.0, 16, 16)
    assert alpha.sum() == 0
    alpha.sum().backward()  # no error: the output is still attached to the points
    assert torch.equal(pts.grad, torch.zeros_like(pts))


def test_get_renderer_names():
    assert isinstance(get_renderer("torch"), TorchRenderer)
    with pytest.raises(UsageError, match="unknown renderer"):
        get_renderer("cairo")
    assert isinstance(get_renderer("auto"), TorchRenderer)  # whatever is installed


class _FakePydiffvg(types.ModuleType):
    """A stand-in for pydiffvg with its API surface: records the device it is told and renders the scene it is
    given with the torch rasterizer (doubling diffvg's half-width back to a full width)."""

    def __init__(self) -> None:
        super().__init__("pydiffvg")
        self.calls: list[tuple[str, object]] = []
        fake = self

        class Path:
            def __init__(self, num_control_points, points, stroke_width, is_closed):
                self.points, self.stroke_width = points, stroke_width

        class ShapeGroup:
            def __init__(self, shape_ids, fill_color, stroke_color):
                self.stroke_color = stroke_color

        class RenderFunction:
            @staticmethod
            def serialize_scene(width, height, shapes, groups):
                return [shapes]

            @staticmethod
            def apply(width, height, sx, sy, seed, background, shapes):
                if fake.use_gpu:  # a CPU-only build, as diffvg's C++ scene reports it
                    raise RuntimeError("diffvg not compiled with GPU")
                fake.calls.append(("render_points_device", shapes[0].points.device))
                pts = torch.stack([s.points for s in shapes])
                widths = torch.stack([2 * s.stroke_width for s in shapes])
                alpha = render_alpha(pts, widths, height, width)
                return torch.stack([torch.zeros_like(alpha)] * 3 + [alpha], dim=-1)

        self.Path, self.ShapeGroup, self.RenderFunction = Path, ShapeGroup, RenderFunction

    use_gpu = False

    def set_use_gpu(self, value):
        self.use_gpu = value
        self.calls.append(("set_use_gpu", value))

    def set_device(self, device):
        self.calls.append(("set_device", device))


def test_auto_is_torch_even_with_a_working_pydiffvg_and_diffvg_gets_the_device(monkeypatch):
    fake = _FakePydiffvg()
    monkeypatch.setitem(sys.modules, "pydiffvg", fake)
    monkeypatch.setattr(diffvg_mod, "_IMPORT", {})
    assert diffvg_mod.available()
    assert isinstance(get_renderer("auto"), TorchRenderer)  # determinism: auto never picks diffvg
    dv = get_renderer("diffvg", device="cpu")
    assert dv.name == "diffvg"
    assert ("set_device", torch.device("cpu")) in fake.calls and ("set_use_gpu", False) in fake.calls
    pts = _line(20, 30.5, 100, 30.5)
    alpha = dv.render(pts, 3.0, 64, 128)
    # the adapter hands diffvg the half-width: drawn back at full width, the ink is the torch renderer's
    assert torch.allclose(alpha, render_alpha(pts, 3.0, 64, 128))


def test_a_cpu_only_diffvg_on_a_cuda_device_falls_back_to_the_cpu(monkeypatch, capsys):
    fake = _FakePydiffvg()
    monkeypatch.setitem(sys.modules, "pydiffvg", fake)
    monkeypatch.setattr(diffvg_mod, "_IMPORT", {})
    dv = get_renderer("diffvg", device="cuda")
    assert fake.calls == [("set_use_gpu", True), ("set_device", torch.device("cuda"))]
    pts = _line(20, 30.5, 100, 30.5).requires_grad_(True)
    alpha = dv.render(pts, 3.0, 64, 128)  # the CUDA render fails (no GPU here, or the fake's CPU-only build)
    assert ("set_use_gpu", False) in fake.calls and ("set_device", torch.device("cpu")) in fake.calls
    assert "rendering on the CPU" in capsys.readouterr().err
    assert torch.allclose(alpha, render_alpha(pts.detach(), 3.0, 64, 128))
    alpha.sum().backward()
    assert pts.grad is not None and pts.grad.abs().sum() > 0
    dv.render(pts, 3.0, 64, 128)
    assert capsys.readouterr().err == ""  # said once; CPU from then on


def test_a_pydiffvg_that_fails_to_import_is_never_used(monkeypatch, tmp_path):
    pkg = tmp_path / "pydiffvg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise OSError('libdiffvg.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pydiffvg", raising=False)
    monkeypatch.setattr(diffvg_mod, "_IMPORT", {})
    assert importlib.util.find_spec("pydiffvg") is not None  # the package is there ...
    assert not diffvg_mod.available()                        # ... but cannot be used
    assert isinstance(get_renderer("auto"), TorchRenderer)
    with pytest.raises(ClipkitError, match=r"installed but cannot be imported.*libdiffvg.*--renderer torch"):
        get_renderer("diffvg")


@pytest.mark.skipif(diffvg_mod.available(), reason="pydiffvg is installed")
def test_diffvg_not_installed_is_a_clean_error():
    with pytest.raises(ClipkitError, match=r"pydiffvg, which is not installed.*--renderer torch"):
        get_renderer("diffvg")


@pytest.mark.skipif(not diffvg_mod.available(), reason="pydiffvg not installed")
def test_diffvg_agrees_with_torch():
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(16, 1, 2, generator=g) * 200 + 12 + torch.randn(16, 4, 2, generator=g) * 15
    ours = render_alpha(pts, 3.0, 224, 224)
    theirs = get_renderer("diffvg").render(pts, 3.0, 224, 224)  # same full width: the adapter halves it
    assert (ours - theirs).abs().mean() < 0.01
    assert float(ours.sum()) == pytest.approx(float(theirs.sum()), rel=0.05)


@pytest.mark.slow
@pytest.mark.skipif(not diffvg_mod.available(), reason="pydiffvg not installed")
def test_torch_gradient_matches_finite_differences_of_diffvg_images():
    # diffvg's own autograd gradient is off for some open cubics (e.g. this one); its *images* are the reference.
    stroke = torch.tensor([[[125.5, 84.4], [117.0, 84.7], [122.7, 99.6], [151.0, 99.9]]])
    ys, xs = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    weights = torch.sin(xs / 19) + torch.cos(ys / 27)
    dv = diffvg_mod.DiffvgRenderer(samples_per_axis=8)
    p = stroke.clone().requires_grad_(True)
    (render_alpha(p, 3.0, 224, 224) * weights).sum().backward()
    fd = []
    for k in range(8):
        e = torch.zeros(8)
        e[k] = 0.5
        e = e.view(1, 4, 2)
        up, down = dv.render(stroke + e, 3.0, 224, 224), dv.render(stroke - e, 3.0, 224, 224)
        fd.append(float(((up - down) * weights).sum()))
    fd_t = torch.tensor(fd)
    assert float(torch.nn.functional.cosine_similarity(p.grad.flatten(), fd_t, dim=0)) > 0.98
    assert torch.allclose(p.grad.flatten(), fd_t, atol=0.25)
