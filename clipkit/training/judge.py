"""Train ``shapes-judge``: a small ResNet CLIP, independent of shapes-clip, that names shapes in photos and drawings.

CLIPasso's recognition test optimises a sketch with one CLIP and judges it with another (the paper: RN101 for the
loss, a ViT to judge). clipkit's sketch is optimised with ``shapes-sketch`` and judged by this ResNet — trained
independently: another initialisation, input size and stem, another pool of scenes (stream seed 4242;
shapes-clip trains on streams 0–6, shapes-sketch on 5151, the recognition bench sketches stream 11, the card's
metrics use 1000). The same trainer makes ``shapes-sketch`` (:func:`sketch_model_config`: 96 px, the first
convolution fixed to edge filters, photo–drawing pairs at layer2/layer3).

Data: a :class:`~clipkit.world.data.ScenePool` with a share of line drawings (``PoolConfig.drawings``), sampled
through :class:`ShapeCaptionDataset`, which drops the colour words of a caption with probability
``p_shape_only`` ("a red star left of a blue cross" -> "a star left of a cross"), so that bare shape names are
trained on photos too, not only on black-ink drawings.

Loss: CLIP's symmetric InfoNCE with multi-positive soft targets like :func:`clipkit.training.clip.
multi_positive_clip_loss`, but the positives are *which captions are true of which images*
(:func:`caption_fits`), not equal keys: "a star" is true of a red star, a blue star and a black star drawing,
"a red star" only of the first. (Equal keys would make "a star" and "a red star" of the same image negatives.)
Plus ``word_weight`` × shapes-clip's caption-word loss (:func:`clipkit.training.clip.caption_word_loss`) on the
pooled image embedding (one "patch"): free word vectors predict which colour and shape words name the image. A
3.5-minute trial without it reached shape top-1 0.35 on photos and 0.28 on black drawings: contrastive training
from scratch finds colour first, as shapes-clip did. Nothing of data.py or clip.py is changed; this module wraps
them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from clipkit.training.clip import (
    PREPROCESS_CFG,
    MilHead,
    PoolRunConfig,
    caption_word_loss,
    draw_pool,
    multi_positive_clip_loss,
    start_run,
    train_loop,
)
from clipkit.world.data import WORDS, SceneCaptionDataset, ScenePool, batches, satisfies
from clipkit.world.scenes import COLOURS, SHAPES

# open_clip ModifiedResNet: stem 3 convs (8, 8, 16 channels), one bottleneck block per stage at widths
# 16/32/64/128 (x4 expansion: 512 channels out), attention pooling over the 2x2 grid. 64 px input: on the shared
# 2-core box a step at 96 px cost 2.3x as much, and a CLIPasso stroke (3 px at 224) still shows as a ~0.9 px grey
# line at 64 (the world's drawings are trained at 0.4-1.4 px). The text tower is shapes-clip's (2 x 64, context 32).
JUDGE_CFG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2,
                 "mlp_ratio": 2.0},
}
JUDGE_PREPROCESS: dict = {**PREPROCESS_CFG, "size": 64}
META = {"kind": "clip", "default_templates": "none",
        "role": "judge: an independently trained ResNet for the sketch recognition test (bench/sketch_recognition.py)"}
_COLOURED = re.compile(r"\b(?:(an?) )?(" + "|".join(COLOURS) + r") (" + "|".join(SHAPES) + r")\b")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def strip_colours(caption: str) -> str:
    """ "a red star left of an orange cross" -> "a star left of a cross"; "red star and blue cross" -> "star and
    cross" (articles follow the shape word)."""
    return _COLOURED.sub(lambda m: (f"{_article(m[3])} " if m[1] else "") + m[3], caption)


def caption_names(caption: str) -> list[tuple[str | None, str]]:
    """The objects a caption names, as (colour or None, shape), in order."""
    words = caption.replace(",", " ").split()
    return [(words[k - 1] if k and words[k - 1] in COLOURS else None, w) for k, w in enumerate(words) if w in SHAPES]


#: Is a caption naming ``named`` true of an image showing ``objects``? (colour None = not visible, e.g. black ink,
#: or not said): the world's own rule (:func:`clipkit.world.data.satisfies`).
caption_fits = satisfies


