"""Shapes-world line drawings (clipkit.world.drawings): layout kept, lines on outlines, plain paper, captions
that name what is visible, and the opt-in drawing mix of the shapes-clip trainer."""

import cv2
import numpy as np

from clipkit.training.clip import TrainClipConfig, train_clip
from clipkit.world import COLOURS
from clipkit.world.data import WORDS, PoolConfig, SceneCaptionDataset, ScenePool
from clipkit.world.drawings import PAPERS
from clipkit.world.scenes import SceneConfig, generate_scene

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16,
                       "mlp_ratio": 2.0, "pool_type": "avg"},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1,
                     "mlp_ratio": 2.0}}


def _outline_distance(scene) -> np.ndarray:
    """float [H, W]: distance in px to the nearest boundary of any object's visible mask."""
    edges = np.zeros(scene.objects[0].mask.shape, np.uint8)
    for o in scene.objects:
        m = o.mask.astype(np.uint8)
        edges |= (m - cv2.erode(m, np.ones((3, 3), np.uint8))).astype(np.uint8)
    return cv2.distanceTransform(1 - edges, cv2.DIST_L2, 5)


def test_a_drawing_is_the_photo_scene_as_lines_on_plain_paper():
    cfg = SceneConfig(size=(160, 160), max_objects=3)
    for i in range(8):
        photo = generate_scene(4, i, cfg)
        drawing = generate_scene(4, i, cfg, drawing=True)
        assert photo.meta == {}  # the default stream carries no drawing metadata
        assert drawing.meta["style"] == "drawing" and len(drawing.meta["black_ink"]) == len(drawing.objects)
        assert drawing.names == photo.names and np.array_equal(drawing.boxes, photo.boxes)
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(drawing.objects, photo.objects, strict=True))
        img = np.asarray(drawing.image).astype(int)
        paper = img[0, 0]
        assert tuple(paper) in PAPERS
        ink = np.abs(img - paper).max(-1) > 40
        dist = _outline_distance(drawing)
        radius = max(o.radius for o in drawing.objects)
        # every inked pixel lies on an object's outline (up to wobble and stroke width) ...
        assert dist[ink].max() <= 0.06 * radius + 0.011 * 160 + 3, (i, dist[ink].max())
        # ... the outlines are drawn (most outline pixels have ink within 2 px) ...
        near_ink = cv2.dilate(ink.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert near_ink[dist == 0].mean() > 0.8, (i, near_ink[dist == 0].mean())
        # ... and everything else is plain paper
        far = dist > 0.06 * radius + 0.011 * 160 + 3
        assert (np.abs(img[far] - paper).max() == 0)


def test_drawing_captions_name_what_is_visible():
    cfg = SceneConfig(size=(128, 128), max_objects=1)
    seen = set()
    for i in range(20):
        scene = generate_scene(6, i, cfg, drawing=True)
        obj, black = scene.objects[0], scene.meta["black_ink"][0]
        img = np.asarray(scene.image).astype(int)
        paper = img[0, 0]
        contrast = np.abs(img - paper).max(-1)
        darkest = img[np.unravel_index(contrast.argmax(), contrast.shape)]  # the most inked pixel
        if black:
            assert scene.caption.split()[-1] == obj.shape and obj.colour not in scene.caption
            assert darkest.max() < 90  # black-ish ink
        else:
            assert obj.name in scene.caption
            assert np.abs(darkest - np.array(COLOURS[obj.colour])).max() < 60  # the object's colour
        seen.add(black)
    assert seen == {True, False}


def test_pool_mixes_drawings_without_changing_its_photos():
    plain = ScenePool(PoolConfig(n=30, seed=2, image_size=48, render_range=(48, 64)))
    mixed = ScenePool(PoolConfig(n=30, seed=2, image_size=48, render_range=(48, 64), drawings=0.5))
    assert not plain.drawn.any() and 5 <= mixed.drawn.sum() <= 25
    photos = ~mixed.drawn
    assert np.array_equal(mixed.images[photos], plain.images[photos])
    assert not np.array_equal(mixed.images[mixed.drawn], plain.images[mixed.drawn])
    shape_only = [n for names in np.array(mixed.names, dtype=object)[mixed.drawn] for n in names if " " not in n]
    assert shape_only  # black drawings are captioned by shape alone
    ds = SceneCaptionDataset(mixed, seed=0)
    for i in np.nonzero(mixed.drawn)[0]:
        item = ds.item(int(i))
        names = mixed.names[i]
        assert int(item["labels"].sum()) == sum(" " in n for n in names)  # colourless names have no category
        assert {WORDS[k] for k in np.nonzero(item["words"].numpy())[0]} == {w for n in names for w in n.split()}


def test_train_clip_with_drawings_smoke():
    cfg = TrainClipConfig(name="clipkit-test-tiny-drawings", model_cfg=TINY, steps=2, batch_size=8,
                          pool_size=16, render_range=(32, 48), warmup=1, threads=1, drawings=0.5)
    _, _, res, _ = train_clip(cfg, quiet=True)
    assert res.steps == 2 and all(np.isfinite(res.losses))
