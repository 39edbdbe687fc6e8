"""detect and ground share the dense forward passes of a batch of images (issue 20, item 6): every image must get
what it gets alone, with images of different sizes in the batch."""

from __future__ import annotations

import numpy as np
import pytest

from clipkit.registry import bundled_models

pytestmark = pytest.mark.skipif("shapes-clip" not in bundled_models(), reason="shapes-clip not bundled")


@pytest.fixture(scope="module")
def batch():
    from clipkit.methods import Sample
    from clipkit.registry import load_model
    from clipkit.world.scenes import SceneConfig, generate_scene

    model = load_model("shapes-clip", device="cpu")
    images = [generate_scene(6161, i, SceneConfig(size=(224, 224))).image for i in range(3)]
    images.append(images[0].resize((300, 200)))
    return model, [Sample(f"s{i}", image=im) for i, im in enumerate(images)]


def test_detect_batch_equals_one_by_one(batch):
    from clipkit.methods.detect import DetectPredictor
    from clipkit.world.scenes import CATEGORIES

    model, samples = batch
    predictor = DetectPredictor(model, list(CATEGORIES))
    together = predictor.predict(samples)
    assert sum(len(d.xyxy) for d in together) > 0
    for sample, got in zip(samples, together, strict=True):
        [alone] = predictor.predict([sample])
        np.testing.assert_allclose(got.xyxy, alone.xyxy, atol=1e-3)
        np.testing.assert_allclose(got.confidence, alone.confidence, atol=1e-5)
        assert got.class_id.tolist() == alone.class_id.tolist()


def test_ground_batch_equals_one_by_one(batch):
    from clipkit.methods.ground import GroundPredictor

    model, samples = batch
    predictor = GroundPredictor(model, "the blue circle left of the blue hexagon")  # scene 0's objects
    together = predictor.predict(samples)
    assert len(together[0].detections.xyxy) > 0
    for sample, got in zip(samples, together, strict=True):
        [alone] = predictor.predict([sample])
        np.testing.assert_allclose(got.detections.xyxy, alone.detections.xyxy, atol=1e-3)
        np.testing.assert_allclose(got.detections.confidence, alone.detections.confidence, atol=1e-5)
