"""ReCLIP's constants pinned by behaviour: the context view is the image blurred with PIL ``GaussianBlur`` of
radius 100 px of the *original* image (scaled to the model input by the smaller side ratio) everywhere outside
the box and untouched inside it; by default a box is represented by its region crop plus one context view; the
two logits are summed (ReCLIP "sum"), the best box is the arg-max of the sum and its score the softmax of the
mean logit. Expected outputs are computed in the test with PIL and the formulas, through the default
``GroundConfig``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

import clipkit.methods.ground as gr
from clipkit.methods.ground import GroundConfig, box_embeddings, context_views, ground_image
from clipkit.phrases import parse_phrases


def _noise_image(w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((w, h), Image.NEAREST)


def _normalised(img: Image.Image) -> torch.Tensor:
    """The tiny model's normalisation (mean = std = 0.5), by hand: ``[3, h, w]``."""
    return (torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1) - 0.5) / 0.5


@pytest.mark.parametrize("size", [(320, 320), (320, 480), (480, 320)])
def test_default_context_view_blurs_outside_the_box_with_radius_100_original_px(tiny_model, size):
    w, h = size
    image = _noise_image(w, h)
    cx = [(c + 0.5) * w / 32 for c in range(32)]  # input pixel centres in original pixels
    cy = [(r + 0.5) * h / 32 for r in range(32)]
    # box edges exactly on pixel centres: the left/top centre is inside, the right/bottom one outside
    box = np.array([[cx[10], cy[4], cx[20], cy[28]]], np.float32)
    [view] = context_views(tiny_model, image, box, "blur", GroundConfig().blur_radius)
    small = image.resize((32, 32), Image.BICUBIC)
    radius = 100 * min(32 / w, 32 / h)  # 10 px or 6.67 px at the 32 px input
    sharp, blurred = _normalised(small), _normalised(small.filter(ImageFilter.GaussianBlur(radius)))
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[4:28, 10:20] = True
    expected = torch.where(inside, sharp, blurred)
    torch.testing.assert_close(view, expected, rtol=0, atol=1e-5)
    # the radius matters at this size: 80 px would give a visibly different view
    other = _normalised(small.filter(ImageFilter.GaussianBlur(radius * 0.8)))
    assert (other - blurred)[:, ~inside].abs().max() > 0.02
    grey_img = context_views(tiny_model, image.convert("L"), box, "blur", 100.0)
    torch.testing.assert_close(grey_img[0], context_views(tiny_model, image.convert("L").convert("RGB"), box,
                                                          "blur", 100.0)[0])


def test_default_box_representations_are_one_region_crop_and_one_context_view(tiny_model, monkeypatch):
    calls = []
    monkeypatch.setattr(gr, "image_embeddings", lambda *a, **k: calls.append("region") or torch.eye(2, 32))
    image = _noise_image(64, 64)
    boxes = np.array([[0, 0, 32, 32], [16, 16, 64, 64]], np.float32)
    reps = box_embeddings(tiny_model, image, boxes, GroundConfig())
    assert calls == ["region"] and len(reps) == 2
    with torch.no_grad():
        views = context_views(tiny_model, image, boxes, "blur", 100.0)
        expected = F.normalize(tiny_model.encode_image(views).float(), dim=-1)
    torch.testing.assert_close(reps[1], expected, rtol=0, atol=1e-5)


