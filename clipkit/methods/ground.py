"""GLIP-style phrase grounding on any CLIP (``clipkit ground``): caption → phrases → boxes.

GLIP (Li et al., CVPR 2022; microsoft/GLIP) aligns the noun phrases of a caption with image regions.
Without a trained GLIP the candidate boxes are the connected components of the phrases' dense score maps (the
proposals of ``detect`` with the phrases as labels, :func:`ground_proposals`), and every (box, phrase) pair is
scored with CLIP, training-free, in the way of ReCLIP
(Subramanian et al., ACL 2022; allenai/reclip ``executor.py``), which scores each box with two image
representations and adds the logits (``method_aggregator="sum"``):

* the region embedding of ``detect`` (:mod:`clipkit.regions`, ViLD-image crops at 1× + 1.5×; ReCLIP crops at
  1× only) — ``region="image"``, or the fast RoIAlign path, or both;
* the *context* view: the whole image with everything outside the box blurred (ReCLIP: PIL ``GaussianBlur``
  radius 100) or greyed, so the phrase's attributes and relations are judged in place.

Logits are ``exp(logit_scale) · cos`` of the model; phrases go through the prompt engine
(:func:`clipkit.prompts.text_embeddings`, ReCLIP uses "a photo of " + phrase). The caption is parsed into
noun phrases, relations and superlatives (:mod:`clipkit.expressions`) and executed as ReCLIP does
(:mod:`clipkit.reclip`): each phrase's distribution over the boxes is a calibrated softmax (temperature and a
no-object option fitted on validation scenes, the model's ``clipkit.json`` → ``ground_calibration``), relations
and superlatives reweight it, and a phrase whose presence probability is below ``threshold`` gets no box;
``all_boxes=True`` returns every box whose own calibrated probability reaches ``threshold`` after NMS (GLIP:
class-wise NMS 0.6, at most 100).

Deviations: no GLIP model (CLIP + score-map proposals instead), no token-level alignment or centerness; the
score is a calibrated softmax probability, not GLIP's sigmoid; ReCLIP deviations in docs/ground.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from clipkit.configs import GroundConfig
from clipkit.expressions import Expression, Vocabulary, parse_expression
from clipkit.head_proposals import proposal_head, snap_to_head
from clipkit.methods import Sample
from clipkit.phrases import Phrase, parse_phrases
from clipkit.proposals import propose, score_maps_from_patches
from clipkit.regions import (
    default_variant,
    dense_patches,
    dense_patches_batch,
    fast_embeddings,
    image_embeddings,
    image_tensor,
    patch_pixels,
    region_config,
)
from clipkit.results import Grounding

__all__ = ["CONTEXTS", "REGIONS", "GroundConfig", "GroundPredictor", "Grounding", "PhraseScores", "calibration_for",
           "context_views", "ground_image", "phrase_embeddings", "score_boxes", "score_phrases"]

CONTEXTS = ("blur", "grey", "none")
REGIONS = ("image", "fast", "both", "none")


def context_views(model: Any, image: Image.Image, boxes: np.ndarray, mode: str, blur_radius: float
                  ) -> torch.Tensor:
    """ReCLIP context views at the model input: ``[K, 3, H, W]`` normalised, one per box ``[K,4]`` XYXY px.

    The whole image is stretched to the model input (nothing cut away); outside each box it is replaced by the
    Gaussian-blurred image (``"blur"``; ``blur_radius`` in original pixels, scaled with the image) or by mid-grey
    (``"grey"``). Working at the input size keeps this one image-sized blur plus a masked blend per box.
    """
    h, w = model.image_size
    small = image.convert("RGB").resize((w, h), Image.BICUBIC)
    x = image_tensor(model, small)  # [1, 3, h, w]
    if mode == "blur":
        radius = blur_radius * min(w / image.width, h / image.height)
        base = image_tensor(model, small.filter(ImageFilter.GaussianBlur(radius)))
    else:
        base = image_tensor(model, Image.new("RGB", (w, h), (128, 128, 128)))
    b = torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4).to(x.device)
    cx = (torch.arange(w, device=x.device) + 0.5) * (image.width / w)  # input pixel centres, original px
    cy = (torch.arange(h, device=x.device) + 0.5) * (image.height / h)
    inside_x = (cx[None] >= b[:, 0:1]) & (cx[None] < b[:, 2:3])  # [K, w]
    inside_y = (cy[None] >= b[:, 1:2]) & (cy[None] < b[:, 3:4])  # [K, h]
    mask = (inside_y[:, :, None] & inside_x[:, None, :])[:, None].to(x.dtype)  # [K, 1, h, w]
    return mask * x + (1 - mask) * base


@torch.inference_mode()
def box_embeddings(model: Any, image: Image.Image, boxes: np.ndarray, cfg: GroundConfig,
                   patches: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The box representations that get scored, each ``[K, D]`` L2-normalised (region and/or context).
    ``patches``: the image's dense patches when the caller has them (the fast region reuses them)."""
    rcfg = region_config(cfg.region_overrides)
    reps = []
    if cfg.region in ("image", "both"):
        reps.append(image_embeddings(model, image, boxes, cfg=rcfg))
    if cfg.region in ("fast", "both"):
        reps.append(fast_embeddings(model, image, boxes, cfg=rcfg, patches=patches))
    if cfg.context != "none":
        embs = []
        for i in range(0, len(boxes), cfg.context_batch):
            views = context_views(model, image, boxes[i:i + cfg.context_batch], cfg.context, cfg.blur_radius)
            embs.append(model.encode_image(views).float())
        reps.append(F.normalize(torch.cat(embs), dim=-1))
    return reps


