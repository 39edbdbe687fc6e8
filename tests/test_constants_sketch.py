"""CLIPasso's loss constants pinned by behaviour, on a 5-block tiny ViT (so every official layer index exists):
the loss is ``L2(block 2) + L2(block 3) + 0.1 · (1 − cos)`` of the final embeddings (official
``clip_conv_layer_weights 0,0,1,1,0``, ``clip_fc_loss_weight 0.1``), computed here with forward hooks; a training
step encodes the clean view plus 4 augmented views (``num_aug_clip 4``); the augmentations' perspective corners
move by at most ``int(0.5 · side / 2)`` px and reach that bound (``distortion_scale 0.5``), and the crop is the
square of area 0.8 (``RandomResizedCrop(scale=(0.8, 0.8), ratio=(1, 1))``).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from clipkit.clipasso.loss import SketchLoss

CANVAS = 32


@pytest.fixture(scope="module")
def loaded():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": CANVAS, "layers": 5, "width": 32, "head_width": 16, "patch_size": 8},
        text_cfg={"context_length": 8, "vocab_size": 100, "width": 16, "heads": 1, "layers": 1},
    ).eval()
    return SimpleNamespace(model=model, image_size=(CANVAS, CANVAS), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                           name="tiny-5-block")


def _images():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(1, 3, CANVAS, CANVAS, generator=g)
    sketch = torch.rand(1, 3, CANVAS, CANVAS, generator=g) ** 3  # darker, unrelated
    return sketch, target


def _by_hand(visual, x):
    """Block outputs 0..4 and the final embedding of normalised ``x``, via forward hooks."""
    outs = {}
    hooks = [blk.register_forward_hook(lambda m, i, o, k=k: outs.__setitem__(k, o))
             for k, blk in enumerate(visual.transformer.resblocks)]
    try:
        emb = visual(x)
    finally:
        for h in hooks:
            h.remove()
    return outs, emb


def test_eval_loss_is_blocks_2_and_3_plus_a_tenth_of_the_cosine_distance(loaded):
    sketch, target = _images()
    fn = SketchLoss(loaded, target, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hs, es = _by_hand(loaded.model.visual, (sketch - 0.5) / 0.5)
        ht, et = _by_hand(loaded.model.visual, (target - 0.5) / 0.5)
    terms = [torch.square(hs[2] - ht[2]).mean(), torch.square(hs[3] - ht[3]).mean(),
             0.1 * (1 - F.cosine_similarity(es, et, dim=1)).mean()]
    assert fn.evaluate(sketch) == pytest.approx(float(sum(terms)), rel=1e-5)
    # every term is over 100x the tolerance, so a changed weight shows; other blocks would give other numbers
    assert min(float(t) for t in terms) > 1e-3 * float(sum(terms))
    for other in (0, 1, 4):
        assert abs(float(torch.square(hs[other] - ht[other]).mean() - terms[0])) > 1e-3 * float(terms[0])


def test_training_step_encodes_the_clean_view_and_four_augmentations(loaded):
    sketch, target = _images()
    fn = SketchLoss(loaded, target, generator=torch.Generator().manual_seed(0))
    sizes = []
    hook = loaded.model.visual.conv1.register_forward_pre_hook(lambda m, i: sizes.append(i[0].shape[0]))
    try:
        fn(sketch.requires_grad_(True))
    finally:
        hook.remove()
    assert sorted(sizes) == [4, 5]  # the target's 4 augmented views; the sketch's clean + 4 augmented views


def test_augmentation_geometry(loaded):
    _, target = _images()
    fn = SketchLoss(loaded, target, generator=torch.Generator().manual_seed(0))
    seen = []
    original = fn._augment

    def spy(x, start, end, crop):
        seen.append((end, crop))
        return original(x, start, end, crop)

    fn._augment = spy
    with torch.no_grad():
        for _ in range(5):
            fn(target)
    assert len(seen) == 5 * 4 * 2  # 4 augmentations, each applied to the sketch and the target alike
    side = round(math.sqrt(0.8 * CANVAS * CANVAS))
    assert all(crop[2:] == (side, side) for _, crop in seen)
    bound = int(0.5 * CANVAS // 2)
    moves = []
    for end, _ in seen:
        corners = [[0, 0], [CANVAS - 1, 0], [CANVAS - 1, CANVAS - 1], [0, CANVAS - 1]]
        moves += [abs(e - c) for pe, pc in zip(end, corners, strict=True) for e, c in zip(pe, pc, strict=True)]
    assert max(moves) == bound


@pytest.mark.parametrize(("w", "h", "seed"), [(224, 224, 0), (64, 40, 3)])
def test_perspective_corners_are_torchvision_draws(w, h, seed):
    """The official augmentation is torchvision's ``RandomPerspective(distortion_scale=0.5)``: the same seed gives
    the same corners (clipkit draws from its own generator, torchvision from the global one)."""
    import torchvision.transforms as T

    from clipkit.clipasso.loss import perspective_params

    torch.manual_seed(seed)
    expected = T.RandomPerspective.get_params(w, h, 0.5)
    assert perspective_params(w, h, 0.5, torch.Generator().manual_seed(seed)) == expected


def test_augmentation_is_torchvision_perspective_then_resized_crop(loaded):
    """Each augmented view = ``RandomPerspective(fill=0)`` (bilinear) then ``RandomResizedCrop`` to the input
    (bilinear, antialias), then CLIP normalisation — recomputed here from the drawn parameters."""
    import torchvision.transforms.functional as TF

    _, target = _images()
    canvas = torch.nn.functional.interpolate(target, size=(48, 48), mode="bilinear")  # canvas 48 -> input 32
    fn = SketchLoss(loaded, canvas, generator=torch.Generator().manual_seed(0))
    seen = []
    original = fn._augment
    fn._augment = lambda x, s, e, c: seen.append((x, s, e, c, original(x, s, e, c))) or seen[-1][-1]
    with torch.no_grad():
        fn(canvas)
    x, start, end, crop, got = seen[0]
    ref = TF.resized_crop(TF.perspective(x, start, end, fill=[0.0, 0.0, 0.0]), *crop, [CANVAS, CANVAS],
                          antialias=True)
    torch.testing.assert_close(got, (ref - 0.5) / 0.5)
    top, left, sh, sw = crop
    assert (sh, sw) == (43, 43) and 0 <= top <= 48 - 43 and 0 <= left <= 48 - 43  # round(sqrt(0.8) * 48)


def test_clean_view_of_a_larger_canvas_is_a_bicubic_antialiased_resize(loaded):
    sketch, target = _images()
    big_s = torch.nn.functional.interpolate(sketch, size=(64, 64), mode="nearest")
    big_t = torch.nn.functional.interpolate(target, size=(64, 64), mode="nearest")
    fn = SketchLoss(loaded, big_t, generator=torch.Generator().manual_seed(0))
    small = [torch.nn.functional.interpolate(i, size=(CANVAS, CANVAS), mode="bicubic", align_corners=False,
                                             antialias=True) for i in (big_s, big_t)]
    direct = SketchLoss(loaded, small[1], generator=torch.Generator().manual_seed(0))
    assert fn.evaluate(big_s) == pytest.approx(direct.evaluate(small[0]), rel=1e-5)
    emb = fn.embedding(big_s)
    with torch.no_grad():
        ref = F.normalize(loaded.model.visual((small[0] - 0.5) / 0.5), dim=-1)
    torch.testing.assert_close(emb, ref, rtol=0, atol=1e-5)


def test_shallow_vit_uses_its_deepest_blocks_and_other_towers_are_refused(tiny_model):
    from clipkit.errors import UsageError

    target = torch.rand(1, 3, 32, 32)
    fn = SketchLoss(tiny_model, target, generator=torch.Generator().manual_seed(0))
    assert fn.layers == {1: 2.0}  # 2 blocks: official indices 2 and 3 both land on block 1
    assert SketchLoss(tiny_model, target, generator=torch.Generator(), conv_weights=(1, 0, 0, 0, 0)).layers == {0: 1.0}
    weird = SimpleNamespace(model=SimpleNamespace(visual=SimpleNamespace(), parameters=lambda: []), name="weird",
                            image_size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(UsageError, match="weird"):
        SketchLoss(weird, target, generator=torch.Generator())


def test_crop_positions_are_uniform_draws_from_the_generator():
    """``RandomResizedCrop.get_params`` with scale (0.8, 0.8), ratio 1: top and left uniform over every valid
    offset (0 … H − side inclusive), drawn from the loss's generator — top first, then left."""
    from clipkit.clipasso.loss import crop_params

    g = torch.Generator().manual_seed(7)
    expected = [int(torch.randint(0, 2, (1,), generator=g)), int(torch.randint(0, 12, (1,), generator=g))]
    assert list(crop_params(58, 48, 0.8, torch.Generator().manual_seed(7))[:2]) == expected  # side 47
    gen = torch.Generator().manual_seed(0)
    tops, lefts = set(), set()
    for _ in range(300):
        top, left, sh, sw = crop_params(58, 48, 0.8, gen)
        assert (sh, sw) == (47, 47)
        tops.add(top)
        lefts.add(left)
    assert tops == set(range(0, 2)) and lefts == set(range(0, 12))


def test_training_loss_is_reproducible_from_the_seed(loaded):
    sketch, target = _images()
    runs = [float(SketchLoss(loaded, target, generator=torch.Generator().manual_seed(s))(sketch)[0])
            for s in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
