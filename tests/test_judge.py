"""shapes-judge, the independently trained ResNet that judges sketches: it loads by name, names the shape of fresh
line drawings, and its trainer's captions and positives say what is true of an image. Also the per-model sketch
schedule (shapes-clip's clipkit.json) and that a caller's choice overrides it."""

import json

import pytest
import torch
from conftest import train_tiny_world_model

from clipkit.clipasso.prepare import model_schedule
from clipkit.configs import SketchConfig
from clipkit.registry import bundled_models, load_model
from clipkit.training.judge import caption_fits, caption_names, fit_matrix, strip_colours
from clipkit.world.data import PoolConfig, ScenePool
from clipkit.world.drawings import DrawingStyle
from clipkit.world.scenes import SHAPES, SceneConfig, generate_scene

bundled = pytest.mark.skipif("shapes-judge" not in bundled_models(), reason="bundled shapes-judge not present")


def _fresh_drawings(per_shape: int, seed: int = 5151):
    """``per_shape`` black one-object line drawings of every shape from a stream no model trained on."""
    cfg, found, i = SceneConfig(size=(224, 224), max_objects=1), {s: [] for s in SHAPES}, 0
    while min(len(v) for v in found.values()) < per_shape:
        scene = generate_scene(seed, i, cfg, drawing=DrawingStyle(p_black=1.0))
        if len(found[scene.objects[0].shape]) < per_shape:
            found[scene.objects[0].shape].append(scene.image)
        i += 1
    return [(shape, im) for shape, ims in found.items() for im in ims]


@bundled
def test_judge_loads_by_name_and_is_another_architecture():
    judge = load_model("shapes-judge", device="cpu")
    assert type(judge.model.visual).__name__ == "ModifiedResNet"
    assert type(load_model("shapes-clip", device="cpu").model.visual).__name__ != "ModifiedResNet"
    assert judge.default_templates == "none"


@bundled
def test_judge_names_the_shape_of_fresh_line_drawings():
    judge = load_model("shapes-judge", device="cpu")
    text = judge.encode_text(list(SHAPES))
    drawings = _fresh_drawings(per_shape=5)
    pixels = torch.stack([judge.preprocess(im) for _, im in drawings])
    said = [SHAPES[k] for k in (judge.encode_image(pixels) @ text.T).argmax(1).tolist()]
    right = sum(s == truth for s, (truth, _) in zip(said, drawings, strict=True))
    # 30 drawings, 5 per shape; the shipped judge names 26 (card: 0.92 on 240 black drawings), chance is 5
    assert right >= 24, [(t, s) for s, (t, _) in zip(said, drawings, strict=True) if s != t]


def test_colour_words_are_stripped_with_their_articles():
    assert strip_colours("a red star left of an orange cross") == "a star left of a cross"
    assert strip_colours("an orange hexagon, blue circle and a green square") == "a hexagon, circle and a square"
    assert strip_colours("a star above a circle") == "a star above a circle"
    assert caption_names("a red star left of a cross") == [("red", "star"), (None, "cross")]


def test_a_caption_fits_the_images_it_is_true_of():
    red_star, black_star = [("red", "star")], [(None, "star")]
    assert caption_fits(red_star, [(None, "star")]) and caption_fits(black_star, [(None, "star")])
    assert caption_fits(red_star, [("red", "star")]) and not caption_fits(red_star, [("blue", "star")])
    assert not caption_fits(black_star, [("red", "star")])  # black ink shows no colour
    assert not caption_fits([*red_star, ("blue", "cross")], [(None, "star")])  # every object must be named
    two = [("red", "star"), ("blue", "star")]
    assert caption_fits(two, [(None, "star"), ("blue", "star")]) and not caption_fits(two, [("red", "star")] * 2)