def ground_proposals(model: Any, image: Image.Image, text_emb: torch.Tensor, n_phrases: int, cfg: GroundConfig,
                     patches: torch.Tensor | None = None) -> np.ndarray:
    """Candidate boxes ``[K, 4]`` XYXY px: the connected components of each phrase's dense score map (softmax
    over phrases + background prompts, with the model's background cosine cut, as in detect) and/or selective
    search. ``patches``: the image's dense patches ``[1, h, w, D]`` (computed here when needed and absent)."""
    from clipkit.dense import min_cosine_for

    maps = None
    rcfg = region_config(cfg.region_overrides)
    if cfg.score_map_proposals:
        variant = rcfg.dense_variant or default_variant(model)
        if patches is None:
            patches = dense_patches(model, image, rcfg)
        maps = score_maps_from_patches(model, patches, text_emb, variant, image.size, n_labels=n_phrases,
                                       min_cosine=min_cosine_for(model, variant, cfg.min_cosine))
    use_ss = cfg.selective_search or not cfg.score_map_proposals
    return propose(image, score_maps=maps, n_labels=n_phrases, patch_px=patch_pixels(model, image, rcfg),
                   **{"use_selective_search": use_ss, **cfg.proposal_overrides})


def score_boxes(reps: Sequence[torch.Tensor], text: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """ReCLIP "sum" aggregation: ``Σ_rep logit_scale · cos(rep, text)`` → ``[K, T]`` float32."""
    total = torch.zeros(reps[0].shape[0], text.shape[0], device=text.device)
    for r in reps:
        total = total + logit_scale * r.float() @ text.float().T
    return total


def calibration_for(model: Any, cfg: GroundConfig) -> dict[str, Any]:
    """``{"temperature", "no_object_logit", "mode", "threshold", …}``: the config's values over the model's
    ``clipkit.json`` → ``ground_calibration`` (fitted on validation scenes by ``bench/ground_eval.py
    --calibrate``); uncalibrated models get T = 1 and the background prompt as the no-object option."""
    cal = {"temperature": 1.0, "no_object_logit": 0.0, "mode": "background", "threshold": 0.5,
           **((getattr(model, "meta", {}) or {}).get("ground_calibration") or {})}
    if any(v is not None for v in (cfg.temperature, cfg.no_object_logit, cfg.calibration_mode)):
        cal.pop("expanded", None)  # the user's values hold for every phrase
    if cfg.temperature is not None:
        cal["temperature"] = float(cfg.temperature)
    if cfg.no_object_logit is not None:  # a logit given by the user is a constant one
        cal["no_object_logit"], cal["mode"] = float(cfg.no_object_logit), cfg.calibration_mode or "constant"
        cal.pop("box_no_object_logit", None)
        cal.pop("box_temperature", None)
    if cfg.threshold is not None:
        cal["threshold"] = float(cfg.threshold)
    if cfg.calibration_mode is not None:
        cal["mode"] = cfg.calibration_mode
    return cal


@dataclass
class PhraseScores:
    """What :func:`score_phrases` measured in one image: ``boxes`` ``[K, 4]`` XYXY px, ``logits`` ``[K, P]``
    (mean CLIP logit over the box representations, max over each phrase's queries), ``background`` ``[K]``
    (best background-prompt logit per box), ``competitors`` ``[K, P]`` (best logit per box among the vocabulary
    names the phrase does not cover; ``-inf`` without a vocabulary) and the parsed ``expression``. With a
    proposal head (:mod:`clipkit.head_proposals`): ``own`` ``[K]`` bool marks the phrases' own proposals (which
    decide whether a phrase is present), ``pick`` ``[K]`` bool the candidates a box is chosen from (the head's
    outlines in place of the own boxes they cover); None: every box, both ways. ``seen`` (per phrase): whether the
    head segmented any of the phrase's names anywhere in the image."""

    boxes: np.ndarray
    logits: np.ndarray
    background: np.ndarray
    expression: Expression
    competitors: np.ndarray | None = None
    own: np.ndarray | None = None
    pick: np.ndarray | None = None
    seen: list[bool] | None = None


def score_phrases(model: Any, image: Image.Image, caption: str, phrases: Sequence[Phrase], text_emb: torch.Tensor,
                  cfg: GroundConfig, *, boxes: np.ndarray | None = None,
                  timings: dict[str, float] | None = None, patches: torch.Tensor | None = None) -> PhraseScores:
    """Parse ``caption`` around ``phrases`` (:func:`clipkit.expressions.parse_expression`), find candidate boxes
    and score every (box, phrase) pair. ``text_emb``: ``[len(phrases) + len(background), D]`` (phrases first);
    a phrase the model's vocabulary expands ("the circle" → "red circle", …) is embedded here. ``patches``: the
    image's dense patches when the caller computed them (:func:`needs_dense_pass`)."""
    from clipkit.prompts import text_embeddings

    image = image.convert("RGB")
    vocab = Vocabulary.from_meta(getattr(model, "meta", None)) if cfg.vocabulary else None
    expr = parse_expression(caption, phrases, vocabulary=vocab)
    n = len(phrases)
    if not cfg.relations:
        expr = Expression(caption, expr.phrases, notes=expr.notes, parser=expr.parser)
    queries = [[] if p.null else p.queries(vocab) for p in expr.phrases]
    rows, cols = [], []  # query embeddings, and the query columns of each phrase
    for i, qs in enumerate(queries):
        if qs == [phrases[i].text]:
            emb = text_emb[i:i + 1]
        else:
            emb = text_embeddings(model, qs, cfg.templates) if qs else text_emb[:0]
        cols.append(list(range(sum(len(r) for r in rows), sum(len(r) for r in rows) + len(emb))))
        rows.append(emb.to(text_emb.device))
    query_emb = torch.cat(rows) if rows else text_emb[:0]
    all_emb = torch.cat([query_emb, text_emb[n:]])
    t0 = time.perf_counter()
    given = boxes
    if patches is None and needs_dense_pass(cfg, boxes is not None):  # one pass: proposals and fast region
        patches = dense_patches(model, image, region_config(cfg.region_overrides))
    if boxes is None and cfg.vocabulary_proposals and vocab is not None:  # every object the model can name
        names = vocab.names()
        prop_emb = torch.cat([text_embeddings(model, names, cfg.templates).to(text_emb.device), text_emb[n:]])
        boxes = ground_proposals(model, image, prop_emb, len(names), cfg, patches)
    elif boxes is None:
        boxes = ground_proposals(model, image, all_emb, len(query_emb), cfg, patches) if len(query_emb) \
            else np.zeros((0, 4), np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    own = pick = seen = None
    # the head's outlines for best-box answers (--all keeps its own boxes: every box is its own answer there)
    head = proposal_head(model, cfg.proposal_head) if given is None and vocab and not cfg.all_boxes else None
    if head and len(boxes):
        snapped = snap_to_head(model, image, head, vocab.names(), boxes)  # type: ignore[union-attr]
        boxes, own, pick = snapped.boxes, snapped.own, snapped.pick
        seen = [any(f" {n} " in f" {q} " for q in qs for n in snapped.seen) for qs in queries]  # names in the text
    t1 = time.perf_counter()
    logits = np.zeros((len(boxes), n), np.float32)
    background = np.zeros(len(boxes), np.float32)
    competitors = np.full((len(boxes), n), -np.inf, np.float32)
    if len(boxes):
        reps = box_embeddings(model, image, boxes, cfg, patches)
        full = (score_boxes(reps, all_emb.to(reps[0].device), float(model.logit_scale)) / len(reps)).cpu().numpy()
        for i, c in enumerate(cols):
            logits[:, i] = full[:, c].max(1) if c else -np.inf
        if full.shape[1] > len(query_emb):
            background = full[:, len(query_emb):].max(1)
        for i, p in enumerate(expr.phrases):
            names = [] if p.null else p.competitors(vocab)
            if names:
                emb = text_embeddings(model, names, cfg.templates).to(reps[0].device)
                competitors[:, i] = (score_boxes(reps, emb, float(model.logit_scale)) / len(reps)).amax(1).cpu()
    if timings is not None:
        timings["proposals"] = timings.get("proposals", 0.0) + (t1 - t0)
        timings["scoring"] = timings.get("scoring", 0.0) + (time.perf_counter() - t1)
    return PhraseScores(boxes, logits, background, expr, competitors, own, pick, seen)


def needs_dense_pass(cfg: GroundConfig, boxes_given: bool = False) -> bool:
    """Whether grounding runs the dense pass: for the fast region, or for score-map proposals (unless the
    candidate boxes are given)."""
    return cfg.region in ("fast", "both") or (not boxes_given and cfg.score_map_proposals)


def ground_image(model: Any, image: Image.Image, caption: str, phrases: Sequence[Phrase],
                 text_emb: torch.Tensor, cfg: GroundConfig, *, path: str = "",
                 boxes: np.ndarray | None = None, timings: dict[str, float] | None = None,
                 patches: torch.Tensor | None = None) -> Grounding:
    """Ground ``phrases`` of ``caption`` in one image. ``text_emb``: ``[len(phrases) + len(background), D]``
    (phrases first). ``boxes``: candidate boxes ``[K,4]`` XYXY px (default: :func:`clipkit.proposals.propose`).

    Best-box mode: each phrase's distribution over the candidates (calibrated softmax, then ReCLIP's relations
    and superlatives, :func:`clipkit.reclip.resolve`); its box is returned when the phrase's presence
    probability reaches the threshold, scored presence × p(box). ``all_boxes``: every box whose own calibrated
    probability (:func:`clipkit.reclip.box_presence`) reaches the threshold, after phrase-wise NMS (relations
    are not applied)."""
    from torchvision.ops import batched_nms

    from clipkit.reclip import box_calibration, box_presence, margins, phrase_calibration
    from clipkit.results import Detections

    image = image.convert("RGB")
    sc = score_phrases(model, image, caption, phrases, text_emb, cfg, boxes=boxes, timings=timings,
                       patches=patches)
    cal = calibration_for(model, cfg)
    n = len(phrases)
    xyxy, conf, cls = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    decided: list[dict[str, Any] | None] = [None] * n
    present = [0.0] * n
    if len(sc.boxes) and cfg.all_boxes:
        cols = []
        for j, p in enumerate(sc.expression.phrases):
            cal_j = phrase_calibration(cal, p)
            tb, bb = box_calibration(cal_j)
            cols.append(box_presence(margins(sc.logits[:, j], cal_j, sc.background, sc.competitors[:, j]), tb, bb))
        probs = torch.from_numpy(np.stack(cols, 1).astype(np.float32))  # [K, n]
        null = torch.tensor([p.null for p in sc.expression.phrases], dtype=torch.bool)  # [n] "the image", …
        probs[:, null] = 0
        present = [float(probs[:, j].max()) for j in range(n)]
        # a null phrase names no object: no box for it even at threshold 0
        k_idx, p_idx = torch.nonzero((probs >= cal["threshold"]) & ~null, as_tuple=True)
        scores = probs[k_idx, p_idx]
        bx = torch.from_numpy(sc.boxes)[k_idx]
        keep = batched_nms(bx, scores, p_idx, cfg.nms_iou)
        kept_cls = p_idx[keep]
        # at most max_boxes per phrase, best first (batched_nms returns them sorted by score)
        rank = torch.zeros_like(kept_cls)
        for j in range(n):
            sel = kept_cls == j
            rank[sel] = torch.arange(int(sel.sum()))
        keep = keep[rank < cfg.max_boxes]
        xyxy, conf, cls = bx[keep].numpy(), scores[keep].numpy(), p_idx[keep].numpy()
    elif len(sc.boxes):
        res = _resolve(sc, cal, cfg, image.size)
        chosen = [j for j in range(n) if res[j]["best"] is not None and res[j]["present"] >= cal["threshold"]]
        xyxy = sc.boxes[[res[j]["best"] for j in chosen]]
        conf = np.array([res[j]["score"] for j in chosen], np.float32)
        cls = np.array(chosen, np.int64)
        decided = [r["decided_by"] for r in res]
        present = [r["present"] for r in res]
    labels = [p.text for p in phrases]
    det = Detections(xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4),
                     confidence=np.asarray(conf, np.float32),
                     class_id=np.asarray(cls, np.int64), labels=labels,
                     data={"phrase": np.array([labels[int(c)] for c in cls], dtype=object)},
                     path=path, image_size=image.size)
    return Grounding(path=path, caption=caption, phrases=list(phrases), detections=det, decided_by=decided,
                     present=present, notes=list(sc.expression.notes), parser=sc.expression.parser)


def _resolve(sc: PhraseScores, cal: dict[str, Any], cfg: GroundConfig, size: tuple[int, int]) -> list[dict]:
    """ReCLIP's execution (:func:`clipkit.reclip.resolve`) over the candidates; with a proposal head, the box is
    chosen among ``sc.pick`` and the presence comes from the phrases' own boxes (:class:`PhraseScores`)."""
    from clipkit.reclip import resolve

    def run(sel: np.ndarray | None) -> list[dict]:
        idx = np.arange(len(sc.boxes)) if sel is None else np.flatnonzero(sel)
        res = resolve(sc.expression, sc.boxes[idx], sc.logits[idx], cal, background=sc.background[idx],
                      competitors=None if sc.competitors is None else sc.competitors[idx], image_size=size,
                      superlative_rule=cfg.superlative_rule, prior=cfg.relation_prior,
                      next_to_scale=cfg.next_to_scale)
        for r in res:
            r["best"] = None if r["best"] is None else int(idx[r["best"]])
        return res

    if sc.pick is None or sc.own is None:
        return run(None)
    chosen, own = run(sc.pick), run(sc.own)
    for j, (c, o) in enumerate(zip(chosen, own, strict=True)):
        present = o["present"] if sc.seen is None or sc.seen[j] or not cfg.head_presence else 0.0
        if c["best"] is not None and c["present"] > 0:
            c["score"] *= present / c["present"]  # presence × p(best), with the own boxes' presence
        c["present"] = present
    return chosen


def phrase_embeddings(model: Any, phrases: Sequence[Phrase], cfg: GroundConfig) -> torch.Tensor:
    """``[len(phrases) + len(background), D]``: the phrases through the prompt engine, then background."""
    from clipkit.prompts import text_embeddings

    return text_embeddings(model, [*(p.text for p in phrases), *cfg.background], cfg.templates)


def parse_caption(caption: str | None, phrases: str | Sequence[str] | None) -> tuple[str, list[Phrase]]:
    """``(caption, phrases)`` from a caption and/or explicit phrases (``"a;b"`` or a list); UsageError if none."""
    from clipkit.errors import UsageError

    try:
        return parse_phrases(caption, phrases)
    except ValueError as e:
        raise UsageError(str(e)) from None


class GroundPredictor:
    """A caption's phrases + :class:`GroundConfig` → ``predict(samples)``: a :class:`Grounding` per RGB image.

    ``text``: ``(caption, phrases)`` as the CLI passes them (either may be None), or a caption string. Phrases
    and background prompts are embedded once. ``timings`` (a dict, for benchmarks) accumulates seconds spent in
    proposals and scoring.
    """

    keep_image = True
    transform = None

    def __init__(self, model: Any, text: Any, config: GroundConfig | None = None, *,
                 timings: dict[str, float] | None = None, **options: Any) -> None:
        from clipkit.dense import check_shifts

        self.config = cfg = GroundConfig.of(config, **options)
        caption, phrases = (text, None) if isinstance(text, str) else text
        self.caption, self.phrases = parse_caption(caption, phrases)
        if cfg.score_map_proposals or cfg.region in ("fast", "both"):
            check_shifts(model, region_config(cfg.region_overrides).dense_shifts)
        self.model, self.timings = model, timings
        self.text_emb = phrase_embeddings(model, self.phrases, cfg)

    @torch.inference_mode()
    def predict(self, samples: list[Sample]) -> list[Grounding]:
        images = [s.image.convert("RGB") for s in samples]  # a batch of images shares the dense forward passes
        patches = (dense_patches_batch(self.model, images, region_config(self.config.region_overrides))
                   if needs_dense_pass(self.config) else [None] * len(images))
        return [ground_image(self.model, image, self.caption, self.phrases, self.text_emb, self.config,
                             path=s.key, timings=self.timings, patches=p)
                for s, image, p in zip(samples, images, patches, strict=True)]
