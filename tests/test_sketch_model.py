"""shapes-sketch, the ResNet `clipkit sketch` optimises against: its edge stem, its trainer, and what it is for —
CLIPasso's loss on it prefers an object's outline to hatching and to a blank page, and a finished sketch is
recognised by the independently trained judge."""

import json

import numpy as np
import pytest
import torch
from conftest import train_tiny_world_model
from PIL import Image

from clipkit.registry import bundled_models, load_model
from clipkit.training.pairs import edge_filters, freeze_edge_stem, resnet_with_blocks
from clipkit.world.scenes import SHAPES, SceneConfig, generate_scene

bundled = pytest.mark.skipif(not {"shapes-sketch", "shapes-judge"} <= set(bundled_models()),
                             reason="bundled shapes-sketch / shapes-judge not present")


def _edge_image(vertical: bool) -> torch.Tensor:
    """Float32 [1, 3, 12, 12]: dark left (top) half, light right (bottom) half."""
    x = torch.zeros(1, 3, 12, 12)
    if vertical:
        x[..., :, 6:] = 1.0
    else:
        x[..., 6:, :] = 1.0
    return x


def test_edge_filters_see_edges_by_orientation_and_sign_and_ignore_flat_colour():
    w = edge_filters(8)
    assert w.shape == (8, 3, 3, 3)
    conv = lambda x: torch.nn.functional.conv2d(x, w).relu()  # noqa: E731
    flat = conv(torch.full((1, 3, 12, 12), 0.7))
    assert float(flat.abs().max()) < 1e-6  # a flat colour field (a filled shape's inside) gives nothing
    dark_to_light = conv(_edge_image(vertical=True)).amax(dim=(0, 2, 3))
    light_to_dark = conv(1.0 - _edge_image(vertical=True)).amax(dim=(0, 2, 3))
    horizontal = conv(_edge_image(vertical=False)).amax(dim=(0, 2, 3))
    assert dark_to_light[0] > 0 and dark_to_light[4] == 0  # the x gradient, one sign each
    assert light_to_dark[4] > 0 and light_to_dark[0] == 0
    assert horizontal[1] > 0 and horizontal[0] == 0 and horizontal[4] == 0  # a horizontal edge: the y channel
    ii, jj = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    diagonal = conv((ii + jj >= 12).float().expand(1, 3, 12, 12)).amax(dim=(0, 2, 3))  # light lower-right half
    anti = conv((jj - ii >= 0).float().expand(1, 3, 12, 12)).amax(dim=(0, 2, 3))  # light upper-right half
    # the two diagonals are told apart (channel 7: the 135° filter, negative sign)
    assert diagonal[2] > 1.5 * max(diagonal[3], diagonal[7]) and anti[7] > 1.5 * max(anti[2], anti[6])


def test_the_edge_stem_is_frozen_and_refuses_a_vit(tiny_model):
    from clipkit.training.clip import PoolRunConfig, start_run
    from clipkit.training.judge import JUDGE_CFG

    model, _ = start_run(PoolRunConfig(name="edge-stem-test", model_cfg=JUDGE_CFG, threads=1))
    freeze_edge_stem(model)
    assert torch.equal(model.visual.conv1.weight, edge_filters(model.visual.conv1.weight.shape[0]))
    assert not model.visual.conv1.weight.requires_grad
    with pytest.raises(ValueError, match="ModifiedResNet"):
        freeze_edge_stem(tiny_model.model)


def test_resnet_with_blocks_is_the_tower_and_keeps_clipasso_layers():
    from clipkit.training.clip import PoolRunConfig, start_run
    from clipkit.training.judge import JUDGE_CFG

    model, _ = start_run(PoolRunConfig(name="blocks-test", model_cfg=JUDGE_CFG, threads=1))
    visual = model.visual.eval()
    x = torch.randn(2, 3, 64, 64)
    pooled, kept = resnet_with_blocks(visual, x, (2, 3))
    assert torch.allclose(pooled, visual(x), atol=1e-5)
    assert [tuple(k.shape) for k in kept] == [(2, 8 * 8, 128), (2, 4 * 4, 256)]  # layer2, layer3 as [B, H·W, C]


