"""Interop (issue 15, item 6): supervision detections both ways, and `--coco-dataset` files that pycocotools
loads with the same boxes and masks clipkit printed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from clipkit.registry import bundled_models

pytestmark = pytest.mark.skipif("shapes-clip" not in bundled_models(), reason="shapes-clip not bundled")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A fresh 224 px scene of three objects of different categories, its truth, and its labels."""
    from clipkit.world import SceneConfig, generate_scene

    folder = tmp_path_factory.mktemp("interop")
    for i in range(50):
        s = generate_scene(31, i, SceneConfig(size=(224, 224)), n_objects=3)
        if len({o.name for o in s.objects}) == 3:
            s.image.save(folder / "scene.png")
            return folder / "scene.png", s, ",".join(o.name for o in s.objects)
    raise AssertionError("no scene of three categories in 50 draws")


def test_supervision_round_trip_keeps_boxes_scores_and_names(scene):
    sv = pytest.importorskip("supervision")
    import clipkit
    from clipkit.results import Detections

    det = clipkit.detect([str(scene[0])], scene[2])[0]
    assert len(det) >= 1
    out = det.to_supervision()
    assert isinstance(out, sv.Detections) and len(out) == len(det)
    assert np.array_equal(out.xyxy, det.xyxy) and np.array_equal(out.confidence, det.confidence)
    assert list(out.data["class_name"]) == [det.labels[c] for c in det.class_id]
    back = Detections.from_supervision(out, path=det.path, image_size=det.image_size)
    assert [back.labels[c] for c in back.class_id] == [det.labels[c] for c in det.class_id]
    assert np.array_equal(back.xyxy, det.xyxy) and np.array_equal(back.confidence, det.confidence)
    assert list(sv.Detections.merge([out, out]).data["class_name"]) == list(out.data["class_name"]) * 2


def test_detect_coco_dataset_loads_in_pycocotools_with_the_printed_boxes(scene, tmp_path):
    from pycocotools.coco import COCO

    from clipkit.cli.app import app

    path = tmp_path / "pred.json"
    done = CliRunner().invoke(app, ["detect", str(scene[0]), "-l", scene[2], "-f", "jsonl", "-q",
                                    "--coco-dataset", str(path)])
    assert done.exit_code == 0, done.output
    printed = json.loads(done.stdout.splitlines()[0])["detections"]
    coco = COCO(str(path))
    (image,) = coco.dataset["images"]
    assert (image["width"], image["height"]) == (224, 224) and image["file_name"] == str(scene[0])
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    got = sorted((names[a["category_id"]], *np.round(a["bbox"], 2)) for a in anns)
    want = sorted((d["label"], *np.round([b["xmin"], b["ymin"], b["xmax"] - b["xmin"], b["ymax"] - b["ymin"]], 2))
                  for d in printed for b in [d["box"]])
    assert len(want) >= 1
    assert got == want


def test_segment_coco_dataset_masks_are_the_label_map(scene, tmp_path):
    from pycocotools.coco import COCO

    import clipkit
    from clipkit.world import CATEGORIES

    path = tmp_path / "seg.json"
    seg = clipkit.segment([str(scene[0])], scene[2], head="lseg-shapes", coco_dataset=str(path))[0]
    coco = COCO(str(path))
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    anns = coco.loadAnns(coco.getAnnIds())
    assert {names[a["category_id"]] for a in anns} == {c["label"] for c in seg.classes()}
    truth = scene[1].label_map()
    for a in anns:
        mask = coco.annToMask(a).astype(bool)
        assert np.array_equal(mask, seg.label_map == seg.labels.index(names[a["category_id"]]) + 1)
        assert a["area"] == mask.sum()
        if names[a["category_id"]] in scene[2].split(","):  # the mask lies on its object
            obj = truth == CATEGORIES.index(names[a["category_id"]]) + 1
            assert (mask & obj).sum() / (mask | obj).sum() > 0.5
