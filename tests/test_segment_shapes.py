"""Accuracy floors with the bundled shapes-clip and lseg-shapes on a small sample of fresh scenes.

The full figures (100 held-out scenes) come from bench/segment_miou.py; these floors are looser so the sample
stays small, but each would fail for a method that does not localise (chance mIoU here is well under 0.1).
"""

from __future__ import annotations

import os

import pytest

from clipkit.registry import bundled_models

# a folder can stand in for the bundled model while it is being trained (development only)
MODEL = os.environ.get("CLIPKIT_SEGMENT_TEST_MODEL", "shapes-clip")
pytestmark = pytest.mark.skipif(MODEL == "shapes-clip" and "shapes-clip" not in bundled_models(),
                                reason="shapes-clip not bundled")

N_SCENES = 12
SEED = 31337  # disjoint from the training streams and from the bench streams


@pytest.fixture(scope="module")
def shapes():
    from clipkit.registry import load_model
    from clipkit.world.scenes import SceneConfig, generate_scene

    model = load_model(MODEL, device="cpu")
    h, w = model.image_size
    scenes = [generate_scene(SEED, i, SceneConfig(size=(w, h), max_objects=3)) for i in range(N_SCENES)]
    return model, scenes


def _miou(model, scenes, per_image: bool = False, **options) -> float:
    """Dataset mIoU over background + 48 categories; ``per_image``: each scene with only its own labels."""
    import numpy as np

    from clipkit.evaluation import confusion_miou
    from clipkit.methods.segment import SegmentPredictor
    from clipkit.world.scenes import CATEGORIES

    seg = SegmentPredictor(model, list(CATEGORIES), **options)
    preds = []
    for s in scenes:
        if per_image:
            present = sorted({o.category_id for o in s.objects})
            sub, _ = seg.relabel([CATEGORIES[k - 1] for k in present]).segment_image(s.image)
            preds.append(np.array([0, *present])[sub])
        else:
            preds.append(seg.segment_image(s.image)[0])
    return confusion_miou(preds, [s.label_map() for s in scenes], len(CATEGORIES) + 1)["miou"]


def test_training_free_default_segments_all_48_labels(shapes):
    """The library's training-free default on shapes-clip (its trained plain patch tokens + the calibrated
    ``min_cosine`` background rule) with all 48 labels; bench/segment_miou.py measures 0.55 on 100 scenes.
    Without the cosine rule nothing marks the background (the "background" prompt means nothing to this
    model), so the rule must beat the prompt alone by a wide margin."""
    model, scenes = shapes
    default = _miou(model, scenes)
    prompt_only = _miou(model, scenes, min_cosine=-1)
    assert default >= 0.33, default
    assert default >= prompt_only + 0.2, (default, prompt_only)


def test_recomputed_last_block_variants_localise_known_labels(shapes):
    """Given each scene's own labels, NACLIP/SCLIP still localise (chance is well under 0.1). On this
    average-pooled model they do not beat the stock tokens (see bench/results/segment.md)."""
    model, scenes = shapes
    best = max(_miou(model, scenes, per_image=True, variant=v) for v in ("naclip", "sclip"))
    assert best >= 0.25, best


@pytest.mark.skipif("lseg-shapes" not in __import__("clipkit.lseg").lseg.bundled_heads(),
                    reason="lseg-shapes not bundled")
def test_lseg_head_segments_scenes(shapes):
    model, scenes = shapes
    # floor, not the 0.80 target: the shipped head measures 0.82-0.86 on 100 held-out scenes
    # (its model card, bench/results/segment.md)
    assert _miou(model, scenes, head="lseg-shapes") >= 0.55  # 0.66 on these 12 scenes


def test_red_circle_pixels_are_labelled_red_circle(shapes, tmp_path):
    """A user's check: segment single-object scenes through the library path; each object's own mask mostly
    gets its own label rather than a competitor of another colour and shape (mean over 6 scenes)."""
    from clipkit.api import segment
    from clipkit.world.scenes import SceneConfig, generate_scene

    model, _ = shapes
    h, w = model.image_size
    fractions = []
    for index in range(6):
        scene = generate_scene(SEED + 1, index, SceneConfig(size=(w, h)), n_objects=1)
        path = tmp_path / f"scene{index}.png"
        scene.image.save(path)
        colour, shape = scene.names[0].split()
        # a competitor that differs in colour and shape (the bundled model's shape knowledge alone is ~0.76)
        other = next(f"{c} {s}" for c in ("blue", "red") for s in ("square", "circle") if c != colour and s != shape)
        (result,) = segment([str(path)], [scene.names[0], other], model=model, out_dir=tmp_path / "o")
        fractions.append((result.label_map[scene.objects[0].mask] == 1).mean())
    assert sum(fractions) / len(fractions) >= 0.6, fractions


@pytest.mark.parametrize("head", [None, "lseg-shapes"])
def test_images_batched_together_segment_as_one_by_one(shapes, head):
    """segment pools the windows of a batch of images into shared backbone batches (issue 20, item 6): each
    image's labels and scores must be what it gets alone, for images of different sizes in one batch."""
    import numpy as np

    from clipkit.methods import Sample
    from clipkit.methods.segment import SegmentPredictor
    from clipkit.world.scenes import CATEGORIES

    model, scenes = shapes
    pred = SegmentPredictor(model, list(CATEGORIES), head=head)
    images = [scenes[0].image.convert("RGB"), scenes[1].image.convert("RGB").resize((300, 200)),
              scenes[2].image.convert("RGB").resize((90, 150))]
    batched = pred.predict([Sample(f"s{i}", image=im) for i, im in enumerate(images)])
    for i, im in enumerate(images):
        alone = pred.predict([Sample(f"s{i}", image=im)])[0]
        assert np.array_equal(batched[i].label_map, alone.label_map)
        np.testing.assert_allclose(batched[i].mean_scores, alone.mean_scores, atol=1e-6)
    assert (batched[0].label_map > 0).any()