def test_train_sketch_model_writes_a_loadable_edge_stem_model_with_its_schedule(tmp_path):
    out = tmp_path / "sketcher"
    loaded = train_tiny_world_model("train-sketch-model", out)
    conv1 = loaded.model.visual.conv1.weight.float()
    assert loaded.image_size == (96, 96)
    assert torch.allclose(conv1, edge_filters(conv1.shape[0]), atol=1e-3)  # trained two steps, still the filters
    assert json.loads((out / "clipkit.json").read_text())["sketch_schedule"] == {"iterations": 300, "seeds": 1}
    log = json.loads((out / "train_log.json").read_text())["config"]
    assert log["edge_stem"] and log["pair_weight"] == 1.0 and log["pairs"]
    assert "clipkit world train-sketch-model" in (out / "README.md").read_text()


def test_sketch_loads_shapes_sketch_unless_a_model_is_named(tiny_model):
    from clipkit.api import load_for
    from clipkit.methods import METHODS

    assert METHODS["sketch"].default_model == "shapes-sketch"
    assert METHODS["classify"].default_model is None
    assert load_for(METHODS["sketch"], tiny_model) is tiny_model


@bundled
def test_sketch_help_names_its_default_model():
    from typer.testing import CliRunner

    from clipkit.cli.app import app

    out = CliRunner().invoke(app, ["sketch", "--help"], terminal_width=200).output
    assert "Default: shapes-sketch" in " ".join(out.split())


def _scene(seed: int, i: int, **kw):
    return generate_scene(seed, i, SceneConfig(size=(224, 224), max_objects=1), **kw)


@bundled
def test_clipasso_loss_on_shapes_sketch_prefers_the_outline_to_hatching_and_a_blank_page():
    from clipkit.clipasso.loss import SketchLoss
    from clipkit.clipasso.optimize import target_tensor
    from clipkit.world.drawings import DrawingStyle, scribble_objects

    loaded = load_model("shapes-sketch", device="cpu")
    black = DrawingStyle(p_black=1.0)
    wins = 0
    for i in range(6):  # fresh scenes of a stream no bundled model trained on
        scene = _scene(13, i)
        loss = SketchLoss(loaded, target_tensor(scene.image, 224), generator=torch.Generator().manual_seed(0))
        outline = loss.evaluate(target_tensor(_scene(13, i, drawing=black).image, 224))
        hatching = loss.evaluate(target_tensor(scribble_objects([o.mask for o in scene.objects],
                                                                np.random.default_rng(i)), 224))
        blank = loss.evaluate(torch.ones(1, 3, 224, 224))
        wins += outline < hatching and outline < blank
    assert wins >= 5, wins


@bundled
@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_finished_sketch_is_recognised_by_the_independent_judge():
    from clipkit.clipasso import SketchConfig, sketch_image
    from clipkit.prompts import text_embeddings

    loaded = load_model("shapes-sketch", device="cpu")
    judge = load_model("shapes-judge", device="cpu")
    text = text_embeddings(judge, list(SHAPES))
    opts = SketchConfig(iterations=300, seeds=1, renderer="torch")
    right = []
    for i in range(3):  # ~20 s each at one thread
        scene = _scene(13, i)
        out = sketch_image(scene.image, loaded, opts)
        png = Image.fromarray(((1.0 - np.clip(out.alpha, 0, 1)) * 255 + 0.5).astype(np.uint8)).convert("RGB")
        said = SHAPES[int((judge.encode_image(judge.preprocess(png)[None]) @ text.T).argmax())]
        right.append((scene.objects[0].shape, said))
    assert sum(t == s for t, s in right) >= 2, right