class ShapeCaptionDataset(SceneCaptionDataset):
    """:class:`SceneCaptionDataset` items whose caption loses its colour words with probability ``p_shape_only``
    (own RNG stream, so the parent's flips and caption styles are unchanged); ``key`` is the pool index, from
    which :func:`judge_loss_fn` reads what the image shows."""

    def __init__(self, pool: ScenePool, *, p_shape_only: float = 0.4, **kw) -> None:
        super().__init__(pool, **kw)
        self.p_shape_only = p_shape_only

    def item(self, i: int, draw: int = 0) -> dict:
        it = super().item(i, draw)
        if np.random.default_rng([self.seed, i, draw, 0x5A]).random() < self.p_shape_only:
            it["caption"] = strip_colours(it["caption"])
            it["named"] = tuple((None, shape) for _, shape in it["named"])  # what the caption now names
        it["key"] = i % len(self.pool)
        return it


def fit_matrix(pool: ScenePool, keys: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """float [B, B]: entry (i, j) = 1 if caption j is true of image i (pool index keys[i])."""
    shown = [[tuple(n.split()) if " " in n else (None, n) for n in pool.names[int(k)]] for k in keys]
    named = [caption_names(c) for c in captions]
    return torch.tensor([[float(caption_fits(s, n)) for n in named] for s in shown])


def judge_loss_fn(tokenizer, pool: ScenePool, head: MilHead | None = None, word_weight: float = 0.0,
                  word_scale: float = 10.0, pair_weight: float = 0.0
                  ) -> Callable[[torch.nn.Module, dict], torch.Tensor]:
    """Symmetric InfoNCE with soft targets spread over every true (image, caption) pair of the batch, plus
    ``word_weight`` × the caption-word loss of the pooled embedding (needs ``head``, a :class:`MilHead`), plus
    ``pair_weight`` × :func:`clipkit.training.pairs.paired_drawing_loss` at CLIPasso's layers (layer2, layer3)
    on the batch's ``pair`` drawings and ``scribble`` negatives (a ResNet tower)."""
    from clipkit.training.pairs import PAIR_BLOCKS, paired_drawing_loss, resnet_with_blocks

    def fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        pair = pair_weight > 0 and "pair" in batch
        pooled, photo = resnet_with_blocks(model.visual, batch["image"], PAIR_BLOCKS if pair else ())
        img = F.normalize(pooled, dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(batch["caption"])), dim=-1)
        fits = fit_matrix(pool, batch["key"], batch["caption"])  # the diagonal is always 1
        loss = multi_positive_clip_loss(img, txt, model.logit_scale.exp(), positives=fits.bool())
        if word_weight > 0 and head is not None:
            loss = loss + word_weight * caption_word_loss(img[:, None], head, batch["words"], word_scale)
        if pair:
            n = len(batch["pair"])  # drawings and scribbles in one pass
            both = resnet_with_blocks(model.visual, torch.cat([batch["pair"], batch["scribble"]]), PAIR_BLOCKS)[1]
            loss = loss + pair_weight * paired_drawing_loss(photo, [b[:n] for b in both], [b[n:] for b in both])
        return loss

    return fn


@dataclass
class TrainJudgeConfig(PoolRunConfig):
    """Everything that determines a shapes-judge run (recorded in the model card)."""

    name: str = "shapes-judge"
    model_cfg: dict = field(default_factory=lambda: json.loads(json.dumps(JUDGE_CFG)))
    steps: int = 800
    batch_size: int = 64
    warmup: int = 50
    seed: int = 4242
    pool_size: int = 8000
    object_probs: tuple[float, ...] = (0.6, 0.25, 0.1, 0.05)
    threads: int = 1  # on the loaded shared box one thread ran 2.5-7x faster than two
    drawings: float = 0.45
    p_shape_only: float = 0.4
    word_weight: float = 1.0
    # issue #18, the sketch loss model shapes-sketch: the stem's first convolution fixed to oriented edge filters
    # (clipkit.training.pairs.freeze_edge_stem) and photo–drawing pairs at CLIPasso's layers (pair_weight > 0)
    edge_stem: bool = False
    pair_weight: float = 0.0

    def __post_init__(self) -> None:
        self.pairs = self.pairs or self.pair_weight > 0


