"""detect: region crops, both embedding paths, ViLD scoring/post-processing, outputs (tiny random model).

Accuracy on the shapes world with the bundled shapes-clip is measured by bench/detect_eval.py (and the slow
test in test_detect_shapes.py); these tests check the mechanics a user relies on.
"""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from clipkit.api import detect
from clipkit.errors import UsageError
from clipkit.methods.detect import DetectConfig, class_probabilities, postprocess
from clipkit.regions import RegionConfig, _crops, fast_embeddings, image_embeddings, square_boxes


def scene() -> Image.Image:
    img = Image.new("RGB", (96, 80), (235, 232, 228))
    d = ImageDraw.Draw(img)
    d.ellipse([8, 10, 39, 41], fill=(215, 35, 35))
    d.rectangle([55, 40, 84, 69], fill=(35, 75, 220))
    return img


class FakeModel:
    """Just what regions._crops / image_tensor need."""

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    device = torch.device("cpu")


def test_square_boxes_grow_about_the_centre():
    square, rect = square_boxes(np.array([[10, 20, 30, 60]], np.float32), 1.5)
    np.testing.assert_allclose(rect[0], [5, 10, 35, 70])
    np.testing.assert_allclose(square[0], [-10, 10, 50, 70])


def test_crop_shows_the_object_and_pads_the_rest():
    from clipkit.regions import image_tensor

    img = Image.new("RGB", (100, 100), (255, 255, 255))
    ImageDraw.Draw(img).rectangle([40, 10, 59, 89], fill=(255, 0, 0))  # a tall red bar, 20 x 80
    x = image_tensor(FakeModel(), img)
    crop = _crops(x, np.array([[40, 10, 60, 90]], np.float32), 1.0, (32, 32), True, 2)[0]
    # centre column is red (R=+1, G=-1 after normalisation), left/right margins are padding (0)
    assert crop[0, 16, 16] > 0.9 and crop[1, 16, 16] < -0.9
    assert crop[:, :, :8].abs().max() < 1e-6 and crop[:, :, -8:].abs().max() < 1e-6
    stretched = _crops(x, np.array([[40, 10, 60, 90]], np.float32), 1.0, (32, 32), False, 2)[0]
    assert stretched[1, :, 2:-2].max() < -0.9  # stretched to a square: red everywhere


def test_image_and_fast_embeddings_shapes_and_norms(tiny_model):
    boxes = np.array([[8, 10, 40, 42], [55, 40, 85, 70], [0, 0, 96, 80]], np.float32)
    for emb in (image_embeddings(tiny_model, scene(), boxes), fast_embeddings(tiny_model, scene(), boxes)):
        assert emb.shape == (3, 32) and emb.dtype == torch.float32
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    assert image_embeddings(tiny_model, scene(), np.zeros((0, 4))).shape == (0, 32)


def test_image_path_embeds_each_scale_and_sums(tiny_model):
    boxes = np.array([[8, 10, 40, 42]], np.float32)
    one = image_embeddings(tiny_model, scene(), boxes, cfg=RegionConfig(context_scales=(1.0,)))
    ctx = image_embeddings(tiny_model, scene(), boxes, cfg=RegionConfig(context_scales=(1.5,)))
    both = image_embeddings(tiny_model, scene(), boxes)
    torch.testing.assert_close(both, torch.nn.functional.normalize(one + ctx, dim=-1), atol=1e-5, rtol=1e-5)


def test_fast_path_pools_the_patches_inside_the_box(tiny_model):
    d = 32
    patches = torch.zeros(1, 4, 4, d)
    patches[0, :2, :2, 0] = 1.0  # top-left quadrant points along e0
    patches[0, 2:, 2:, 1] = 1.0  # bottom-right along e1
    img = Image.new("RGB", (64, 64))
    emb = fast_embeddings(tiny_model, img, np.array([[0, 0, 32, 32], [32, 32, 64, 64]], np.float32),
                          patches=patches)
    assert emb[0].argmax() == 0 and emb[1].argmax() == 1
    assert emb[0, 0] > 0.99 and emb[1, 1] > 0.99


def test_vild_softmax_temperature():
    region = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2, 0.0]]), dim=-1)
    classes = torch.eye(3)
    p = class_probabilities(region, classes, 100.0)
    expected = torch.softmax(100.0 * region @ classes.T, -1)
    torch.testing.assert_close(p, expected)
    assert p.sum() == pytest.approx(1.0)