def test_fit_matrix_marks_every_true_caption_of_a_batch():
    pool = ScenePool(PoolConfig(n=40, seed=4242, image_size=32, render_range=(48, 64), drawings=0.5,
                                object_probs=(1.0,)))
    keys = torch.arange(40)
    captions = [strip_colours(n[0]) if k % 2 else n[0] for k, n in enumerate(pool.names)]
    fits = fit_matrix(pool, keys, captions)
    assert torch.all(fits.diagonal() == 1)
    for i in range(40):
        for j in range(40):
            colour_ok = " " not in captions[j] or captions[j] == pool.names[i][0]
            expected = captions[j].split()[-1] == pool.names[i][0].split()[-1] and colour_ok
            assert bool(fits[i, j]) == expected, (pool.names[i], captions[j])


def test_train_judge_writes_a_folder_the_registry_loads(tmp_path):
    out = tmp_path / "judge"
    loaded = train_tiny_world_model("train-judge", out)
    assert type(loaded.model.visual).__name__ == "ModifiedResNet" and loaded.image_size == (64, 64)
    assert "clipkit world train-judge" in (out / "README.md").read_text()
    assert json.loads((out / "train_log.json").read_text())["steps"] == 2


def test_the_loss_model_schedule_applies_unless_the_caller_sets_one():
    from types import SimpleNamespace

    Loaded = lambda: SimpleNamespace(meta={"sketch_schedule": {"iterations": 300, "seeds": 1, "strokes": 4}})  # noqa: E731
    opts = model_schedule(SketchConfig(), Loaded())
    assert (opts.iterations, opts.seeds, opts.strokes) == (300, 1, 16)  # strokes is not a schedule field
    mine = model_schedule(SketchConfig(iterations=2001, seeds=3), Loaded())
    assert (mine.iterations, mine.seeds) == (2001, 3)
    assert model_schedule(SketchConfig(seeds=2), Loaded()).iterations == 300
    official = SketchConfig()
    assert model_schedule(official, type("NoMeta", (), {"meta": {}})()) is official
    shapes = load_model("shapes-clip", device="cpu")
    assert model_schedule(SketchConfig(), shapes).iterations == shapes.meta["sketch_schedule"]["iterations"]


def test_a_model_folder_with_a_sketch_schedule_sets_the_steps_and_seeds_of_a_sketch(tiny_model_dir, tmp_path):
    import shutil

    import numpy as np
    from PIL import Image

    import clipkit

    folder = tmp_path / "scheduled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "clipkit.json").write_text(json.dumps({"kind": "clip", "sketch_schedule": {"iterations": 3,
                                                                                          "seeds": 2}}))
    image = Image.fromarray(np.full((48, 48, 3), 255, np.uint8))
    image.paste((200, 30, 30), (12, 12, 36, 36))
    [own] = clipkit.sketch(image, model=str(folder), canvas=48, renderer="torch")
    assert own.output.iterations == 3 and len(own.output.seed_losses) == 2
    [mine] = clipkit.sketch(image, model=str(folder), canvas=48, renderer="torch", iterations=5, seeds=1)
    assert mine.output.iterations == 5 and len(mine.output.seed_losses) == 1


def test_the_datasets_positives_agree_with_the_captions_it_gives():
    """Batches of the judge's dataset carry `positives` (data.collate) for the captions as finally written, colour
    words stripped or not: the same matrix as reading the captions back (fit_matrix)."""
    from clipkit.training.judge import ShapeCaptionDataset
    from clipkit.world.data import collate

    pool = ScenePool(PoolConfig(n=48, seed=4242, image_size=32, render_range=(48, 64), drawings=0.5))
    ds = ShapeCaptionDataset(pool, seed=1, p_shape_only=0.5)
    batch = collate([ds.item(i) for i in range(48)])
    assert any(" " not in c.replace("a ", "") for c in batch["caption"])  # some captions lost their colours
    assert torch.equal(batch["positives"], fit_matrix(pool, batch["key"], batch["caption"]).bool())
