"""The shapes-world trainer pieces: data pool, caption/flip consistency, loss, loop determinism, hub folder."""

import numpy as np
import pytest
import torch

from clipkit.training.clip import (
    TrainClipConfig,
    multi_positive_clip_loss,
    save_hub_folder,
    train_clip,
)
from clipkit.world import CATEGORIES
from clipkit.world.data import (
    PoolConfig,
    SceneCaptionDataset,
    ScenePool,
    batches,
    caption_text,
    collate,
    partial_names,
    satisfies,
)

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16,
                       "mlp_ratio": 2.0, "pool_type": "avg"},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1,
                     "mlp_ratio": 2.0}}


@pytest.fixture(scope="module")
def pool():
    return ScenePool(PoolConfig(n=60, seed=3, image_size=48, render_range=(48, 96)))


def _centroid_x(lm, cid):
    ys, xs = np.nonzero(lm == cid)
    return xs.mean(), ys.mean()


def test_captions_follow_flips(pool):
    """After a flip, a caption's relation still matches where the objects are in the label map."""
    ds = SceneCaptionDataset(pool, seed=1, p_relation=1.0)
    checked = 0
    for i in range(len(pool)):
        if pool.relations[i] is None:
            continue
        for draw in range(4):
            it = ds.item(i, draw)
            rel = pool.relations[i][1]
            names = pool.names[i]
            for r in ("left of", "right of", "above", "below"):
                if f" {r} " in it["caption"]:
                    rel = r
            first = min(names, key=lambda n: it["caption"].find(n) if n in it["caption"] else 1e9)
            second = names[1] if first == names[0] else names[0]
            lm = it["label_map"].numpy()
            (ax, ay), (bx, by) = (_centroid_x(lm, CATEGORIES.index(n) + 1) for n in (first, second))
            assert {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[rel], \
                (it["caption"], ax, ay, bx, by)
            checked += 1
    assert checked >= 8


def test_caption_styles():
    rng = np.random.default_rng(0)
    caps = {caption_text(["red circle", "orange star"], None, rng) for _ in range(40)}
    assert "red circle and orange star" in caps and "an orange star and a red circle" in caps


def test_batches_are_deterministic_and_keyed(pool):
    ds = SceneCaptionDataset(pool, seed=0)
    a = list(batches(ds, 8, 3, seed=5))
    b = list(batches(ds, 8, 3, seed=5))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["image"], y["image"]) and x["caption"] == y["caption"]
    assert a[0]["image"].shape == (8, 3, 48, 48) and a[0]["key"].dtype == torch.int64


def test_multi_positive_loss_counts_duplicates_as_positives():
    torch.manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    img = base[[0, 0, 1, 2]]  # items 0 and 1 show the same content
    txt = base[[0, 0, 1, 2]]
    scale = torch.tensor(20.0)
    same = multi_positive_clip_loss(img, txt, scale, torch.tensor([0, 0, 1, 2]))
    distinct = multi_positive_clip_loss(img, txt, scale, torch.tensor([0, 1, 2, 3]))
    assert same < distinct  # identical pairs are not penalised as negatives
    assert same < 0.75  # ~ln 2 from the two equal positives, nothing else


def test_partial_names_cut_to_shape_or_colour():
    rng = np.random.default_rng(0)
    cut = [partial_names(["red circle", "star"], rng, 1.0) for _ in range(40)]
    assert all(c[1] == "star" for c in cut)  # a black-ink name has no colour to drop
    firsts = {c[0] for c in cut}
    assert "circle" in firsts and {"red one", "red shape", "red object"} & firsts
    assert firsts <= {"circle", "red one", "red shape", "red object"}
    assert partial_names(["red circle", "blue star"], rng, 0.0) == ["red circle", "blue star"]


def test_a_partial_caption_fits_every_scene_it_describes():
    red_circle, blue_star = ("red", "circle"), ("blue", "star")
    assert satisfies([red_circle], [(None, "circle")])
    assert satisfies([red_circle, blue_star], [("blue", None), (None, "circle")])  # any order
    assert not satisfies([red_circle], [("blue", None)])
    assert not satisfies([(None, "circle")], [red_circle])  # a black-ink circle is not "a red circle"
    assert not satisfies([red_circle, blue_star], [(None, "circle")])  # every object is named once
    assert not satisfies([red_circle, red_circle], [(None, "circle"), ("red", "star")])


def test_partial_captions_give_one_sided_positives(pool):
    ds = SceneCaptionDataset(pool, seed=2, p_partial=0.6)
    batch = collate([ds.item(i) for i in range(len(pool))])
    pos = batch["positives"]
    assert pos.diagonal().all()
    assert not torch.equal(pos, pos.T)  # "a circle" fits a red circle's scene, not the other way round
    full = collate([SceneCaptionDataset(pool, seed=2).item(i) for i in range(len(pool))])
    assert torch.equal(full["positives"], full["key"][:, None] == full["key"][None, :])
    img, txt = torch.randn(len(pool), 8), torch.randn(len(pool), 8)
    assert torch.allclose(multi_positive_clip_loss(img, txt, torch.tensor(5.0), full["key"]),
                          multi_positive_clip_loss(img, txt, torch.tensor(5.0), None, full["positives"]))


def test_train_is_deterministic_and_writes_loadable_folder(tmp_path):
    from clipkit.world.model import load_shapes_clip

    cfg = TrainClipConfig(name="clipkit-test-tiny", model_cfg=TINY, steps=3, batch_size=8, pool_size=24,
                          render_range=(32, 48), warmup=1, threads=1)
    m1, _, res, _ = train_clip(cfg, quiet=True)
    m2, _, _, _ = train_clip(cfg, quiet=True)
    assert res.steps == 3 and all(np.isfinite(res.losses))
    for (k, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(p1, p2), k
    folder = save_hub_folder(m1, TINY, tmp_path / "m", meta={"kind": "clip", "default_templates": "none"},
                             card="# tiny\n")
    model, preprocess, tokenizer = load_shapes_clip(folder)
    from PIL import Image

    x = preprocess(Image.new("RGB", (50, 40), (200, 30, 30)))[None]
    with torch.no_grad():
        ref = m1.half().float().eval().encode_image(x)
        assert torch.allclose(model.encode_image(x), ref, atol=1e-4)
        assert tokenizer(["red circle"]).shape == (1, 16)