def test_postprocess_drops_background_boxes_and_applies_nms_threshold_and_cap():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [20, 20, 30, 30]], np.float32)
    # columns: label a, label b, background
    probs = torch.tensor([[0.9, 0.05, 0.05],  # a
                          [0.8, 0.1, 0.1],  # a, overlaps box 0 -> suppressed by per-class NMS
                          [0.35, 0.2, 0.45],  # best is background -> dropped even though a >= threshold
                          [0.1, 0.6, 0.3]])  # b
    xyxy, score, cls = postprocess(boxes, probs, 2, DetectConfig(threshold=0.3))
    assert cls.tolist() == [0, 1]
    np.testing.assert_allclose(xyxy, boxes[[0, 3]])
    np.testing.assert_allclose(score, [0.9, 0.6], rtol=1e-6)
    xyxy, score, cls = postprocess(boxes, probs, 2, DetectConfig(threshold=0.3, max_detections=1))
    assert len(score) == 1 and score[0] == pytest.approx(0.9)
    # without background dropping box 2 comes back as label a
    _, _, cls = postprocess(boxes, probs, 2, DetectConfig(threshold=0.3, drop_background=False))
    assert sorted(cls.tolist()) == [0, 0, 1]


def test_config_errors_are_usage_errors():
    with pytest.raises(UsageError, match="--path must be one of"):
        DetectConfig.make(path="slow")
    with pytest.raises(UsageError, match="unknown option --nms"):
        DetectConfig.make(nms=0.3)
    with pytest.raises(UsageError, match="unknown proposals override"):
        DetectConfig.make(proposals={"max_boxes": 3})
    assert DetectConfig.make(background="bg, empty").background == ("bg", "empty")


@pytest.mark.parametrize("path", ["image", "fast", "ensemble"])
def test_detect_returns_pixel_boxes_for_each_path(tiny_model, path):
    [det] = detect(scene(), "red circle,blue square", model=tiny_model, path=path, threshold=0.0,
                   templates="none", drop_background=False)
    assert det.labels == ["red circle", "blue square"]
    assert len(det) > 0 and det.image_size == (96, 80)
    assert (det.xyxy[:, 0] >= 0).all() and (det.xyxy[:, 2] <= 96).all() and (det.xyxy[:, 3] <= 80).all()
    assert (np.diff(det.confidence) <= 1e-6).all()  # sorted by score
    record = det.to_dict()
    assert set(record["detections"][0]) >= {"label", "score", "box"}
    assert set(record["detections"][0]["box"]) == {"xmin", "ymin", "xmax", "ymax"}


def test_detect_files_give_error_records_for_bad_inputs(tiny_model, tmp_path):
    good = tmp_path / "a.png"
    scene().save(good)
    bad = tmp_path / "b.png"
    bad.write_bytes(b"not a png")
    results = detect([str(good), str(bad)], ["red circle"], model=tiny_model, templates="none")
    assert results[0].path == str(good) and hasattr(results[0], "xyxy")
    assert results[1].path == str(bad) and results[1].error


def test_labels_that_clash_with_background_are_refused(tiny_model):
    with pytest.raises(UsageError, match="background prompts"):
        detect(scene(), ["background"], model=tiny_model)


@pytest.mark.parametrize("path", ["fast", "image", "ensemble"])
def test_proposals_come_from_the_dense_pass_unless_selective_search_is_asked_for(tiny_model, monkeypatch, path):
    """Every path takes its proposals from its one dense forward pass; --selective-search adds selective search,
    and it is the fallback when score-map proposals are turned off."""
    import clipkit.proposals as proposals

    calls = []
    real = proposals.selective_search
    monkeypatch.setattr(proposals, "selective_search", lambda *a, **k: calls.append(1) or real(*a, **k))
    detect([scene()], ["red circle", "blue square"], model=tiny_model, path=path, threshold=0.0)
    assert not calls
    detect([scene()], ["red circle"], model=tiny_model, path=path, selective_search=True)
    assert calls
    calls.clear()
    detect([scene()], ["red circle"], model=tiny_model, path=path, score_map_proposals=False)
    assert calls


def test_score_maps_are_empty_where_no_label_passes_the_background_cosine():
    """segment's background rule in detect's score maps: a pixel whose best *label* cosine (background prompts
    excluded) is under the cut gets probability 0 everywhere, so it can give no proposal."""
    import torch.nn.functional as F

    from clipkit.methods.detect import score_maps_from_patches

    g = torch.Generator().manual_seed(0)
    patches = F.normalize(torch.randn(1, 5, 6, 16, generator=g), dim=-1)
    emb = F.normalize(torch.randn(4, 16, generator=g), dim=-1)  # 3 labels + 1 background prompt
    plain = score_maps_from_patches(None, patches, emb, "naclip", (6, 5))
    cut = score_maps_from_patches(None, patches, emb, "naclip", (6, 5), n_labels=3, min_cosine=0.1)
    best_label_cos = torch.einsum("hwd,nd->nhw", patches[0], emb)[:3].amax(0)
    below = best_label_cos < 0.1
    assert below.any() and (~below).any()
    assert (cut[:, below] == 0).all()
    torch.testing.assert_close(cut[:, ~below], plain[:, ~below])
    torch.testing.assert_close(plain.sum(0), torch.ones(5, 6))
