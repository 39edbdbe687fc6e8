"""Every method's defaults, in one validated config per method (importable without torch).

The CLI derives each command's options from these fields (``--top-k`` is ``top_k``), so the help, the library
and the command line can never disagree. A value that cannot apply (``--threshold`` without ``--multi-label``,
``--variant`` with an LSeg head) is a usage error here, before any model loads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from clipkit.config import MethodConfig, option, split_list

DENSE = "Dense maps and proposals"
VARIANTS = ("naclip", "clearclip", "sclip", "maskclip", "plain")
Variant = Literal["naclip", "clearclip", "sclip", "maskclip", "plain"]

TEMPLATES_HELP = ("Prompt templates: openai (80), simple (7), none ({}), a file (one per line), or an inline "
                  "template such as 'a photo of a {}.' Default: the model's own.")
MIN_COSINE_HELP = ("Background cut on a pixel's best label cosine in the dense maps (default: the model's "
                   "calibrated value, if any; -1 turns it off).")
SHIFTS_HELP = ("Sub-patch shifted passes per axis for the dense grid: a grid this many times finer, at shifts² "
               "forward passes.")


class _Lists(MethodConfig):
    """Shared parsing of comma-separated list fields."""

    @field_validator("background", mode="before", check_fields=False)
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_list(value)


class ClassifyConfig(MethodConfig):
    """CLIP zero-shot classification (:mod:`clipkit.methods.classify`)."""

    templates: str | tuple[str, ...] | None = option(None, TEMPLATES_HELP, short="-t")
    top_k: int | None = option(None, "Keep the k best labels (default: all).", short="-k", ge=1)
    multi_label: bool = option(False, "Keep every label scoring at least --threshold (SigLIP: independent "
                                      "sigmoids).")
    threshold: float | None = option(None, "Score threshold for --multi-label (default 0.5 SigLIP, 0.2 softmax "
                                           "models).", ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _threshold_needs_multi_label(self) -> ClassifyConfig:
        if self.threshold is not None and not self.multi_label:
            raise ValueError("--threshold applies only with --multi-label")
        return self


class SegmentConfig(_Lists):
    """Open-vocabulary segmentation, LSeg-style (:mod:`clipkit.methods.segment`)."""

    templates: str | tuple[str, ...] | None = option(None, TEMPLATES_HELP, short="-t")
    variant: Variant | None = option(None, "Training-free dense CLIP: naclip, clearclip, sclip, maskclip or plain "
                                           "(default: plain for average-pooled towers such as shapes-clip, else "
                                           "naclip).", short="-v")
    head: str | None = option(None, "A trained LSeg head: bundled name (lseg-shapes) or folder/.safetensors "
                                    "path (default: none, training-free).")
    background: tuple[str, ...] | None = option(None, "Comma-separated background prompts that map to 0 (default: "
                                                      "'background', or the head's own; 'none' for none).")
    threshold: float | None = option(None, "Pixels whose best class probability is below this become background.",
                                     ge=0.0, le=1.0)
    min_cosine: float | None = option(None, MIN_COSINE_HELP, panel=DENSE, ge=-1.0, le=1.0)
    shifts: int = option(1, SHIFTS_HELP, panel=DENSE, ge=1)
    stride: int | None = option(None, "Sliding-window stride in pixels (default: half the model's input size).",
                                ge=1)
    short_side: int | None = option(None, "Resize the short side to this before sliding (default: the model's "
                                          "input size).", ge=8)
    scale: float | None = option(None, "Logit scale of training-free variants (default: the variant's official "
                                       "one).", cli=False)
    scores: bool = option(False, "Also write per-class probabilities as DIR/<stem>.scores.npz (float16).")
    rle: bool = option(False, "Add COCO RLE masks per class to each JSON result.")
    coco_dataset: str | None = option(None, "Also write the predictions as a COCO dataset JSON (images, categories, "
                                            "annotations with boxes and RLE masks) to this file, for pycocotools and "
                                            "FiftyOne.")
    overlay: bool = option(True, "Write DIR/<stem>.overlay.png with a legend.")

    @model_validator(mode="after")
    def _head_excludes_training_free(self) -> SegmentConfig:
        if self.head is not None:
            clash = [n for n in ("variant", "min_cosine", "scale") if getattr(self, n) is not None]
            clash += ["shifts"] if self.shifts != 1 else []
            if clash:
                names = ", ".join("--" + n.replace("_", "-") for n in clash)
                raise ValueError(f"{names} applies only to training-free segmentation, not with --head")
        return self


class GroupConfig(MethodConfig):
    """GroupViT zero-shot segmentation (:mod:`clipkit.methods.group`); fallback options for open_clip models."""

    templates: str | tuple[str, ...] | None = option(None, TEMPLATES_HELP, short="-t")
    bg_thresh: str = option("default", "Background where a pixel's best label score is below this (0..1), or "
                                       "'none'. 'default': the model's calibrated value, else the official 0.95.")
    top_k: int | None = option(None, "Only the image's k best labels may name a group (default: the model's "
                                     "calibrated value, else the official 5).", short="-k", ge=1)
    short_side: int | None = option(None, "Resize the short side to this before the model (default: its "
                                          "training size).", ge=8)
    window: int | None = option(None, "GroupViT only: the official sliding-window mode, square windows of this "
                                      "many pixels, scores averaged (default: off).", ge=1)
    stride: int | None = option(None, "Sliding-window step in pixels (default: half the window).", ge=1)
    variant: Variant | None = option(None, "Fallback (open_clip models) only: dense embedding variant (default: "
                                           "plain for average-pooled towers, else naclip).", short="-v")
    groups: tuple[int, int] = option((64, 8), "Fallback only: groups of the two stages, e.g. 64,8.")
    iters: int = option(10, "Fallback only: soft-assignment iterations per stage.", cli=False, ge=1)
    tau: float = option(0.05, "Fallback only: assignment temperature.", cli=False, gt=0)
    scores: bool = option(False, "Also write per-class scores as DIR/<stem>.scores.npz (float16; each pixel its "
                                 "group's).")
    overlay: bool = option(True, "Write DIR/<stem>.overlay.png and the stage maps <stem>.stage1/2.png.")
    coco_dataset: str | None = option(None, "Also write the predictions as a COCO dataset JSON (images, categories, "
                                            "annotations with boxes and RLE masks) to this file, for pycocotools and "
                                            "FiftyOne.")

    @field_validator("groups", mode="before")
    @classmethod
    def _split_groups(cls, value: Any) -> Any:
        return tuple(int(v) for v in value.split(",")) if isinstance(value, str) else value

    @field_validator("bg_thresh", mode="before")
    @classmethod
    def _bg_thresh(cls, value: Any) -> Any:
        text = str(value).strip().lower()
        if text not in ("default", "none"):
            try:
                number = float(text)
            except ValueError:
                raise ValueError("must be a number in [0, 1], 'none' or 'default'") from None
            if not 0.0 <= number <= 1.0:
                raise ValueError("must lie in [0, 1] (or 'none' for no background)")
        return text

    @model_validator(mode="after")
    def _check(self) -> GroupConfig:
        if min(self.groups) < 1 or self.groups[1] > self.groups[0]:
            raise ValueError("--groups needs two counts, the second no larger than the first (e.g. 64,8)")
        if self.stride is not None and self.window is None:
            raise ValueError("--stride applies only with --window")
        return self


class _Boxes(_Lists):
    """Options shared by detect and ground: proposals from the dense score maps, region embeddings."""

    templates: str | tuple[str, ...] | None = option(None, TEMPLATES_HELP, short="-t")
    background: tuple[str, ...] = option(("background",), "Comma-separated background prompts competing with "
                                                          "the labels/phrases.")
    score_map_proposals: bool = option(True, "Boxes from the connected components of the dense score maps.",
                                       panel=DENSE)
    selective_search: bool = option(False, "Add selective-search boxes to the score-map proposals.", panel=DENSE)
    min_cosine: float | None = option(None, MIN_COSINE_HELP, panel=DENSE, ge=-1.0, le=1.0)
    shifts: int | None = option(None, SHIFTS_HELP + " Default 4.", panel=DENSE, ge=1)
    max_proposals: int | None = option(None, "Cap on class-agnostic proposals per image (default 300).",
                                       panel=DENSE, ge=1)
    proposals: dict[str, Any] = option({}, "ProposalConfig overrides (clipkit.proposals).", cli=False)
    regions: dict[str, Any] = option({}, "RegionConfig overrides (clipkit.regions).", cli=False)
    coco_dataset: str | None = option(None, "Also write the predictions as a COCO dataset JSON (images, categories, "
                                            "annotations with boxes and RLE masks) to this file, for pycocotools and "
                                            "FiftyOne.")

    @model_validator(mode="after")
    def _overrides(self) -> Any:
        from dataclasses import fields

        for name in ("proposals", "regions"):
            if not getattr(self, name):
                continue  # only library callers set these: importing the dataclasses (torch) is fine then
            if name == "proposals":
                from clipkit.proposals import ProposalConfig as cls
            else:
                from clipkit.regions import RegionConfig as cls
            unknown = set(getattr(self, name)) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"unknown {name} override(s): {', '.join(sorted(unknown))}")
        return self

    @property
    def region_overrides(self) -> dict[str, Any]:
        """``regions`` with ``shifts`` applied (``RegionConfig.dense_shifts``)."""
        return {**self.regions, **({"dense_shifts": self.shifts} if self.shifts is not None else {})}

    @property
    def proposal_overrides(self) -> dict[str, Any]:
        """``proposals`` with ``max_proposals`` applied."""
        extra = {"max_proposals": self.max_proposals} if self.max_proposals is not None else {}
        return {**self.proposals, **extra}


class DetectConfig(_Boxes):
    """ViLD-style detection (:mod:`clipkit.methods.detect`); official values noted in its docstring."""

    path: Literal["image", "fast", "ensemble"] = option(
        "ensemble", "Region embeddings: image (CLIP on 1x + 1.5x crops), fast (RoIAlign over dense patch "
                    "embeddings) or ensemble (ViLD geometric mean, weight 2/3 on image).")
    temperature: float | None = option(100.0, "ViLD: logits = cos / 0.01; None: the model's logit scale.",
                                       cli=False)
    ensemble_weight: float = option(2 / 3, "λ, the image path's exponent in the geometric mean.", cli=False,
                                    ge=0.0, le=1.0)
    nms_iou: float = option(0.5, "Per-class NMS IoU (ViLD).", ge=0.0, le=1.0)
    threshold: float = option(0.3, "Minimum score of a detection.", ge=0.0, le=1.0)
    max_detections: int = option(100, "At most this many boxes per image.", ge=1)
    drop_background: bool = option(True, "Drop boxes whose best class is a background prompt (ViLD Colab).",
                                   cli=False)
    coco: str | None = option(None, "Also write COCO results JSON (image_id, category_id, bbox XYWH, score) to "
                                    "this file.")
    coco_categories: str | None = option(None, "COCO instances.json whose categories and images --coco uses "
                                               "(default: labels numbered from 1, images in input order).")

    @model_validator(mode="after")
    def _coco(self) -> DetectConfig:
        if self.coco_categories is not None and self.coco is None:
            raise ValueError("--coco-categories applies only with --coco")
        return self

    @property
    def uses_selective_search(self) -> bool:
        """Whether proposals include selective search (asked for, or the only source left)."""
        return self.selective_search or not self.score_map_proposals


class GroundConfig(_Boxes):
    """GLIP-style grounding scored the ReCLIP way (:mod:`clipkit.methods.ground`)."""

    region: Literal["image", "fast", "both", "none"] = option(
        "image", "Region embedding of detect scored with each box: image, fast, both or none.")
    context: Literal["blur", "grey", "none"] = option(
        "blur", "ReCLIP context view scored with each box: blur, grey or none.")
    blur_radius: float = option(100.0, "ReCLIP blur (PIL GaussianBlur radius, original px).", cli=False, gt=0)
    all_boxes: bool = option(False, "Every box scoring at least --threshold per phrase, instead of the best one.",
                             flag="--all")
    threshold: float | None = option(None, "A box is returned when the calibrated probability that the phrase is "
                                           "in the image (best box) or that the box shows it (--all) is at least "
                                           "this. Default: the model's calibrated threshold, else 0.5.",
                                     ge=0.0, le=1.0)
    nms_iou: float = option(0.6, "Class-wise NMS IoU with --all (GLIP).", ge=0.0, le=1.0)
    max_boxes: int = option(100, "At most this many boxes per phrase with --all (GLIP).", ge=1)
    context_batch: int = option(32, "Context views per encoder pass.", cli=False, ge=1)
    # ReCLIP reasoning (clipkit/reclip.py) and calibrated scores (docs/ground.md)
    relations: bool = option(True, "Apply the caption's relations and superlatives (ReCLIP); off: every phrase "
                                   "alone.", panel="Reasoning")
    superlative_rule: Literal["reclip", "count"] = option(
        "reclip", "reclip (ReCLIP's formula) or count (presence-based ordinal rule).", panel="Reasoning")
    relation_prior: Literal["softmax", "presence"] = option(
        "softmax", "Subject weights a relation reweights: softmax (ReCLIP) or presence.", panel="Reasoning")
    next_to_scale: float = option(0.03, "'next to' weight exp(-distance / (scale x image diagonal)) (not in "
                                        "ReCLIP).", panel="Reasoning", gt=0)
    temperature: float | None = option(None, "Softmax temperature of the phrase probabilities (default: the "
                                             "model's ground calibration, else 1).", panel="Reasoning", gt=0)
    no_object_logit: float | None = option(None, "A constant no-object logit (default: the model's calibration).",
                                           panel="Reasoning")
    vocabulary: bool = option(True, "Expand 'the circle' / 'the red one' to the model's vocabulary names.",
                              panel="Reasoning")
    calibration_mode: Literal["constant", "background", "vocabulary"] | None = option(
        None, "What the no-object logit is relative to (default: the model's).", panel="Reasoning")
    vocabulary_proposals: bool = option(False, "Proposals from the score maps of every vocabulary name instead of "
                                               "the phrases' own maps.", panel="Reasoning")
    proposal_head: str | None = option(None, "Also take candidate boxes from this trained LSeg head's segmentation "
                                             "over the model's vocabulary (default: the model's ground_proposal_head, "
                                             "lseg-shapes for shapes-clip); none: score maps only.", panel=DENSE)
    head_presence: bool = option(True, "With a proposal head: a phrase none of whose names the head segments "
                                         "anywhere in the image is absent.", panel=DENSE)

    @model_validator(mode="after")
    def _check(self) -> GroundConfig:
        if self.region == "none" and self.context == "none":
            raise ValueError("--region and --context cannot both be 'none'")
        return self


class SketchConfig(MethodConfig):
    """CLIPasso (:mod:`clipkit.clipasso`): defaults are the official ones (see clipkit/clipasso/optimize.py),
    except that a schedule field left unset takes the loss model's own ``sketch_schedule`` from its clipkit.json
    when it ships one (:func:`clipkit.clipasso.prepare.model_schedule`)."""

    strokes: int = option(16, "Number of strokes, one cubic Bézier each.", short="-n", ge=1)
    width: float = option(3.0, "Full stroke width in canvas pixels (diffvg half-width 1.5).", short="-w", gt=0)
    canvas: int = option(224, "Canvas side in pixels.", ge=16)
    iterations: int = option(2001, "Maximum optimisation steps per seed (stops early when the loss stalls). "
                                   "Unset: the loss model's sketch_schedule if it ships one (the bundled: 300), "
                                   "else CLIPasso's 2001.", short="-i", ge=1)
    lr: float = option(1.0, "Adam learning rate on the points.", cli=False, gt=0)
    eval_interval: int = option(10, "Evaluate (and keep the best) every this many steps.", cli=False, ge=1)
    min_delta: float = option(1e-5, "Early-stop tolerance on the eval loss.", cli=False, ge=0)
    seeds: int = option(3, "Sketches from different seeds; the lowest loss is kept. Unset: the loss model's "
                           "sketch_schedule if it ships one (the bundled: 1), else CLIPasso's 3.", ge=1)
    seed: int = option(0, "First seed; the others are seed+1000, seed+2000, …")
    seed_step: int = option(1000, "Step between seeds.", cli=False)
    renderer: Literal["auto", "torch", "diffvg"] = option(
        "auto", "auto (= torch: deterministic, fast on CPU), torch, or diffvg (only when asked; pydiffvg must "
                "import).")
    attention_init: bool = option(True, "Start points drawn from the saliency map.", cli=False)
    xdog_intersec: bool = option(True, "Multiply the saliency with the XDoG edge map.", cli=False)
    softmax_temp: float = option(0.3, "Temperature of the start-point distribution (official 0.3).", cli=False,
                                 gt=0)
    frames: bool = option(False, "Also write DIR/<stem>.sketch.gif, the optimisation every --eval-interval steps.")
    mask_object: bool = option(False, "Remove the background before sketching (official --mask_object: U2-Net; "
                                      "here GrabCut from a border-frame rectangle, a deviation).")
    fix_scale: bool = option(False, "Centre the image on a white square (side max(w, h) + 20) instead of "
                                    "stretching it to the canvas (official --fix_scale).")
    saliency_model: str = option("auto", "The CLIP ViT whose attention places the first strokes (official: "
                                         "ViT-B/32). auto: the loss model when it is a ViT, else shapes-clip.",
                                 min_length=1)
    saliency_pretrained: str | None = option(None, "Pretrained tag of --saliency-model (like -p for -m).")
