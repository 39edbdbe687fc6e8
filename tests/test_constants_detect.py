"""ViLD's constants pinned by behaviour: temperature 100, the ensemble p_image^(2/3)·p_fast^(1/3), per-class NMS
at IoU 0.5, score threshold 0.3 — each checked on a tiny case whose expected output is computed in the test from
ViLD's formula, through the default ``DetectConfig`` (never by reading the constant).

``detect_image`` runs with its region stages replaced by fixed embeddings (proposals, the dense pass and both
embedding paths are stubbed), so only the scoring and post-processing under test decide the result.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clipkit.methods.detect as det
from clipkit.methods.detect import DetectConfig, class_probabilities, postprocess


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# two labels + "background"; one region, whose two embeddings favour the labels differently
CLASSES = _unit([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0])
E_IMAGE = _unit([1.0, 0.97, 0.9])
E_FAST = _unit([0.95, 1.0, 0.9])
BOX = np.array([[4.0, 4.0, 20.0, 20.0]], np.float32)


def _softmax(logits):
    z = [math.exp(v - max(logits)) for v in logits]
    return [v / sum(z) for v in z]


def _vild_probs(e: torch.Tensor, tau: float = 0.01) -> list[float]:
    """ViLD: softmax over classes of cos / τ, τ = 0.01, computed element by element."""
    return _softmax([float(e[0] @ c) / tau for c in CLASSES])


@pytest.fixture
def stubbed(monkeypatch):
    """``detect_image`` with fixed proposals and region embeddings (no model computation at all)."""
    monkeypatch.setattr(det, "dense_patches", lambda *a, **k: None)
    monkeypatch.setattr(det, "score_maps_from_patches", lambda *a, **k: None)
    monkeypatch.setattr(det, "min_cosine_for", lambda *a, **k: None)
    monkeypatch.setattr(det, "patch_pixels", lambda *a, **k: 8)
    monkeypatch.setattr(det, "propose", lambda *a, **k: BOX)
    monkeypatch.setattr(det, "image_tensor", lambda *a, **k: None)
    monkeypatch.setattr(det, "image_embeddings", lambda *a, **k: E_IMAGE)
    monkeypatch.setattr(det, "fast_embeddings", lambda *a, **k: E_FAST)
    return SimpleNamespace(logit_scale=7.0, name="stub")  # a model whose own scale must not be used


def _run(model, **cfg):
    img = Image.new("RGB", (24, 24))
    out = det.detect_image(model, img, ["a", "b"], CLASSES, DetectConfig(threshold=0.0, **cfg))
    return {int(c): float(s) for c, s in zip(out.class_id, out.confidence, strict=True)}


def test_default_temperature_is_100(stubbed):
    got = _run(stubbed, path="image")
    expected = _vild_probs(E_IMAGE)
    assert got[0] == pytest.approx(expected[0], rel=1e-5) and got[1] == pytest.approx(expected[1], rel=1e-5)
    # the region is near both labels: at τ = 0.02 or the model's scale the numbers would be far off
    assert abs(_vild_probs(E_IMAGE, 0.02)[0] - expected[0]) > 0.05


def test_default_ensemble_is_the_two_thirds_geometric_mean(stubbed):
    got = _run(stubbed, path="ensemble")
    p_img, p_fast = _vild_probs(E_IMAGE), _vild_probs(E_FAST)
    for c in (0, 1):
        assert got[c] == pytest.approx(p_img[c] ** (2 / 3) * p_fast[c] ** (1 / 3), rel=1e-5)
        # not the swapped exponents, nor an arithmetic mean
        assert abs(got[c] - p_img[c] ** (1 / 3) * p_fast[c] ** (2 / 3)) > 1e-3
        assert abs(got[c] - (2 * p_img[c] + p_fast[c]) / 3) > 1e-3


def test_fast_path_alone_uses_the_fast_embeddings(stubbed):
    got = _run(stubbed, path="fast")
    assert got[1] == pytest.approx(_vild_probs(E_FAST)[1], rel=1e-5)


def test_class_probabilities_hand_case():
    # cosines 0.5 and 0.49 at temperature 100: logits 50 and 49, p = 1 / (1 + e^-1)
    region = torch.tensor([[1.0, 0.0]])
    classes = torch.tensor([[0.5, 0.0], [0.49, 0.0]])
    p = class_probabilities(region, classes, 100.0)
    assert float(p[0, 0]) == pytest.approx(1 / (1 + math.exp(-1)), rel=1e-5)


def _two_box_probs():
    return torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]])


@pytest.mark.parametrize(("shift", "kept"), [(2.0, 1), (3.5, 2)])
def test_default_per_class_nms_at_iou_one_half(shift, kept):
    """Two 10×10 boxes of the same label shifted by ``shift`` px: IoU 8·10/120 = 0.667 (suppressed) or
    6.5·10/135 = 0.481 (kept) — the cut sits at 0.5."""
    boxes = np.array([[0, 0, 10, 10], [shift, 0, 10 + shift, 10]], np.float32)
    inter = (10 - shift) * 10
    iou = inter / (200 - inter)
    assert (iou > 0.5) == (kept == 1)
    _, score, cls = postprocess(boxes, _two_box_probs(), 2, DetectConfig())
    assert len(score) == kept and set(cls.tolist()) == {0}


def test_nms_is_per_class():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)  # identical boxes, different labels
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.85, 0.05]])
    _, _, cls = postprocess(boxes, probs, 2, DetectConfig())
    assert sorted(cls.tolist()) == [0, 1]


def test_default_score_threshold_is_0_3():
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    probs = torch.tensor([[0.31, 0.29, 0.40], [0.29, 0.31, 0.40]])  # 0.31 passes, 0.29 does not
    _, score, cls = postprocess(boxes, probs, 2, DetectConfig(drop_background=False))
    assert sorted(cls.tolist()) == [0, 1]
    assert score.tolist() == pytest.approx([0.31, 0.31])


def test_option_bounds():
    from clipkit.errors import UsageError
    make_config = DetectConfig.make
    for ok in (0.0, 1.0):
        assert make_config(ensemble_weight=ok, threshold=ok).ensemble_weight == ok
    for bad in ({"ensemble_weight": -0.01}, {"ensemble_weight": 1.01}, {"threshold": -0.01},
                {"threshold": 1.01}, {"max_detections": 0}):
        with pytest.raises(UsageError):
            make_config(**bad)
    assert make_config(max_detections=1).max_detections == 1


def test_selective_search_when_asked_or_when_it_is_the_only_source():
    table = {(s, m): DetectConfig(selective_search=s, score_map_proposals=m).uses_selective_search
             for s in (False, True) for m in (False, True)}
    assert table == {(False, False): True, (False, True): False, (True, False): True, (True, True): True}


def test_detect_image_wiring(stubbed, monkeypatch):
    """What ``detect_image`` hands to each stage: the proposal sources and patch size, the score maps over labels
    + background with the model's cosine cut for the chosen variant; temperature None = the model's own scale;
    timings per stage; the result's labels, path and image size."""
    seen = {}
    monkeypatch.setattr(det, "propose", lambda image, **k: seen.setdefault("propose", k) and BOX)
    monkeypatch.setattr(det, "score_maps_from_patches",
                        lambda model, patches, emb, variant, size, **k: seen.setdefault("maps", (variant, size, k))
                        and "MAPS")
    monkeypatch.setattr(det, "min_cosine_for", lambda model, variant, requested: ("cut", variant, requested))
    img = Image.new("RGB", (24, 20))
    timings = {"regions": 1.0}
    out = det.detect_image(stubbed, img, ["a", "b"], CLASSES,
                           DetectConfig(threshold=0.0, temperature=None, path="image", min_cosine=0.2,
                                        regions={"dense_variant": "sclip"}), path="p.png", timings=timings)
    assert seen["propose"]["score_maps"] == "MAPS" and seen["propose"]["n_labels"] == 2
    assert seen["propose"]["patch_px"] == 8 and seen["propose"]["use_selective_search"] is False
    assert seen["maps"] == ("sclip", (24, 20), {"n_labels": 2, "min_cosine": ("cut", "sclip", 0.2)})
    expected = _softmax([7.0 * float(E_IMAGE[0] @ c) for c in CLASSES])
    got = {int(c): float(s) for c, s in zip(out.class_id, out.confidence, strict=True)}
    assert got[0] == pytest.approx(expected[0], rel=1e-5)
    assert out.labels == ["a", "b"] and out.path == "p.png" and out.image_size == (24, 20)
    assert set(timings) == {"proposals", "regions"} and timings["regions"] >= 1.0 and timings["proposals"] >= 0


