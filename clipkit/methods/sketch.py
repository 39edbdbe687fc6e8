"""``clipkit sketch``: CLIPasso object sketches (Vinker et al., SIGGRAPH 2022), one per image.

For each image the strokes are optimised against the loaded CLIP (:mod:`clipkit.clipasso`) from several seeds
and the lowest-loss sketch is kept. The result is a :class:`clipkit.results.Sketch`; the runner's artefact writer
turns it into ``<stem>.sketch.svg`` / ``.png`` (/ ``.gif`` with ``frames``). Official code:
https://github.com/yael-vinker/CLIPasso.
"""

from __future__ import annotations

from typing import Any

from clipkit.clipasso import sketch_image
from clipkit.configs import SketchConfig
from clipkit.methods import Sample
from clipkit.registry import LoadedModel
from clipkit.results import Sketch

__all__ = ["SketchConfig", "SketchPredictor"]


class SketchPredictor:
    """:class:`SketchConfig` → ``predict(samples)``: a :class:`Sketch` per RGB image. ``text`` is unused (the
    method takes none)."""

    keep_image = True
    transform = None

    def __init__(self, model: LoadedModel, text: Any = None, config: SketchConfig | None = None,
                 **options: Any) -> None:
        from clipkit.clipasso.prepare import saliency_model_for
        from clipkit.render import get_renderer

        self.config = cfg = SketchConfig.of(config, **options)
        self.model = model
        get_renderer(cfg.renderer, model.device)  # an unavailable renderer fails before the first image
        # the ViT whose attention places the first strokes, resolved once per run (the registry loads it)
        self.saliency = saliency_model_for(model, cfg.saliency_model, cfg.saliency_pretrained) \
            if cfg.attention_init else None

    def predict(self, samples: list[Sample]) -> list[Sketch]:
        return [Sketch(s.key, sketch_image(s.image, self.model, self.config, saliency_model=self.saliency))
                for s in samples]