def test_each_phrase_takes_the_box_with_the_highest_summed_logit(monkeypatch):
    """ReCLIP's "sum" aggregation picks the boxes (the scores themselves are the calibrated probabilities pinned
    in tests/test_ground_reclip.py)."""
    r1 = F.normalize(torch.tensor([[1.0, 0.2, 0.1], [0.3, 1.0, 0.2]]), dim=-1)  # region reps of 2 boxes
    r2 = F.normalize(torch.tensor([[0.9, 0.5, 0.1], [0.2, 1.0, 0.4]]), dim=-1)  # context reps
    monkeypatch.setattr(gr, "box_embeddings", lambda *a, **k: [r1, r2])
    caption, phrases = parse_phrases("a red circle left of a blue square")
    assert len(phrases) == 2
    text = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=-1)  # +bg
    model = SimpleNamespace(logit_scale=3.0)  # small, so the softmax is not saturated
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    cfg = GroundConfig(relations=False, threshold=0.0)  # every phrase alone, always answered
    out = ground_image(model, Image.new("RGB", (40, 40)), caption, phrases, text, cfg, boxes=boxes)
    det = out.detections
    for j in range(2):
        summed = [3.0 * float(r1[k] @ text[j] + r2[k] @ text[j]) for k in range(2)]
        np.testing.assert_allclose(det.xyxy[det.class_id == j][0], boxes[int(np.argmax(summed))])
    assert det.xyxy[0].tolist() != det.xyxy[1].tolist()  # each phrase picked its own box


def test_grey_context_is_mid_grey_outside_the_box(tiny_model):
    image = _noise_image(64, 64)
    [view] = context_views(tiny_model, image, np.array([[0, 0, 32, 32]], np.float32), "grey", 100.0)
    grey = (128 / 255 - 0.5) / 0.5
    torch.testing.assert_close(view[:, 16:, :], torch.full((3, 16, 32), grey))
    torch.testing.assert_close(view[:, :16, :16], _normalised(image.resize((32, 32), Image.BICUBIC))[:, :16, :16])


def test_representations_per_region_setting(tiny_model, monkeypatch):
    calls = []
    monkeypatch.setattr(gr, "image_embeddings", lambda *a, **k: calls.append("image") or torch.eye(3, 32))
    monkeypatch.setattr(gr, "fast_embeddings", lambda *a, **k: calls.append(("fast", k["patches"])) or torch.eye(3, 32))
    encoded = []
    real = tiny_model.encode_image
    monkeypatch.setattr(tiny_model, "encode_image", lambda v: encoded.append(len(v)) or real(v))
    image, boxes = _noise_image(64, 64), np.array([[0, 0, 32, 32], [8, 8, 40, 40], [0, 0, 64, 64]], np.float32)
    assert len(box_embeddings(tiny_model, image, boxes, GroundConfig(region="both", context_batch=2), "P")) == 3
    assert calls == ["image", ("fast", "P")] and encoded == [2, 1]
    calls.clear()
    assert len(box_embeddings(tiny_model, image, boxes, GroundConfig(region="fast", context="none"), "P")) == 1
    assert calls == [("fast", "P")]
    calls.clear()
    reps = box_embeddings(tiny_model, image, boxes, GroundConfig(region="none", context="grey"))
    assert calls == [] and len(reps) == 1 and torch.allclose(reps[0].norm(dim=-1), torch.ones(3))


def test_all_boxes_threshold_nms_and_cap(monkeypatch):
    """With ``all_boxes``: every (box, phrase) with score ≥ 0.5 (default), class-wise NMS at IoU 0.6 (default),
    at most ``max_boxes`` per phrase, best first."""
    reps = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.05, 0.0], [1.0, 0.0, 0.02], [0.0, 1.0, 0.0]]), dim=-1)
    monkeypatch.setattr(gr, "box_embeddings", lambda *a, **k: [reps])
    caption, phrases = parse_phrases(None, "red circle;blue square")
    text = torch.eye(3)
    model = SimpleNamespace(logit_scale=10.0)
    # boxes 0/1 overlap at IoU 0.667 (suppressed), 0/2 at IoU 0.538 (kept); box 3 is the other phrase's
    boxes = np.array([[0, 0, 10, 10], [0, 2, 10, 12], [3, 0, 13, 10], [40, 40, 50, 50]], np.float32)
    # each box alone against a constant no-object logit c: p = sigmoid((logit - c) / T), T = 1, c = 5
    cfg = GroundConfig(all_boxes=True, calibration_mode="constant", no_object_logit=5.0, temperature=1.0)
    det = ground_image(model, Image.new("RGB", (60, 60)), caption, phrases, text, cfg, boxes=boxes).detections
    got = sorted((int(c), tuple(b)) for c, b in zip(det.class_id, det.xyxy.tolist(), strict=True))
    assert got == [(0, (0, 0, 10, 10)), (0, (3, 0, 13, 10)), (1, (40, 40, 50, 50))]
    presence = 1 / (1 + torch.exp(-(10.0 * reps @ text.T - 5.0)))
    assert float(presence[3, 0]) < 0.5 and float(presence[1, 0]) >= 0.5  # the cut and the NMS both act here
    capped = ground_image(model, Image.new("RGB", (60, 60)), caption, phrases, text,
                          cfg.replace(max_boxes=1), boxes=boxes).detections
    assert sorted(capped.class_id.tolist()) == [0, 1]
    assert capped.xyxy[capped.class_id == 0].tolist() == [[0, 0, 10, 10]]  # the best of phrase 0 survives


