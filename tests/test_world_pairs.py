"""Photo–drawing pairs for training (issue #18): the pool's paired line drawings and scribbles, the tower pass
that keeps CLIPasso's blocks, and the paired loss (clipkit.training.pairs)."""

import numpy as np
import torch

from clipkit.training.clip import TrainClipConfig, clip_loss_fn, start_run, train_clip
from clipkit.training.pairs import PAIR_BLOCKS, activation_distance, paired_drawing_loss, tower_with_blocks
from clipkit.world.data import PoolConfig, SceneCaptionDataset, ScenePool, collate
from clipkit.world.scenes import SceneConfig, generate_scene
from tests.test_world_drawings import TINY

INK = 120  # darker than every paper (236+) and lighter than no ink: "ink" below


def test_pairs_are_the_same_scenes_drawn_and_scribbled_without_changing_the_photos():
    plain = ScenePool(PoolConfig(n=12, seed=5, image_size=64, render_range=(64, 64)))
    paired = ScenePool(PoolConfig(n=12, seed=5, image_size=64, render_range=(64, 64), pairs=True))
    assert np.array_equal(plain.images, paired.images) and plain.names == paired.names
    for i in range(12):
        drawing = generate_scene(5, i, SceneConfig(size=(64, 64), max_objects=8),
                                 n_objects=len(plain.names[i]), drawing=True).image
        assert np.array_equal(paired.pair_images[i], np.asarray(drawing))
        near = np.zeros((64, 64), bool)  # the objects' boxes with the scribbles' 20 % margin
        for o in generate_scene(5, i, SceneConfig(size=(64, 64), max_objects=8), n_objects=len(plain.names[i])).objects:
            x0, y0, x1, y1 = o.box
            mx, my = 0.2 * (x1 - x0) + 1, 0.2 * (y1 - y0) + 1
            near[max(0, int(y0 - my)):int(y1 + my) + 1, max(0, int(x0 - mx)):int(x1 + mx) + 1] = True
        ink = paired.scribble_images[i].min(-1) < INK
        # scribbles cover the objects (most of their ink lies over them) and are not the outline drawing
        assert ink[near].sum() > 0.6 * ink.sum() > 0
        assert not np.array_equal(paired.scribble_images[i], paired.pair_images[i])


def test_the_dataset_flips_a_pair_with_its_photo():
    pool = ScenePool(PoolConfig(n=6, seed=1, image_size=48, render_range=(48, 48), pairs=True))
    ds = SceneCaptionDataset(pool, seed=3)
    unflipped = SceneCaptionDataset(pool, seed=3, flips=False)
    flipped = 0
    for i in range(6):
        item, raw = ds.item(i), unflipped.item(i)
        for dims in ((), (-1,), (-2,), (-1, -2)):
            if torch.equal(item["image"], raw["image"].flip(dims) if dims else raw["image"]):
                flipped += bool(dims)
                for k in ("pair", "scribble", "label_map"):
                    assert torch.equal(item[k], raw[k].flip(dims) if dims else raw[k])
                break
        else:
            raise AssertionError("the photo is not a flip of the unflipped item")
    assert flipped  # the seed flips some of them
    batch = collate([ds.item(i) for i in range(4)])
    assert batch["pair"].shape == batch["scribble"].shape == batch["image"].shape


def test_tower_with_blocks_is_encode_image_and_keeps_the_block_outputs():
    cfg = TrainClipConfig(name="clipkit-test-tiny-pairs", model_cfg={**TINY, "vision_cfg": {**TINY["vision_cfg"],
                                                                                           "layers": 3}})
    model, _ = start_run(cfg)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    pooled, tokens, blocks = tower_with_blocks(model, x, (1, 2))
    torch.testing.assert_close(pooled, model.encode_image(x), rtol=1e-5, atol=1e-5)
    assert tokens.shape == (2, 16, 16) and [b.shape for b in blocks] == [(2, 17, 32)] * 2
    want = model.visual.forward_intermediates(x, indices=[1, 2], output_fmt="NLC", output_extra_tokens=True)
    for got, pre, tok in zip(blocks, want["image_intermediates_prefix"], want["image_intermediates"], strict=True):
        torch.testing.assert_close(got, torch.cat([pre, tok], 1), rtol=1e-5, atol=1e-5)


def test_paired_loss_pulls_the_drawing_and_pushes_scribbles_away():
    photo = [torch.randn(3, 5, 4), 10 * torch.randn(3, 5, 4)]
    near = [p + 0.1 * p.std() * torch.randn_like(p) for p in photo]
    far = [p + 2.0 * p.std() * torch.randn_like(p) for p in photo]
    d_near, d_far = activation_distance(photo, near), activation_distance(photo, far)
    assert d_near.shape == (3,) and (d_near < d_far).all()
    # each block is measured relative to its photo's scale: a block 10x larger with noise 10x larger weighs alike
    ratio = activation_distance(photo[1:], far[1:]).mean() / activation_distance(photo[:1], far[:1]).mean()
    assert 0.5 < float(ratio) < 2.0
    assert float(paired_drawing_loss(photo, near, far)) == float(d_near.mean())  # far enough: no hinge
    swapped = paired_drawing_loss(photo, far, near)  # the scribble is the closer one: the hinge is on
    assert float(swapped) > float(d_far.mean()) + 1.0
    # the photo side is held fixed
    ph = [p.clone().requires_grad_() for p in photo]
    dr = [n.clone().requires_grad_() for n in near]
    paired_drawing_loss(ph, dr, far).backward()
    assert all(p.grad is None for p in ph) and all(d.grad is not None for d in dr)


def test_train_clip_with_pairs_smoke():
    cfg = TrainClipConfig(name="clipkit-test-tiny-pairs2", model_cfg={**TINY, "vision_cfg": {**TINY["vision_cfg"],
                                                                                            "layers": 4}},
                          steps=2, batch_size=8, pool_size=16, render_range=(32, 48), warmup=1, threads=1,
                          pair_weight=1.0)
    assert cfg.pairs
    _, _, res, _ = train_clip(cfg, quiet=True)
    assert res.steps == 2 and all(np.isfinite(res.losses))


def test_the_pair_term_is_added_with_or_without_the_patch_losses():
    cfg = TrainClipConfig(name="clipkit-test-tiny-pairs3", model_cfg={**TINY, "vision_cfg": {**TINY["vision_cfg"],
                                                                                            "layers": 4}})
    model, tok = start_run(cfg)
    pool = ScenePool(PoolConfig(n=4, seed=2, image_size=32, render_range=(32, 48), pairs=True))
    batch = collate([SceneCaptionDataset(pool, seed=0).item(i) for i in range(4)])
    _, _, photo = tower_with_blocks(model, batch["image"], PAIR_BLOCKS)
    both = tower_with_blocks(model, torch.cat([batch["pair"], batch["scribble"]]), PAIR_BLOCKS)[2]
    expected = float(paired_drawing_loss(photo, [b[:4] for b in both], [b[4:] for b in both]))
    plain = float(clip_loss_fn(tok, pair_weight=0.0)(model, batch))
    with_pairs = float(clip_loss_fn(tok, pair_weight=2.0)(model, batch))
    assert expected > 0 and abs(with_pairs - plain - 2.0 * expected) < 1e-4 * max(1.0, expected)
