"""Accuracy floors with the bundled shapes-clip and lseg-shapes on a small sample of fresh scenes.

The full figures (100 held-out scenes) come from bench/segment_miou.py; these floors are looser so the sample
stays small, but each would fail for a method that does not localise (chance mIoU here is well under 0.1).
"""

from __future__ import annotations

import pytest

from clipkit.registry import bundled_models

pytestmark = pytest.mark.skipif("shapes-clip" not in bundled_models(), reason="shapes-clip not bundled")

N_SCENES = 12
SEED = 31337  # disjoint from the training streams and from the bench streams


@pytest.fixture(scope="module")
def shapes():
    from clipkit.registry import load_model
    from clipkit.world.scenes import SceneConfig, generate_scene

    model = load_model("shapes-clip", device="cpu")
    h, w = model.image_size
    scenes = [generate_scene(SEED, i, SceneConfig(size=(w, h), max_objects=3)) for i in range(N_SCENES)]
    return model, scenes


def _miou(model, scenes, **options) -> float:
    from clipkit.evaluation import confusion_miou
    from clipkit.methods.segment import Segmenter
    from clipkit.world.scenes import CATEGORIES

    seg = Segmenter(model, list(CATEGORIES), **options)
    preds = [seg.predict(s.image)[0] for s in scenes]
    return confusion_miou(preds, [s.label_map() for s in scenes], len(CATEGORIES) + 1)["miou"]


def test_naclip_localises_and_beats_plain(shapes):
    model, scenes = shapes
    naclip = _miou(model, scenes, variant="naclip")
    plain = _miou(model, scenes, variant="plain")
    assert naclip >= 0.35, naclip
    assert naclip > plain, (naclip, plain)


@pytest.mark.skipif("lseg-shapes" not in __import__("clipkit.lseg").lseg.bundled_heads(),
                    reason="lseg-shapes not bundled")
def test_lseg_head_segments_scenes(shapes):
    model, scenes = shapes
    assert _miou(model, scenes, head="lseg-shapes") >= 0.6


def test_red_circle_pixels_are_labelled_red_circle(shapes, tmp_path):
    """A user's check: segment one scene through the CLI path and the object's own mask gets its label."""
    from clipkit.methods.segment import segment
    from clipkit.world.scenes import SceneConfig, generate_scene

    model, _ = shapes
    h, w = model.image_size
    scene = generate_scene(SEED + 1, 0, SceneConfig(size=(w, h)), n_objects=1)
    path = tmp_path / "scene.png"
    scene.image.save(path)
    other = "blue square" if scene.names[0] != "blue square" else "red circle"
    (result,) = segment([str(path)], [scene.names[0], other], model=model, out_dir=tmp_path / "o")
    inside = result.label_map[scene.objects[0].mask]
    assert (inside == 1).mean() >= 0.5