def test_ground_option_bounds(tiny_model):
    from clipkit.errors import UsageError
    from clipkit.methods.ground import GroundPredictor

    make_config = GroundConfig.make
    for bad in ({"region": "crop"}, {"threshold": -0.1, "all_boxes": True}, {"threshold": 1.1, "all_boxes": True}):
        with pytest.raises(UsageError):
            make_config(**bad)
    assert make_config(threshold=0.0, all_boxes=True).threshold == 0.0
    assert make_config(threshold=1.0, all_boxes=True).threshold == 1.0
    with pytest.raises(UsageError):  # must divide the 8 px patch
        GroundPredictor(tiny_model, "a red circle", make_config(regions={"dense_shifts": 3}, templates="none"))
    GroundPredictor(tiny_model, "a red circle", make_config(region="image", score_map_proposals=False,
                                                           regions={"dense_shifts": 3}, templates="none"))


def test_ground_image_wiring(monkeypatch):
    """Proposals get this call's model, image, phrase count, region config and the shared dense patches; the
    representations get those patches too; timings add; the result carries path, size and typed arrays."""
    from clipkit.regions import region_config

    model = SimpleNamespace(logit_scale=3.0)
    img = Image.new("RGB", (40, 30))
    rcfg = region_config({"roi_output": 2})
    cfg = GroundConfig(region="both", min_cosine=0.3, regions={"roi_output": 2})
    log = []

    skip = object()

    def check(name, m, image=skip, c=skip):
        assert m is model, name
        assert image is skip or (isinstance(image, Image.Image) and image.size == (40, 30)), name
        assert c is skip or c == rcfg, name
        log.append(name)

    monkeypatch.setattr(gr, "dense_patches", lambda m, image, c: check("dense", m, image, c) or "P")
    monkeypatch.setattr(gr, "default_variant", lambda m: check("variant", m) or "naclip")
    monkeypatch.setattr(gr, "score_maps_from_patches", lambda m, patches, emb, variant, size, n_labels, min_cosine:
                        check("maps", m) or (patches, variant, size, n_labels, min_cosine))
    import clipkit.dense

    monkeypatch.setattr(clipkit.dense, "min_cosine_for",  # imported at call time by ground_proposals
                        lambda m, variant, requested: check("cut", m) or (variant, requested))
    monkeypatch.setattr(gr, "patch_pixels", lambda m, image, c: check("px", m, image, c) or 8)
    seen = {}
    boxes = np.array([[0, 0, 10, 10], [20, 10, 40, 30]], np.int64)
    monkeypatch.setattr(gr, "propose", lambda image, **k: seen.update(k) or boxes)
    reps = F.normalize(torch.tensor([[1.0, 0.2, 0.0], [0.1, 1.0, 0.3]]), dim=-1)
    monkeypatch.setattr(gr, "box_embeddings", lambda m, image, b, c, patches: check("reps", m, image)
                        or (patches == "P" and b.dtype == np.float32 and [reps]))
    caption, phrases = parse_phrases(None, "red circle;blue square")
    timings = {"proposals": 5.0, "scoring": 1.0}
    out = ground_image(model, img, caption, phrases, torch.eye(3), cfg, path="g.png", timings=timings)
    assert sorted(set(log)) == ["cut", "dense", "maps", "px", "reps", "variant"]
    assert seen["score_maps"] == ("P", "naclip", (40, 30), 2, ("naclip", 0.3)) and seen["n_labels"] == 2
    assert seen["patch_px"] == 8 and seen["use_selective_search"] is False
    det = out.detections
    assert det.path == "g.png" and det.image_size == (40, 30) and det.xyxy.shape == (2, 4)
    assert det.xyxy.dtype == np.float32 and det.confidence.dtype == np.float32 and det.class_id.dtype == np.int64
    assert det.data["phrase"].dtype == object and list(det.data["phrase"]) == ["red circle", "blue square"]
    assert 5.0 <= timings["proposals"] < 5.5 and 1.0 <= timings["scoring"] < 1.5
    fresh = {}
    empty = ground_image(model, img, caption, phrases, torch.eye(3), cfg, boxes=np.zeros((0, 4)), timings=fresh)
    assert empty.detections.path == "" and 0 <= fresh["proposals"] < 0.5 and 0 <= fresh["scoring"] < 0.5
    e = empty.detections
    assert e.xyxy.shape == (0, 4) and e.xyxy.dtype == np.float32 and e.confidence.dtype == np.float32
    assert e.class_id.dtype == np.int64


