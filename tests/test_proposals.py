"""Proposals: selective search finds the objects of a flat scene; score-map components; filters; NMS; cap."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou

from clipkit.proposals import ProposalConfig, boxes_from_score_maps, filter_boxes, propose, selective_search

OBJECTS = [(20, 30, 80, 90), (120, 100, 190, 170), (150, 20, 200, 60)]  # XYXY, exclusive max


def scene() -> Image.Image:
    img = Image.new("RGB", (224, 200), (235, 232, 228))
    d = ImageDraw.Draw(img)
    d.ellipse([20, 30, 79, 89], fill=(215, 35, 35))
    d.rectangle([120, 100, 189, 169], fill=(35, 75, 220))
    d.polygon([(150, 59), (199, 59), (175, 20)], fill=(40, 165, 60))
    return img


def best_iou(gt, boxes) -> np.ndarray:
    return box_iou(torch.tensor(gt, dtype=torch.float32), torch.from_numpy(boxes)).max(1).values.numpy()


def test_selective_search_covers_every_object():
    boxes = propose(scene())
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert (best_iou(OBJECTS, boxes) > 0.8).all()
    w, h = scene().size
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_selective_search_gives_the_same_boxes_every_call():
    """OpenCV ranks regions with C's rand(); unseeded, the boxes changed from call to call."""
    first = selective_search(scene())
    for _ in range(3):
        np.testing.assert_array_equal(selective_search(scene()), first)


def test_downscaled_selective_search_maps_back_to_original_pixels():
    big = scene().resize((448, 400), Image.NEAREST)
    boxes = selective_search(big, max_side=224)
    gt = [tuple(2 * v for v in b) for b in OBJECTS]
    assert (best_iou(gt, boxes) > 0.75).all()


def test_score_map_components_give_one_box_per_blob():
    maps = np.full((2, 100, 120), 0.05, np.float32)
    maps[0, 10:30, 10:40] = 0.9  # label 0, two separate blobs
    maps[0, 60:90, 70:110] = 0.8
    maps[1, 40:55, 5:25] = 0.7  # label 1
    boxes, scores, labels = boxes_from_score_maps(maps, threshold=0.5)
    got = {(tuple(b.astype(int)), int(k)) for b, k in zip(boxes, labels, strict=True)}
    assert got == {((10, 10, 40, 30), 0), ((70, 60, 110, 90), 0), ((5, 40, 25, 55), 1)}
    assert np.allclose(sorted(scores), [0.7, 0.8, 0.9])


def test_score_maps_alone_and_torch_input():
    maps = torch.zeros(1, 200, 224)
    maps[0, 30:90, 20:80] = 0.9
    boxes = propose(scene(), score_maps=maps, use_selective_search=False)
    np.testing.assert_allclose(boxes, [[20, 30, 80, 90]])


def test_score_map_boxes_grow_by_a_fraction_of_a_patch_inside_the_image():
    maps = torch.zeros(1, 200, 224)
    maps[0, 30:90, 20:80] = 0.9
    boxes = propose(scene(), score_maps=maps, use_selective_search=False, patch_px=20.0)  # grow 0.15 x 20 = 3 px
    np.testing.assert_allclose(boxes, [[17, 27, 83, 93]])
    maps[0, 170:200, 200:224] = 0.8  # a blob at the corner: growth stops at the image border
    boxes = propose(scene(), score_maps=maps, use_selective_search=False, patch_px=20.0, score_map_grow=0.5)
    assert sorted(map(tuple, boxes.tolist())) == [(10.0, 20.0, 90.0, 100.0), (190.0, 160.0, 224.0, 200.0)]


def test_score_maps_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match="resize the maps"):
        propose(scene(), score_maps=np.zeros((1, 10, 10), np.float32))


def test_filters_min_area_aspect_and_background():
    boxes = np.array([[0, 0, 5, 5], [0, 0, 100, 5], [0, 0, 224, 200], [10, 10, 60, 50]], np.float32)
    keep = filter_boxes(boxes, (224, 200), ProposalConfig())
    assert keep.tolist() == [False, False, False, True]  # too small, too thin, whole image, kept


def test_nms_and_cap_are_applied():
    boxes = propose(scene(), max_proposals=2)
    assert len(boxes) == 2
    many = propose(scene(), nms_iou=0.3)
    iou = box_iou(torch.from_numpy(many), torch.from_numpy(many)).fill_diagonal_(0)
    assert float(iou.max()) <= 0.3 + 1e-6


def test_unknown_option_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown proposal option"):
        propose(scene(), max_boxes=3)


def test_blank_image_gives_no_boxes():
    boxes = propose(Image.new("RGB", (64, 64), (128, 128, 128)))
    assert boxes.shape == (0, 4)


def test_background_channels_win_pixels_but_give_no_boxes():
    maps = np.zeros((2, 50, 50), np.float32)
    maps[0, 5:15, 5:15] = 0.9  # label
    maps[1] = 0.5  # background channel everywhere
    maps[1, 5:15, 5:15] = 0.1
    maps[0, 30:40, 30:40] = 0.4  # label below the background there: no box
    boxes, _, labels = boxes_from_score_maps(maps, threshold=0.3, n_labels=1)
    np.testing.assert_allclose(boxes, [[5, 5, 15, 15]])
    assert labels.tolist() == [0]


def test_label_map_boxes_are_the_score_map_boxes():
    """boxes_from_label_map on the decided label map gives boxes_from_score_maps' boxes and labels, in order."""
    import numpy as np

    from clipkit.proposals import boxes_from_label_map, boxes_from_score_maps

    rng = np.random.default_rng(4)
    maps = rng.random((5, 40, 60)).astype(np.float32)
    maps[1, 5:15, 5:20] += 3
    maps[3, 20:35, 30:55] += 3
    maps[3, 2:6, 50:58] += 3
    maps = maps / maps.sum(0, keepdims=True)
    boxes, _, labels = boxes_from_score_maps(maps, threshold=0.3, n_labels=4, dilate=1)
    arg = maps.argmax(0)
    label_map = np.where((maps.max(0) >= 0.3) & (arg < 4), arg + 1, 0)
    got_boxes, got_labels = boxes_from_label_map(label_map, 4, dilate=1)
    assert len(boxes) >= 3 and np.array_equal(got_boxes, boxes) and np.array_equal(got_labels, labels)
