"""CLIPasso's target options: mask_object (background removal), fix_scale (pad, not stretch), saliency_model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from clipkit.clipasso import SketchConfig, sketch_image
from clipkit.clipasso.optimize import prepare_target, start_distribution, target_tensor
from clipkit.clipasso.prepare import apply_mask, fix_image_scale, grabcut_mask
from clipkit.registry import bundled_models, load_model
from clipkit.world.scenes import SceneConfig, generate_scene

needs_shapes_clip = pytest.mark.skipif("shapes-clip" not in bundled_models(), reason="shapes-clip not bundled")

pytestmark = pytest.mark.usefixtures("one_thread")


def _wide_disc() -> Image.Image:
    img = Image.new("RGB", (120, 60), "white")
    ImageDraw.Draw(img).ellipse((45, 15, 75, 45), fill=(30, 60, 200))  # a 30-px disc in a 2:1 image
    return img


def _ink_box(img: Image.Image) -> tuple[int, int]:
    dark = np.asarray(img.convert("L")) < 128
    ys, xs = np.nonzero(dark)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_fix_scale_pads_to_a_white_square_like_the_official_code():
    out = fix_image_scale(_wide_disc())
    assert out.size == (140, 140)  # max(120, 60) + 20
    arr = np.asarray(out)
    assert (arr[:40] == 255).all() and (arr[100:] == 255).all()  # (140 - 60) / 2 = 40 rows of white each side
    assert np.array_equal(arr[40:100, 10:130], np.asarray(_wide_disc()))


def test_fix_scale_keeps_the_aspect_ratio_the_default_stretches_it(tiny_model):
    disc = _wide_disc()
    stretched, _ = prepare_target(disc, SketchConfig(canvas=64, attention_init=False))
    padded, _ = prepare_target(disc, SketchConfig(canvas=64, fix_scale=True, attention_init=False))
    w, h = _ink_box(Image.fromarray((target_tensor(stretched, 64)[0].permute(1, 2, 0).numpy() * 255)
                                    .astype(np.uint8)))
    assert h > 1.7 * w  # squeezed sideways: the disc became a tall ellipse
    w, h = _ink_box(Image.fromarray((target_tensor(padded, 64)[0].permute(1, 2, 0).numpy() * 255)
                                    .astype(np.uint8)))
    assert abs(w - h) <= 1  # still a disc
    out = sketch_image(disc, tiny_model, SketchConfig(strokes=3, iterations=2, seeds=1, canvas=48,
                                                       fix_scale=True, renderer="torch"))
    assert out.size == (48, 48) and out.mask is None


def test_apply_mask_whitens_the_background_only():
    img = Image.fromarray(np.full((20, 30, 3), (100, 50, 200), np.uint8))
    mask = np.zeros((20, 30), bool)
    mask[5:15, 10:20] = True
    arr = np.asarray(apply_mask(img, mask))
    assert (arr[~mask] == 255).all()
    # inside: image / image.max() (the official code stretches the brightness so the image peaks at 255)
    assert np.abs(arr[mask].astype(int) - np.array([100, 50, 200]) * 255 // 200).max() <= 1
    assert np.array_equal(np.asarray(apply_mask(img, np.zeros_like(mask))), np.asarray(img))


@needs_shapes_clip
def test_mask_object_recovers_world_objects_and_keeps_strokes_off_the_background():
    loaded = load_model("shapes-clip", device="cpu")
    cfg = SceneConfig(size=(224, 224), max_objects=1, backgrounds=("noise",))
    ious, mass_plain, mass_masked = [], [], []
    for i in range(4):
        scene = generate_scene(3, i, cfg)
        truth = scene.objects[0].mask
        mask = grabcut_mask(scene.image)
        ious.append((mask & truth).sum() / (mask | truth).sum())
        near = np.asarray(Image.fromarray(truth).resize((96, 96), Image.Resampling.NEAREST))
        near = np.asarray(Image.fromarray(near.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(5))) > 0
        for on, store in ((False, mass_plain), (True, mass_masked)):
            opts = SketchConfig(canvas=96, mask_object=on)
            prepared, _ = prepare_target(scene.image, opts)
            prob = start_distribution(loaded, target_tensor(prepared, 96), opts, loaded)
            store.append(float(prob[near].sum()))
    assert min(ious) > 0.9, ious
    # on a noisy background XDoG finds "edges" everywhere; once the background is removed, the start points
    # concentrate on the object
    assert min(mass_masked) > 0.95, mass_masked
    assert np.mean(mass_masked) > np.mean(mass_plain), (mass_masked, mass_plain)


@needs_shapes_clip
def test_sketch_image_with_mask_object_returns_the_mask():
    scene = generate_scene(3, 0, SceneConfig(size=(160, 160), max_objects=1))
    out = sketch_image(scene.image, load_model("shapes-clip", device="cpu"),
                       SketchConfig(strokes=4, iterations=2, seeds=1, canvas=64, mask_object=True,
                                     renderer="torch"))
    truth = scene.objects[0].mask
    assert out.mask is not None and out.mask.shape == truth.shape
    assert (out.mask & truth).sum() / (out.mask | truth).sum() > 0.9