def train_judge(cfg: TrainJudgeConfig, *, quiet: bool = False, log: Callable[[str], None] | None = None,
                checkpoint: Callable[[torch.nn.Module, int], None] | None = None, checkpoint_every: int = 0):
    """Train the judge. Returns (model in eval mode, tokenizer, LoopResult, seconds spent drawing the pool).
    ``checkpoint(model, step)`` is called every ``checkpoint_every`` steps (a multiple of 50; 0 = never)."""
    log = log or (lambda s: None)
    model, tokenizer = start_run(cfg)
    if cfg.edge_stem:
        from clipkit.training.pairs import freeze_edge_stem

        freeze_edge_stem(model)
    t0 = time.perf_counter()
    pool = draw_pool(cfg)
    pool_s = time.perf_counter() - t0
    log(f"pool of {cfg.pool_size} scenes ({pool.drawn.mean():.0%} drawings) drawn in {pool_s:.0f}s")
    ds = ShapeCaptionDataset(pool, seed=cfg.seed, p_shape_only=cfg.p_shape_only)
    head = MilHead(1, len(WORDS), cfg.model_cfg["embed_dim"])

    def on_step(step: int, loss: float, lr: float) -> None:
        log(f"step {step} loss {loss:.4f} lr {lr:.2e} t {time.perf_counter() - t0:.0f}s")
        if checkpoint is not None and checkpoint_every and step and step % checkpoint_every == 0:
            model.eval()
            checkpoint(model, step)
            model.train()

    res = train_loop(model, batches(ds, cfg.batch_size, cfg.steps, seed=cfg.seed),
                     judge_loss_fn(tokenizer, pool, head, cfg.word_weight, pair_weight=cfg.pair_weight),
                     extra_params=head.parameters(),
                     steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup=cfg.warmup, quiet=quiet,
                     max_seconds=cfg.max_minutes * 60 if cfg.max_minutes else None, log_every=50, on_step=on_step)
    return model, tokenizer, res, pool_s


# shapes-sketch: the model `clipkit sketch` optimises against by default (CLIPasso's loss model; the paper's is
# RN101). The judge's tower at 96 px (a 3-px stroke at 224 is 1.3 px here, 0.9 px at 64), its first convolution
# fixed to edge filters, drawings paired with their photos at layer2/layer3. Stream 5151: disjoint from
# shapes-clip's 0-6, the judge's 4242, the sketch bench's 11 and the metrics' 1000.
SKETCH_CFG: dict = {**JUDGE_CFG, "vision_cfg": {**JUDGE_CFG["vision_cfg"], "image_size": 96}}
SKETCH_META = {"kind": "clip", "default_templates": "none", "sketch_schedule": {"iterations": 300, "seeds": 1},
               "role": "sketch loss model: the ResNet `clipkit sketch` optimises against by default (CLIPasso's RN101)"}


#: What a shapes-sketch run changes of :class:`TrainJudgeConfig` (the judge's trainer with the edge stem and pairs).
SKETCH_MODEL_DEFAULTS: dict = {"name": "shapes-sketch", "batch_size": 32, "seed": 5151, "pool_size": 4000,
                               "drawings": 0.3, "edge_stem": True, "pair_weight": 1.0}


def sketch_model_config(**given) -> TrainJudgeConfig:
    """The config of a shapes-sketch run: :data:`SKETCH_MODEL_DEFAULTS` and :data:`SKETCH_CFG`, then ``given``."""
    return TrainJudgeConfig(**{"model_cfg": json.loads(json.dumps(SKETCH_CFG)), **SKETCH_MODEL_DEFAULTS, **given})


def is_sketch_model(cfg: TrainJudgeConfig) -> bool:
    """Whether a run trains a sketch loss model (edge stem or pairs) rather than a judge."""
    return cfg.edge_stem or cfg.pair_weight > 0


def meta_for(cfg: TrainJudgeConfig) -> dict:
    """clipkit.json of the trained folder: the sketch model's (with its sketch schedule) or the judge's."""
    return SKETCH_META if is_sketch_model(cfg) else META
