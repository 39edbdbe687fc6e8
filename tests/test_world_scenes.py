"""The shapes world generator and export: determinism and exact, self-consistent annotations."""

import json

import numpy as np
import pytest

from clipkit.world import CATEGORIES, COLOURS, SHAPES, SceneConfig, category_id, generate, generate_scene
from clipkit.world.dataset import ExportError, read_export
from clipkit.world.export import export


def test_categories_fixed_order():
    assert len(COLOURS) >= 8 and len(SHAPES) >= 6
    assert len(CATEGORIES) == len(COLOURS) * len(SHAPES)
    assert CATEGORIES[0] == "red circle" and category_id("red", "circle") == 1
    assert CATEGORIES[category_id("blue", "star") - 1] == "blue star"


def test_generator_is_deterministic():
    cfg = SceneConfig(size=(96, 96))
    a = list(generate(6, seed=3, config=cfg))
    b = list(generate(6, seed=3, config=cfg))
    c = list(generate(6, seed=4, config=cfg))
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image))
        assert x.caption == y.caption and x.names == y.names
    assert any(not np.array_equal(np.asarray(x.image), np.asarray(z.image)) for x, z in zip(a, c, strict=True)
               )
    # scene i does not depend on how many scenes were generated before it
    assert np.array_equal(np.asarray(generate_scene(3, 4, cfg).image), np.asarray(a[4].image))


@pytest.mark.parametrize("size", [64, 160, 448])
def test_annotations_are_consistent(size):
    scenes = list(generate(25, seed=size, config=SceneConfig(size=(size, size))))
    counts = set()
    for s in scenes:
        assert s.size == (size, size)
        assert 1 <= len(s.objects) <= 4
        counts.add(len(s.objects))
        assert len(set(s.names)) == len(s.names)  # categories unique within a scene
        lm = s.label_map()
        for o in s.objects:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size  # inside the image
            ys, xs = np.nonzero(o.mask)
            assert xs.min() == x0 and xs.max() == x1 - 1 and ys.min() == y0 and ys.max() == y1 - 1
            assert (lm[o.mask] == o.category_id).all()  # semantic map agrees with the instance
            cx, cy = o.center
            assert o.mask[int(cy), int(cx)]  # the centre point is on the object
            assert o.visible_fraction >= 0.6
            # the object is drawn in its colour: mean pixel colour close to its nominal colour
            mean = np.asarray(s.image)[o.mask].mean(0)
            assert np.abs(mean - np.array(COLOURS[o.colour])).max() < 40
            assert o.name in s.caption
        assert (lm > 0).sum() == sum(o.area for o in s.objects)  # visible masks are disjoint
    assert counts == {1, 2, 3, 4}


def test_relations_only_when_unambiguous():
    for s in generate(60, seed=1, config=SceneConfig(size=(128, 128), min_objects=2, max_objects=2)):
        if s.relation is None:
            assert " and " in s.caption
            continue
        i, rel, j = s.relation
        a, b = s.objects[i].box, s.objects[j].box
        if rel == "left of":
            assert a[2] <= b[0]
        elif rel == "right of":
            assert b[2] <= a[0]
        elif rel == "above":
            assert a[3] <= b[1]
        else:
            assert rel == "below" and b[3] <= a[1]


def test_export_loads_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    out = export(tmp_path / "ds", n=12, seed=5, size=128)
    ex = read_export(out)
    assert len(ex) == 12 and ex.categories[1] == "red circle" and len(ex.categories) == len(CATEGORIES)
    coco = COCO(str(out / "instances.json"))
    assert len(coco.getImgIds()) == 12
    for path in ex.images:
        assert path.is_file()
        sem = ex.semantic_mask(path)
        assert sem.shape == (128, 128)
        anns = ex.annotations(path)
        union = np.zeros_like(sem, dtype=bool)
        for ann in anns:
            m = coco.annToMask(ann).astype(bool)
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(m)
            assert x <= xs.min() and xs.max() < x + w and y <= ys.min() and ys.max() < y + h
            assert (sem[m] == ann["category_id"]).all()
            assert ann["area"] == m.sum()
            union |= m
        assert ((sem > 0) == union).all()
        assert ex.captions[path.name]
    refs = json.loads((out / "referring.json").read_text())
    assert refs and {"image", "expression", "box", "distractor"} <= set(refs[0])
    assert any(r["distractor"] for r in refs) and not all(r["distractor"] for r in refs)
    for r in refs:
        if r["type"] != "plain":  # the other types are checked in tests/test_ground_world.py
            continue
        xyxy, names = ex.boxes_xyxy(r["image"])
        k = names.index(r["expression"].removeprefix("the "))
        assert list(xyxy[k]) == r["box"]


def test_read_export_rejects_other_folders(tmp_path):
    with pytest.raises(ExportError, match="clipkit world export"):
        read_export(tmp_path)


def test_cli_export(tmp_path):
    from typer.testing import CliRunner

    from clipkit.cli.app import app

    r = CliRunner().invoke(app, ["world", "export", str(tmp_path / "ds"), "--n", "3", "--size", "64:96", "-q"])
    assert r.exit_code == 0, r.output
    ex = read_export(tmp_path / "ds")
    assert len(ex) == 3 and all(64 <= ex.image_info(p)["width"] <= 96 for p in ex.images)
    r = CliRunner().invoke(app, ["world", "export", str(tmp_path / "bad"), "--size", "9"])
    assert r.exit_code == 2 and "--size" in r.output
