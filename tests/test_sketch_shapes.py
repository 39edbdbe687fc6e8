"""CLIPasso on the shapes world with the bundled shapes-clip: optimisation makes the sketch more like the target.

The optimised sketch's CLIP similarity to its target must exceed that of its own initial strokes and that of
random strokes (same number and length, start points uniform over the canvas). Small canvas and few iterations
keep it fast; the recognition rate over many scenes is measured by bench/sketch_recognition.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipkit.clipasso import SketchConfig
from clipkit.clipasso.init import random_walk_strokes
from clipkit.clipasso.loss import SketchLoss
from clipkit.clipasso.optimize import initial_strokes, optimise_seed, start_distribution, target_tensor
from clipkit.registry import bundled_models, load_model
from clipkit.render import get_renderer, to_image
from clipkit.world.scenes import SceneConfig, generate_scene

pytestmark = [pytest.mark.skipif("shapes-clip" not in bundled_models(), reason="shapes-clip not bundled yet"),
              pytest.mark.usefixtures("one_thread")]


def _similarity(loss_fn: SketchLoss, points: np.ndarray, opts: SketchConfig) -> float:
    alpha = get_renderer("torch").render(torch.from_numpy(points), opts.width, opts.canvas, opts.canvas)
    sketch = loss_fn.embedding(to_image(alpha))
    target = loss_fn.embedding(loss_fn.target)
    return float((sketch * target).sum())


@pytest.mark.parametrize("index", [0, 1, 2])
def test_optimised_sketch_beats_its_initialisation_and_random_strokes(index):
    loaded = load_model("shapes-clip", device="cpu")
    scene = generate_scene(7, index, SceneConfig(size=(224, 224), max_objects=1))
    opts = SketchConfig(iterations=21, seeds=1, canvas=96, renderer="torch")  # evaluations at steps 0, 10, 20
    target = target_tensor(scene.image, opts.canvas)
    init = initial_strokes(start_distribution(loaded, target, opts), opts, seed=0)
    run = optimise_seed(loaded, target, init, opts, seed=0)
    loss_fn = SketchLoss(loaded, target, generator=torch.Generator().manual_seed(0))

    rng = np.random.default_rng(index)
    random_sims = [
        _similarity(loss_fn, random_walk_strokes(rng.random((opts.strokes, 2)), (96, 96), rng), opts)
        for _ in range(3)
    ]
    optimised = _similarity(loss_fn, run["points"], opts)
    initial = _similarity(loss_fn, init, opts)
    assert optimised > initial, (scene.names, optimised, initial)
    assert optimised > max(random_sims), (scene.names, optimised, random_sims)