def test_without_score_map_proposals_no_dense_pass_for_the_image_path(stubbed, monkeypatch):
    calls = []
    monkeypatch.setattr(det, "dense_patches", lambda *a, **k: calls.append("dense"))
    seen = {}
    monkeypatch.setattr(det, "propose", lambda image, **k: seen.update(k) or BOX)
    det.detect_image(stubbed, Image.new("RGB", (24, 24)), ["a", "b"], CLASSES,
                     DetectConfig(path="image", score_map_proposals=False))
    assert calls == [] and seen["score_maps"] is None and seen["use_selective_search"] is True


def test_stages_receive_the_model_image_and_region_config(monkeypatch):
    """Every stage gets this call's model, image and region config (with the user's overrides), the fast path the
    shared dense patches and the image path the shared image tensor; timings add to what is there."""
    from clipkit.regions import region_config

    model = SimpleNamespace(logit_scale=7.0, name="stub")
    img = Image.new("L", (24, 20))
    rcfg = region_config({"roi_output": 2, "context_scales": (1.0,)})
    log = []

    skip = object()

    def check(name, m, image=skip, cfg=skip):
        assert m is model, name
        if image is not skip:
            assert isinstance(image, Image.Image) and image.size == (24, 20) and image.mode == "RGB", name
        if cfg is not skip:
            assert cfg == rcfg, name
        log.append(name)

    monkeypatch.setattr(det, "dense_patches", lambda m, image, cfg: check("dense", m, image, cfg) or "PATCHES")
    monkeypatch.setattr(det, "default_variant", lambda m: check("variant", m) or "naclip")
    monkeypatch.setattr(det, "score_maps_from_patches",
                        lambda m, patches, *a, **k: check("maps", m) or (patches == "PATCHES") or None)
    monkeypatch.setattr(det, "min_cosine_for", lambda m, variant, requested: check("cut", m) or None)
    monkeypatch.setattr(det, "patch_pixels", lambda m, image, cfg: check("px", m, image, cfg) or 8)
    monkeypatch.setattr(det, "propose", lambda image, **k: BOX)
    monkeypatch.setattr(det, "image_tensor", lambda m, image: check("tensor", m, image) or "X")
    monkeypatch.setattr(det, "image_embeddings", lambda m, image, boxes, cfg, x: check("image", m, image, cfg)
                        or (x == "X" and E_IMAGE))
    monkeypatch.setattr(det, "fast_embeddings", lambda m, image, boxes, cfg, patches: check("fast", m, image, cfg)
                        or (patches == "PATCHES" and E_FAST))
    timings = {"proposals": 5.0, "regions": 1.0}
    out = det.detect_image(model, img, ["a", "b"], CLASSES, DetectConfig(threshold=0.0, regions={
        "roi_output": 2, "context_scales": (1.0,)}), timings=timings)
    assert sorted(set(log)) == ["cut", "dense", "fast", "image", "maps", "px", "tensor", "variant"]
    assert len(out) == 2 and out.path == ""
    assert 5.0 <= timings["proposals"] < 5.5 and 1.0 <= timings["regions"] < 1.5
    fresh = {}
    det.detect_image(model, img, ["a", "b"], CLASSES, DetectConfig(regions={"roi_output": 2,
                                                                           "context_scales": (1.0,)}),
                     timings=fresh)
    assert 0.0 <= fresh["proposals"] < 0.5 and 0.0 <= fresh["regions"] < 0.5


def test_postprocess_edge_cases():
    empty = postprocess(np.zeros((0, 4)), torch.zeros(0, 3), 2, DetectConfig())
    none = postprocess(np.array([[0, 0, 4, 4]]), torch.tensor([[0.2, 0.1, 0.7]]), 2, DetectConfig())
    for xyxy, score, cls in (empty, none):
        assert xyxy.shape == (0, 4) and xyxy.dtype == np.float32
        assert score.shape == (0,) and score.dtype == np.float32 and cls.dtype == np.int64
    # exactly one (box, label) pair, at exactly the threshold, integer boxes
    xyxy, score, cls = postprocess(np.array([[0, 0, 4, 4]]), torch.tensor([[0.5, 0.25, 0.25]]), 2,
                                   DetectConfig(threshold=0.5))
    assert xyxy.dtype == np.float32 and xyxy.tolist() == [[0, 0, 4, 4]]
    assert score.dtype == np.float32 and score.tolist() == [0.5] and cls.dtype == np.int64 and cls.tolist() == [0]