def test_proposal_sources(monkeypatch, tiny_model):
    seen = {}
    monkeypatch.setattr(gr, "propose", lambda image, **k: seen.update(k) or np.zeros((0, 4)))
    parse_phrases(None, "red circle")
    text = torch.eye(2, 32)
    gr.ground_proposals(tiny_model, _noise_image(32, 32), text, 1, GroundConfig(score_map_proposals=False))
    assert seen["score_maps"] is None and seen["use_selective_search"] is True
    gr.ground_proposals(tiny_model, _noise_image(32, 32), text, 1, GroundConfig(selective_search=True))
    assert seen["score_maps"] is not None and seen["use_selective_search"] is True


def test_cap_counts_boxes_per_phrase(monkeypatch):
    """max_boxes applies per phrase: with three phrases holding 2, 1 and 1 boxes, a cap of 1 keeps one each."""
    reps = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0.9, 0, 0, 0.1], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]), dim=-1)
    monkeypatch.setattr(gr, "box_embeddings", lambda *a, **k: [reps])
    caption, phrases = parse_phrases(None, "red;green;blue")
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], np.float32)
    det = ground_image(SimpleNamespace(logit_scale=20.0), Image.new("RGB", (80, 80)), caption, phrases,
                       torch.eye(4), GroundConfig(all_boxes=True, max_boxes=1), boxes=boxes).detections
    assert sorted(det.class_id.tolist()) == [0, 1, 2]


def test_one_representation_may_be_off_and_shift_checks_follow_the_dense_pass(tiny_model):
    from clipkit.errors import UsageError
    from clipkit.methods.ground import GroundPredictor

    make_config = GroundConfig.make
    assert make_config(context="none").region == "image" and make_config(region="none").context == "blur"
    for region in ("fast", "both"):  # the fast region needs the dense pass even without score-map proposals
        with pytest.raises(UsageError):
            GroundPredictor(tiny_model, "a red circle", make_config(region=region, score_map_proposals=False,
                                                                   regions={"dense_shifts": 3}, templates="none"))


def test_phrase_embeddings_use_the_configured_templates(tiny_model):
    from clipkit.methods.ground import phrase_embeddings
    from clipkit.prompts import text_embeddings

    _, phrases = parse_phrases(None, "red circle")
    got = phrase_embeddings(tiny_model, phrases, GroundConfig(templates="none"))
    torch.testing.assert_close(got, text_embeddings(tiny_model, ["red circle", "background"], "none"))
    assert (got - phrase_embeddings(tiny_model, phrases, GroundConfig())).abs().max() > 1e-4
