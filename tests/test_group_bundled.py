"""The bundled shapes-groupvit on held-out shapes-world scenes (stream 0; training used stream 1).

Honest state (bench/results/group.md): trained from captions only (warm start from shapes-clip, the full
recipe, then runs with the grouping frozen, at 224 px and then at 352 px, with clipkit's unclaimed-group flatness
term; image-level top-k and background threshold calibrated on validation), it measures held-out mIoU 0.426
(200 scenes) against the issue's 0.60. The target is kept as a strict xfail, so it
turns into a failure (and must be promoted to a plain test) the day a retrained model reaches it.
"""

from __future__ import annotations

import numpy as np
import pytest

from clipkit.registry import bundled_models

pytestmark = pytest.mark.skipif("shapes-groupvit" not in bundled_models(), reason="shapes-groupvit not bundled")

N_SCENES = 24
RECALL_FLOOR = 0.6  # 0.76 on 100 validation scenes; chance is 5/48 = 0.10


@pytest.fixture(scope="module")
def model():
    from clipkit.registry import load_groupvit_model

    return load_groupvit_model("shapes-groupvit", device="cpu")


@pytest.fixture(scope="module")
def scenes():
    from clipkit.world import SceneConfig, generate

    return list(generate(N_SCENES, seed=0, config=SceneConfig(size=(224, 224))))


@pytest.fixture(scope="module")
def results(model, scenes):
    from clipkit.methods.group import GroupPredictor
    from clipkit.world import CATEGORIES

    grouper = GroupPredictor(model, list(CATEGORIES))
    return [grouper.group_image(scene.image, f"scene{i}") for i, scene in enumerate(scenes)]


def test_image_embedding_ranks_the_scenes_objects_above_chance(model, scenes):
    """The image-level top-5 filter of the official rule: it must hold the scene's objects far above chance."""
    import torch
    import torch.nn.functional as F

    from clipkit.groupvit.segment import preprocess
    from clipkit.groupvit.text import label_embeddings
    from clipkit.world import CATEGORIES

    text = label_embeddings(model.net, list(CATEGORIES), model.meta["templates"])
    hit = total = 0
    with torch.inference_mode():
        for scene in scenes:
            emb = F.normalize(model.net.encode_image(preprocess(scene.image, model.net)), dim=-1)[0]
            top = set((emb @ text.T).topk(5).indices.tolist())
            hit += sum(o.category_id - 1 in top for o in scene.objects)
            total += len(scene.objects)
    assert hit / total >= RECALL_FLOOR, (hit, total)


def test_outputs_cover_the_image_and_stage1_is_finer(results):
    for res in results:
        assert res.label_map.shape == res.extras["stage1"].shape == res.extras["stage2"].shape == (224, 224)
        assert res.label_map.max() <= 48
    s1 = np.mean([len(np.unique(r.extras["stage1"])) for r in results])
    s2 = np.mean([len(np.unique(r.extras["stage2"])) for r in results])
    assert s1 >= s2 >= 1


def test_grouping_labels_objects_above_chance(results, scenes):
    """Floor, not target: the shipped model measures 0.483 on these 24 scenes (0.426 on 200); the previous one
    (frozen grouping at 224 px, official top-5) 0.377 here, which this floor rejects."""
    from clipkit.evaluation.segmentation import confusion_miou

    miou = confusion_miou([r.label_map for r in results], [s.label_map() for s in scenes], 49)["miou"]
    assert miou >= 0.42, miou


@pytest.mark.xfail(strict=True, reason="issue target (mIoU >= 0.60) not reached: measured 0.426, see "
                   "bench/results/group.md")
def test_issue_target_zero_shot_miou(results, scenes):
    from clipkit.evaluation.segmentation import confusion_miou

    miou = confusion_miou([r.label_map for r in results], [s.label_map() for s in scenes], 49)["miou"]
    assert miou >= 0.60


def test_training_free_fallback_on_shapes_clip_groups_objects(scenes):
    """The fallback (dense patch embeddings of an open_clip model, two-stage clustering, labelled by text) on the
    bundled shapes-clip: 0.22 on 60 export scenes with its stock tokens (the default for average-pooled
    towers), 0.08 with NACLIP."""
    from clipkit.evaluation.segmentation import confusion_miou
    from clipkit.methods.group import GroupPredictor
    from clipkit.registry import load_groupvit_model
    from clipkit.world import CATEGORIES

    grouper = GroupPredictor(load_groupvit_model("shapes-clip", device="cpu"), list(CATEGORIES))
    assert grouper.variant == "plain"
    maps = [grouper.group_image(s.image, f"scene{i}").label_map for i, s in enumerate(scenes)]
    miou = confusion_miou(maps, [s.label_map() for s in scenes], 49)["miou"]
    assert miou >= 0.12, miou


def test_images_batched_together_group_as_one_by_one(model, scenes, results):
    """predict() runs same-shape images through the encoder as one batch (issue 20, item 6): every image's
    label map and group maps must be what it gets alone, with a differently sized image in the batch."""
    from clipkit.methods import Sample
    from clipkit.methods.group import GroupPredictor
    from clipkit.world import CATEGORIES

    grouper = GroupPredictor(model, list(CATEGORIES))
    odd = scenes[3].image.convert("RGB").resize((300, 200))
    samples = [Sample(f"scene{i}", image=scenes[i].image) for i in range(3)] + [Sample("odd", image=odd)]
    batched = grouper.predict(samples)
    alone = [*results[:3], grouper.group_image(odd, "odd")]
    for got, want in zip(batched, alone, strict=True):
        assert got.path == want.path
        assert np.array_equal(got.label_map, want.label_map)
        for stage in ("stage1", "stage2"):
            assert np.array_equal(got.extras[stage], want.extras[stage])
        assert got.extras["groups"] == want.extras["groups"]


def test_label_embeddings_come_from_the_shared_text_cache(model, monkeypatch):
    """GroupViT's label embeddings are encoded once per weights, template set and label, kept in memory and on
    disk as CLIP models' are, and are the text tower's own numbers; other weights get their own."""
    from dataclasses import replace

    import torch

    from clipkit import prompts
    from clipkit.groupvit.text import label_embeddings
    from clipkit.methods import group

    labels = ["red circle", "a label no other test uses"]
    monkeypatch.setattr(prompts, "_MEMORY", {})
    first = group.GroupPredictor(model, labels)
    assert torch.equal(first.text, label_embeddings(model.net, labels, first.templates))
    assert len(list((prompts.cache_dir() / "text").glob("*.npy"))) >= 2

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(group, "label_embeddings", fail)
    prompts._MEMORY.clear()  # from the disk cache
    assert torch.equal(group.GroupPredictor(model, labels).text, first.text)
    with pytest.raises(AssertionError, match="should have answered"):
        group.GroupPredictor(replace(model, identity=model.identity + "-retrained"), labels)
