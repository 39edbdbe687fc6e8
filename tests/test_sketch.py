"""CLIPasso (clipkit sketch): SVG output, initialisation, loss, optimisation and the command."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from clipkit.cli.app import app
from clipkit.clipasso import SketchConfig, sketch_image
from clipkit.clipasso.init import random_walk_strokes, sample_start_points, start_probabilities
from clipkit.clipasso.loss import SketchLoss
from clipkit.clipasso.optimize import optimise_seed, start_distribution, target_tensor
from clipkit.clipasso.prepare import saliency_model_for
from clipkit.errors import UsageError
from clipkit.registry import bundled_models, load_model
from clipkit.render import to_image
from clipkit.render.torch_raster import render_alpha
from clipkit.svg import SVG_NS, parse_svg, to_svg
from clipkit.world.scenes import SceneConfig, generate_scene
from clipkit.xdog import xdog

needs_shapes_clip = pytest.mark.skipif("shapes-clip" not in bundled_models(), reason="shapes-clip not bundled")

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("one_thread")


def _disc_image(size: int = 64) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(200, 30, 30))
    return img


def test_svg_round_trip_one_path_per_stroke():
    rng = np.random.default_rng(0)
    pts = (rng.random((7, 4, 2)) * 200).astype(np.float32)
    text = to_svg(pts, 3.0, (224, 200))
    root = ET.fromstring(text)
    paths = root.findall(f"{{{SVG_NS}}}path")
    assert len(paths) == 7
    assert all(p.get("d").startswith("M ") and " C " in p.get("d") for p in paths)
    back, widths, size = parse_svg(text)
    assert size == (224, 200)
    assert np.allclose(back, pts, atol=6e-4) and np.allclose(widths, 3.0)


def test_xdog_inks_dark_shapes_not_paper():
    # XDoG is a stylised threshold: regions darker than their blurred surround become ink (0), paper stays 1.
    img = np.ones((64, 64, 3), np.float32)
    img[20:44, 20:44] = 0.1  # a dark square on white paper
    edges = xdog(img)
    assert set(np.unique(edges)) <= {0.0, 1.0}
    assert edges[:18].min() == 1.0 and edges[46:].min() == 1.0  # paper
    assert edges[20:44, 20:44].max() == 0.0  # the dark square is ink


def test_start_points_fall_on_salient_edges():
    sal = np.zeros((32, 32))
    sal[8:24, 8:24] = 1.0
    edges = np.ones((32, 32))
    edges[10, :] = 0.0  # one edge row, salient only between columns 8 and 23
    prob = start_probabilities(sal, edges, SketchConfig().softmax_temp)
    assert prob.sum() == pytest.approx(1.0)
    assert prob[10, 8:24].min() > 0 and prob[:10].sum() == 0 and prob[11:].sum() == 0
    starts = sample_start_points(prob, 16, np.random.default_rng(0))
    assert len({tuple(s) for s in starts}) == 16  # without replacement
    assert np.allclose(starts[:, 1], 10 / 32)
    strokes = random_walk_strokes(starts, (32, 32), np.random.default_rng(0))
    assert strokes.shape == (16, 4, 2)
    # each walk step is within ±0.025 of the canvas: three steps stay within 0.075 · 32 px of the start
    assert np.abs(strokes - strokes[:, :1]).max() <= 0.075 * 32 + 1e-4


def test_start_distribution_uses_attention_and_edges(tiny_model):
    target = target_tensor(_disc_image(), 64)
    prob = start_distribution(tiny_model, target, SketchConfig(canvas=64))
    assert prob.shape == (64, 64) and prob.sum() == pytest.approx(1.0)
    # XDoG inks the (darker) disc, so all the mass sits on it and none on the flat paper around it
    assert prob[:14].sum() == 0 and prob[50:].sum() == 0
    assert prob[14:50, 14:50].sum() == pytest.approx(1.0)


def test_loss_uses_shared_augmentations_and_frozen_clip(tiny_model):
    target = target_tensor(_disc_image(), 64)
    loss_fn = SketchLoss(tiny_model, target, generator=torch.Generator().manual_seed(0))
    # identical sketch and target: every augmented pair is identical only if the parameters are shared
    same, parts = loss_fn(target.clone())
    assert float(same) == pytest.approx(0.0, abs=1e-6) and "fc" in parts
    pts = torch.tensor(random_walk_strokes(np.full((4, 2), 0.5), (64, 64), np.random.default_rng(0)),
                       requires_grad=True)
    loss, _ = loss_fn(to_image(render_alpha(pts, 3.0, 64, 64)))
    assert float(loss.detach()) > 0.01
    loss.backward()
    assert pts.grad is not None and pts.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in tiny_model.model.parameters())
    assert loss_fn.evaluate(target) == pytest.approx(0.0, abs=1e-6)


def test_optimisation_lowers_the_loss_and_is_deterministic(tiny_model):
    opts = SketchConfig(strokes=6, iterations=40, seeds=2, canvas=64, frames=True, renderer="torch")
    a = sketch_image(_disc_image(), tiny_model, opts)
    b = sketch_image(_disc_image(), tiny_model, opts)
    assert np.array_equal(a.points, b.points) and a.loss == b.loss
    assert a.points.shape == (6, 4, 2) and a.alpha.shape == (64, 64)
    assert a.loss == min(a.seed_losses.values()) and set(a.seed_losses) == {0, 1000}
    assert len(a.frames) == 4  # steps 0, 10, 20, 30
    assert a.best_iteration > 0  # the first evaluation (the initial strokes) was beaten


def test_cli_writes_svg_png_gif_and_jsonl(tiny_model_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _disc_image(80).save(src / "disc.png")
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    args = ["sketch", str(src / "disc.png"), str(src / "broken.png"), "--out-dir", str(out), "-m",
            str(tiny_model_dir), "--strokes", "5", "--iterations", "20", "--seeds", "1", "--canvas", "64",
            "--renderer", "torch", "--frames", "--format", "jsonl", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # one input failed
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    ok = [r for r in rows if "files" in r]
    assert len(ok) == 1 and any("error" in r for r in rows)
    row = ok[0]
    assert set(row) >= {"path", "files", "loss", "iterations", "seconds"}
    assert row["files"] == {"svg": str(out / "disc.sketch.svg"), "png": str(out / "disc.sketch.png"),
                            "gif": str(out / "disc.sketch.gif")}
    svg_text = (out / "disc.sketch.svg").read_text()
    assert len(ET.fromstring(svg_text).findall(f"{{{SVG_NS}}}path")) == 5
    gif = Image.open(out / "disc.sketch.gif")
    assert gif.n_frames >= 2
    # the SVG, parsed back and re-rendered, is the PNG
    pts, widths, size = parse_svg(svg_text)
    alpha = render_alpha(torch.from_numpy(pts), torch.from_numpy(widths), size[1], size[0]).numpy()
    png = np.asarray(Image.open(out / "disc.sketch.png"), dtype=np.float32) / 255.0
    assert png.shape == (64, 64)
    assert np.abs((1 - alpha) - png).max() < 0.02
    # same seed, same sketch
    again = runner.invoke(app, [*args[:4], str(tmp_path / "out2"), *args[5:]])
    assert (tmp_path / "out2" / "disc.sketch.svg").read_text() == svg_text, again.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--renderer", "cairo"], "--renderer must be one of 'auto', 'torch' or 'diffvg', not 'cairo'"),
     (["--width", "0"], "width"), ([], "--out-dir is required")],
)
def test_cli_bad_options_are_one_line_errors(tiny_model_dir, tmp_path, extra, message):
    img = tmp_path / "x.png"
    _disc_image(32).save(img)
    out_dir = [] if not extra else ["--out-dir", str(tmp_path / "o")]
    result = runner.invoke(app, ["sketch", str(img), *out_dir, "-m", str(tiny_model_dir), *extra])
    assert result.exit_code == 2
    assert message in result.output


@pytest.fixture(scope="module")
def tiny_resnet(tmp_path_factory):
    """A random-init tiny open_clip ModifiedResNet CLIP (32 px), loaded through the registry."""
    import open_clip
    from safetensors.torch import save_file

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    folder = tmp_path_factory.mktemp("tiny-rn")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return load_model(str(folder), device="cpu")


def test_resnet_loss_uses_layer2_and_layer3(tiny_resnet):
    target = target_tensor(_disc_image(), 64)
    loss_fn = SketchLoss(tiny_resnet, target, generator=torch.Generator().manual_seed(0))
    assert loss_fn.is_resnet and loss_fn.layers == {2: 1.0, 3: 1.0}
    feats, emb = loss_fn._features(loss_fn._clean(target))
    v = tiny_resnet.model.visual
    assert [f.shape[1] for f in feats] == [v.layer2[-1].conv3.out_channels, v.layer3[-1].conv3.out_channels]
    assert emb.shape == (1, 16)
    assert torch.allclose(F.normalize(emb, dim=-1), tiny_resnet.encode_image(loss_fn._clean(target)), atol=1e-5)
    out = sketch_image(_disc_image(), tiny_resnet, SketchConfig(strokes=4, iterations=11, seeds=1, canvas=64))
    assert out.points.shape == (4, 4, 2) and np.isfinite(out.loss)


def test_python_api_in_memory_and_option_errors(tiny_model):
    import clipkit

    [res] = clipkit.sketch(_disc_image(48), model=tiny_model, strokes=3, iterations=11, seeds=1, canvas=48)
    assert res.path == "<image 0>" and res.files == {}  # nothing written without out_dir
    assert res.output.points.shape == (3, 4, 2) and res.output.size == (48, 48)
    assert len(ET.fromstring(res.svg).findall(f"{{{SVG_NS}}}path")) == 3
    with pytest.raises(UsageError, match="unknown option --stroke"):
        clipkit.sketch(_disc_image(48), model=tiny_model, stroke=3)
    [missing] = clipkit.sketch("some/file.png", model=tiny_model, iterations=2)
    assert missing.error == "no such file"


@needs_shapes_clip
def test_saliency_model_auto_for_a_resnet_is_the_bundled_vit(tiny_resnet):
    rn = tiny_resnet
    chosen = saliency_model_for(rn, "auto")
    assert chosen.name == "shapes-clip"
    target = target_tensor(generate_scene(3, 1, SceneConfig(size=(96, 96), max_objects=1)).image, 96)
    with_vit = start_distribution(rn, target, SketchConfig(canvas=96))
    uniform = start_distribution(rn, target, SketchConfig(canvas=96, attention_init=False))
    assert not np.allclose(with_vit, uniform)  # the saliency is no longer uniform for a ResNet loss


def test_saliency_model_auto_for_a_vit_is_itself_and_a_named_resnet_is_refused(tiny_model, tiny_resnet):
    assert saliency_model_for(tiny_model, "auto") is tiny_model
    with pytest.raises(UsageError, match=r"saliency-model.*not a CLIP ViT"):
        saliency_model_for(tiny_model, str(tiny_resnet.path))


def test_a_named_saliency_model_is_used(tiny_model_dir, tiny_resnet):
    rn = tiny_resnet
    vit = load_model(str(tiny_model_dir), device="cpu")
    target = target_tensor(generate_scene(3, 2, SceneConfig(size=(96, 96), max_objects=1)).image, 64)
    opts = SketchConfig(canvas=64, saliency_model=str(tiny_model_dir))
    expected = start_distribution(rn, target, opts, vit)
    assert np.array_equal(start_distribution(rn, target, opts), expected)
    out = sketch_image(Image.fromarray((target[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)), rn,
                       SketchConfig(strokes=3, iterations=2, seeds=1, canvas=64, renderer="torch",
                                     saliency_model=str(tiny_model_dir)))
    assert out.points.shape == (3, 4, 2)


def test_early_stop_follows_the_official_rule(tiny_model, monkeypatch):
    # Official rule: |eval - best| <= 1e-5 sets the stop flag (or stops when set); only an improvement clears it;
    # a worse evaluation leaves it set. Scripted evaluations: improve, improve, equal (flag), worse, equal (stop).
    scripted = iter([1.0, 0.5, 0.5, 0.9, 0.5, 0.4, 0.3])
    monkeypatch.setattr(SketchLoss, "evaluate", lambda self, sketch: next(scripted))
    opts = SketchConfig(strokes=2, iterations=200, seeds=1, canvas=32, renderer="torch")
    target = target_tensor(_disc_image(32), 32)
    init = random_walk_strokes(np.full((2, 2), 0.5), (32, 32), np.random.default_rng(0))
    run = optimise_seed(tiny_model, target, init, opts, seed=0)
    assert run["iterations"] == 41  # stopped at the 5th evaluation (step 40), not "two in a row"
    assert run["loss"] == 0.5 and run["best_iteration"] == 10
