"""The method table: a method is a config and a predictor; everything around them is shared.

A predictor is built once from (model, text, config) and called per batch::

    class ClassifyPredictor:
        transform = model.preprocess     # runs in the decoding workers (None: the predictor wants PIL images)
        keep_image = False               # whether predict() needs the decoded RGB image
        def predict(self, samples: list[Sample]) -> list[Result]: ...   # one result per sample, in order

It handles no paths, loops over no inputs and writes no files: :mod:`clipkit.runner` feeds it decoded batches,
:mod:`clipkit.artefacts` draws its results, :mod:`clipkit.sink` prints them. This module imports no torch, so the
CLI can build every command's options (and check them) before a model loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from clipkit.config import MethodConfig


@dataclass
class Sample:
    """One decoded input: ``key`` names it in results and errors (a path, or ``<image i>`` for in-memory items);
    ``image`` is the RGB ``PIL.Image`` at its original size (when the predictor or the artefacts need it);
    ``pixels`` is ``transform(image)`` (e.g. ``[3, H, W]`` float32) when the predictor has a transform."""

    key: str
    image: Any = None
    pixels: Any = None
    size: tuple[int, int] = (0, 0)  # (W, H) of the original image; larger than image.size after --max-side


class Predictor(Protocol):
    """What the runner needs of a method (see the module docstring)."""

    transform: Any
    keep_image: bool

    def predict(self, samples: list[Sample]) -> Sequence[Any]: ...


@dataclass(frozen=True)
class MethodSpec:
    """One command: its config, where its predictor lives, what text it takes, and how it is shown.

    ``predictor``: ``"module:Class"``, imported only when a run starts (so specs stay torch-free); the class is
    called as ``Class(model, text, config)``. ``text``: ``"labels"`` (a list of label strings), ``"caption"``
    (``(caption, phrases)``) or ``"none"``. ``model_kind``: what the registry loads (``"clip"``; ``"group"``:
    a GroupViT, or a CLIP for the fallback; ``"none"``: no model, the predictor gets None). ``default_model``: the
    bundled model loaded when the user names none (None: the registry's own default). ``out_dir``:
    ``"optional"``, ``"required"`` or ``"none"``.
    """

    name: str
    config: type[MethodConfig]
    predictor: str
    summary: str
    text: Literal["labels", "caption", "none"] = "labels"
    model_kind: Literal["clip", "group", "none"] = "clip"
    default_model: str | None = None
    out_dir: Literal["optional", "required", "none"] = "optional"
    batch_size: int = 1
    max_side: int | None = 1344  # working resolution: longer inputs are downscaled, results mapped back
    description: str = ""
    examples: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the method table (the six built-in methods register below; tests add their own)."""
    METHODS[spec.name] = spec
    return spec


def predictor_class(spec: MethodSpec) -> Any:
    """Import and return the predictor class named by ``spec.predictor``."""
    from importlib import import_module

    module, _, name = spec.predictor.partition(":")
    return getattr(import_module(module), name)


def _builtin() -> None:
    from clipkit import configs as c

    register(MethodSpec(
        "classify", c.ClassifyConfig, "clipkit.methods.classify:ClassifyPredictor",
        "Zero-shot classify images against free-text labels (CLIP: prompt ensembles, softmax over labels).",
        out_dir="none", batch_size=32, max_side=4096,
        examples=("clipkit classify examples/scenes/images --labels 'red circle,blue square,green triangle'",
                  "clipkit classify examples/photos/chelsea.jpg -m ViT-B-32 -p openai --labels cat,dog --top-k 1",
                  "find imgs -name '*.jpg' | clipkit classify - --labels-file labels.txt -o scores.jsonl --resume")))
    register(MethodSpec(
        "segment", c.SegmentConfig, "clipkit.methods.segment:SegmentPredictor",
        "Segment images into free-text labels: a palette label PNG (0 = background, k = k-th label) per image.",
        batch_size=8,
        examples=("clipkit segment examples/scenes/images -l 'red circle,blue square' --out-dir out/",
                  "clipkit segment examples/scenes/images/scene_000000.png -l 'red circle,blue square' "
                  "--head lseg-shapes -d out/ --scores",
                  "clipkit segment examples/photos/coffee.jpg -m ViT-B-16 -p openai -l cup,saucer,spoon "
                  "--variant sclip --background table,wall")))
    register(MethodSpec(
        "group", c.GroupConfig, "clipkit.methods.group:GroupPredictor",
        "Group pixels into segments with GroupViT and name them with free-text labels.",
        model_kind="group", batch_size=4,
        description="Writes DIR/<stem>.mask.png (palette labels), <stem>.overlay.png and the group maps "
                    "<stem>.stage1.png / <stem>.stage2.png. Default model: the bundled shapes-groupvit; --model "
                    "also takes a Hugging Face GroupViT folder, an NVlabs .pth, or any open_clip model "
                    "(training-free grouping of its dense patch embeddings).",
        examples=("clipkit group examples/scenes/images --labels-file examples/labels.txt --out-dir out/",
                  "clipkit group examples/photos/chelsea.jpg -m ./groupvit-gcc-yfcc -l cat,grass,sky -d out/",
                  "clipkit group examples/photos/chelsea.jpg -m ViT-B-16 -p openai -l cat,dog --groups 64,8 -d out/")))
    register(MethodSpec(
        "detect", c.DetectConfig, "clipkit.methods.detect:DetectPredictor",
        "Find and box free-text labels in images (ViLD on any CLIP: proposals, region embeddings, background).",
        batch_size=4,
        examples=("clipkit detect examples/scenes/images --labels-file examples/labels.txt",
                  "clipkit detect examples/scenes/images/scene_000001.png -l 'red circle,blue star' --path fast "
                  "--out-dir boxes/",
                  "clipkit detect data/images/ --labels-file names.txt --coco dets.json "
                  "--coco-categories data/instances.json")))
    register(MethodSpec(
        "ground", c.GroundConfig, "clipkit.methods.ground:GroundPredictor",
        "Ground the phrases of a caption in images: one box per phrase (or all above --threshold with --all).",
        text="caption", batch_size=4,
        examples=("clipkit ground examples/scenes/images/scene_000003.png --caption 'a yellow cross left of a "
                  "green star'",
                  "clipkit ground examples/scenes/images --phrases 'red circle;blue square' --out-dir grounded/",
                  "clipkit ground examples/scenes/images/scene_000003.png --caption 'yellow cross . green star .' "
                  "--all --threshold 0.6")))
    register(MethodSpec(
        "sketch", c.SketchConfig, "clipkit.methods.sketch:SketchPredictor",
        "Draw each image as a few black strokes, optimised so CLIP sees the same object (CLIPasso).",
        text="none", out_dir="required", default_model="shapes-sketch",
        description="Writes DIR/<stem>.sketch.svg and DIR/<stem>.sketch.png per image; one JSON line per image "
                    "with the loss and time.",
        examples=("clipkit sketch examples/scenes/images/scene_000000.png --out-dir sketches/ --iterations 300 "
                  "--seeds 1",
                  "clipkit sketch examples/photos/rocket.jpg -d out/ --strokes 8 --iterations 300 --seeds 1 --frames",
                  "clipkit sketch examples/photos/rocket.jpg -d out/ -m RN50 -p openai --renderer diffvg")))


_builtin()
