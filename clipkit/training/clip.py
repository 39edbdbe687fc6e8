"""Contrastive training of a small open_clip model on shapes-world image–caption pairs (``shapes-clip``).

The loop is generic: :func:`train_loop` takes any module, an iterator of batches and a
``loss_fn(model, batch)``, so the LSeg and GroupViT trainers reuse it with their own models and losses;
:func:`save_hub_folder` writes any open_clip model in the hub layout (``open_clip_config.json`` +
``open_clip_model.safetensors``).

The loss is CLIP's symmetric InfoNCE (Radford et al. 2021; open_clip ``loss.ClipLoss``) with one change: with
48 classes a batch of 64 repeats category sets, so pairs whose scenes show the same set of categories are all
positives (soft targets spread evenly over them) instead of false negatives.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from clipkit.world.data import OPENAI_MEAN, OPENAI_STD, PoolConfig, SceneCaptionDataset, ScenePool, batches

# The bundled shapes-clip. Why this design (see the model card):
# - pool_type "avg": the image embedding is the mean of the projected patch tokens (after ln_post), so every
#   patch token lives in the joint space and is trained directly; CLS pooling leaves patches unsupervised
#   (a prototype was at chance on dense patch–text accuracy).
# - 96 px / patch 8: a 12x12 grid, enough to put a patch on each object of a 4-object scene, at CPU cost.
# - width 96 x 4 layers vision, width 64 x 2 layers text, embed 64: trains in ~20 min on 2 cores and stays
#   under 10 MB in fp16 (the 49408 x 64 token table, needed for the standard tokenizer, is most of it).
# - context_length 32: the longest caption ("a purple hexagon, an orange cross, a ... and a ...") is < 24
#   tokens.
SHAPES_CLIP_CFG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 96, "patch_size": 8, "width": 96, "layers": 4, "head_width": 32,
                   "mlp_ratio": 2.0, "pool_type": "avg"},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2,
                 "mlp_ratio": 2.0},
}
PREPROCESS_CFG: dict = {"size": 96, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                        "interpolation": "bicubic", "resize_mode": "shortest"}


def register_model_config(name: str, model_cfg: dict) -> None:
    """Make ``name`` known to ``open_clip.create_model`` (open_clip.add_model_config reads a folder/file)."""
    import open_clip

    folder = Path(tempfile.mkdtemp(prefix="clipkit-cfg-"))
    (folder / f"{name}.json").write_text(json.dumps(model_cfg))
    open_clip.add_model_config(folder)


def multi_positive_clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor,
                             keys: torch.Tensor | None = None, positives: torch.Tensor | None = None
                             ) -> torch.Tensor:
    """Symmetric InfoNCE with soft multi-positive targets.

    img, txt: float [B, D] L2-normalised; logit_scale: scalar (already exp'ed); either keys: int64 [B] (equal
    keys = same content, a symmetric relation) or positives: bool [B, B] with ``[i, j]`` = image i fits
    caption j (not symmetric once captions may name an object by shape or colour alone: "a circle" fits a red
    circle, "a red circle" does not fit every circle). Targets spread evenly over each row's positives.
    Returns the mean of the image->text and text->image cross-entropies.
    """
    logits = logit_scale * img @ txt.T
    pos = (keys[:, None] == keys[None, :]) if positives is None else positives
    pos = pos.float()
    return 0.5 * (F.cross_entropy(logits, pos / pos.sum(1, keepdim=True))
                  + F.cross_entropy(logits.T, pos.T / pos.T.sum(1, keepdim=True)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as in open_clip's training script: no decay on gains, biases, embeddings, logit_scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
                   or "embedding" in name or "class_embedding" in name)
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 (open_clip's ``cosine_lr``)."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * min(t, 1.0)))


@dataclass
class LoopResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def train_loop(model: torch.nn.Module, batch_iter: Iterable, loss_fn: Callable[[torch.nn.Module, dict],
               torch.Tensor], *, steps: int, lr: float = 1e-3, weight_decay: float = 0.1, warmup: int = 50,
               grad_clip: float = 1.0, max_seconds: float | None = None, log_every: int = 10,
               on_step: Callable[[int, float, float], None] | None = None, quiet: bool = False,
               extra_params: Iterable[torch.nn.Parameter] = ()) -> LoopResult:
    """AdamW + warm-up/cosine over ``steps`` batches from ``batch_iter``; ``loss_fn(model, batch) -> scalar``.

    ``extra_params`` (e.g. a loss's own parameters) are optimised too, without weight decay.
    ``max_seconds`` stops early (the schedule still assumes ``steps``). ``on_step(step, loss, lr)`` is called
    every ``log_every`` steps (and on the last). Shows a rich progress bar on stderr unless ``quiet``.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    model.train()
    groups = param_groups(model, weight_decay)
    extra = list(extra_params)
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
    res = LoopResult(steps=0, seconds=0.0)
    t0 = time.perf_counter()
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*cols, disable=quiet, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task("training", total=steps, loss=float("nan"))
        for step, batch in enumerate(batch_iter):
            if step >= steps:
                break
            cur = cosine_lr(step, steps, lr, warmup)
            for g in opt.param_groups:
                g["lr"] = cur
            loss = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            if hasattr(model, "logit_scale"):
                with torch.no_grad():  # open_clip clamps to ln(100)
                    model.logit_scale.clamp_(0, math.log(100))
            res.losses.append(float(loss.detach()))
            res.steps = step + 1
            bar.update(task, advance=1, loss=res.losses[-1])
            if on_step is not None and (step % log_every == 0 or step + 1 == steps):
                on_step(step, res.losses[-1], cur)
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                break
    res.seconds = time.perf_counter() - t0
    model.eval()
    return res


def caption_mil_loss(tokens: torch.Tensor, label_txt: torch.Tensor, labels: torch.Tensor,
                     scale: float, bias: torch.Tensor) -> torch.Tensor:
    """Multiple-instance loss on patch tokens with caption-level labels.

    tokens: [B, N, D] L2-normalised patch embeddings; label_txt: [C, D] L2-normalised label embeddings;
    labels: float [B, C] multi-hot of the categories the caption names. Each label's score is its best patch,
    ``scale * max_p cos(patch_p, label) + bias``, trained with sigmoid BCE (summed over labels, mean over the
    batch, as SigLIP sums over pairs): some patch must match every named object and no patch may match an
    unnamed one, so a patch cannot be a blend of two objects ("red" + "star" would match the absent
    "red star") and each object's own patches are the cheapest place to put its label.
    """
    best = (tokens @ label_txt.T).amax(dim=1)  # [B, C]
    logits = scale * best + bias
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / tokens.shape[0]


class MilHead(torch.nn.Module):
    """Training-only parameters of the patch losses (kept out of the CLIP so the saved model stays stock):
    the bias of :func:`caption_mil_loss`, and one free vector + bias per caption word for the word loss."""

    def __init__(self, n_labels: int, n_words: int = 0, dim: int = 0) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(-math.log(n_labels)))
        self.word_vectors = torch.nn.Parameter(torch.randn(n_words, dim) * dim**-0.5)
        self.word_bias = torch.nn.Parameter(torch.full((n_words,), -math.log(max(n_words, 1))))


def caption_word_loss(tokens: torch.Tensor, head: MilHead, words: torch.Tensor, scale: float) -> torch.Tensor:
    """Which colour/shape words does the caption contain? Predicted from the patches (best patch per word).

    tokens: [B, N, D] L2-normalised patch embeddings; words: float [B, W] multi-hot. Like SuperClass (Huang et
    al. 2024, caption tokens as classification targets), but multiple-instance over patches. The word vectors
    are free parameters, not text embeddings: this gives the image tower a direct signal for shape, which
    breaks the deadlock where neither tower uses shape because the other does not (first runs: shape words had
    no effect on the text embedding, cos("red circle", "red square") = 0.9999).
    """
    vec = F.normalize(head.word_vectors, dim=-1)
    logits = scale * (tokens @ vec.T).amax(dim=1) + head.word_bias
    return F.binary_cross_entropy_with_logits(logits, words, reduction="sum") / tokens.shape[0]


def clip_loss_fn(tokenizer, *, label_texts: list[str] | None = None, mil_weight: float = 0.0,
                 mil_scale: float = 10.0, mil_head: MilHead | None = None, word_weight: float = 0.0,
                 pair_weight: float = 0.0) -> Callable[[torch.nn.Module, dict], torch.Tensor]:
    """The loss for an open_clip CLIP on batches from :mod:`clipkit.world.data`: multi-positive contrastive
    on the pooled embedding, plus ``mil_weight`` × :func:`caption_mil_loss` on the patch tokens when > 0
    (needs ``label_texts`` in the order of the batch's ``labels`` columns and a ``mil_head``), plus
    ``word_weight`` × :func:`caption_word_loss`, plus ``pair_weight`` ×
    :func:`clipkit.training.pairs.paired_drawing_loss` on the batch's ``pair`` drawings."""
    from clipkit.training.pairs import PAIR_BLOCKS, paired_drawing_loss, tower_with_blocks

    label_tokens = tokenizer(label_texts) if mil_weight > 0 else None

    def fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        txt = F.normalize(model.encode_text(tokenizer(batch["caption"])), dim=-1)
        pair = pair_weight > 0 and "pair" in batch
        if mil_weight <= 0 and not pair:
            img = F.normalize(model.encode_image(batch["image"]), dim=-1)
            return multi_positive_clip_loss(img, txt, model.logit_scale.exp(), batch["key"], batch.get("positives"))
        pooled, tokens, photo_blocks = tower_with_blocks(model, batch["image"], PAIR_BLOCKS if pair else ())
        img = F.normalize(pooled, dim=-1)
        loss = multi_positive_clip_loss(img, txt, model.logit_scale.exp(), batch["key"], batch.get("positives"))
        if mil_weight > 0:
            lab = F.normalize(model.encode_text(label_tokens), dim=-1)
            tokens = F.normalize(tokens, dim=-1)
            loss = loss + mil_weight * caption_mil_loss(tokens, lab, batch["labels"], mil_scale, mil_head.bias)
            if word_weight > 0:
                loss = loss + word_weight * caption_word_loss(tokens, mil_head, batch["words"], mil_scale)
        if pair:
            n = len(batch["pair"])  # drawings and scribbles in one pass
            both = tower_with_blocks(model, torch.cat([batch["pair"], batch["scribble"]]), PAIR_BLOCKS)[2]
            loss = loss + pair_weight * paired_drawing_loss(photo_blocks, [b[:n] for b in both],
                                                            [b[n:] for b in both])
        return loss

    return fn


def save_hub_folder(model: torch.nn.Module, model_cfg: dict, out: str | Path, *,
                    preprocess_cfg: dict | None = None, meta: dict | None = None,
                    card: str | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``model`` in open_clip's hub layout: open_clip_config.json, open_clip_model.safetensors
    (``dtype``), optional clipkit.json (``meta``) and README.md (``card``). Returns the folder."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(dtype).contiguous() if v.is_floating_point() else v.detach().contiguous()
          for k, v in model.state_dict().items()}
    save_file(sd, str(out / "open_clip_model.safetensors"))
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or PREPROCESS_CFG}
    (out / "open_clip_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if meta is not None:
        (out / "clipkit.json").write_text(json.dumps(meta, indent=2) + "\n")
    if card is not None:
        (out / "README.md").write_text(card)
    return out


@dataclass
class PoolRunConfig:
    """What every shapes-world trainer's run is made of: a model config, a pool of scenes, a schedule (recorded in
    the model cards). ``drawings``: fraction of the pool drawn as line drawings (clipkit.world.drawings)."""

    name: str = "shapes-clip"
    model_cfg: dict = field(default_factory=lambda: json.loads(json.dumps(SHAPES_CLIP_CFG)))
    steps: int = 400
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 40
    seed: int = 0
    pool_size: int = 16000
    object_probs: tuple[float, ...] = (0.35, 0.35, 0.2, 0.1)
    render_range: tuple[int, int] = (96, 160)
    threads: int = 2
    max_minutes: float | None = None
    drawings: float = 0.0
    pairs: bool = False  # every scene also drawn as a line drawing of the same layout (ScenePool.pair_images)


def start_run(cfg: PoolRunConfig) -> tuple[torch.nn.Module, Any]:
    """A fresh open_clip model of ``cfg.model_cfg`` (registered as ``cfg.name``) and its tokenizer, after seeding
    torch with ``cfg.seed`` and setting ``cfg.threads`` (so the initialisation is the run's)."""
    import open_clip

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    register_model_config(cfg.name, cfg.model_cfg)
    return open_clip.create_model(cfg.name), open_clip.get_tokenizer(cfg.name)


def draw_pool(cfg: PoolRunConfig) -> ScenePool:
    """The run's pool: ``cfg.pool_size`` scenes of stream ``cfg.seed`` at the model's input size."""
    return ScenePool(PoolConfig(n=cfg.pool_size, seed=cfg.seed, image_size=cfg.model_cfg["vision_cfg"]["image_size"],
                                render_range=cfg.render_range, object_probs=cfg.object_probs,
                                drawings=cfg.drawings, pairs=cfg.pairs))


@dataclass
class TrainClipConfig(PoolRunConfig):
    """Everything that determines a shapes-clip run (recorded in the model card). ``drawings`` (issue #18) so the
    model learns to name sketched shapes; CLI: `clipkit world train-clip --drawings F`."""

    mil_weight: float = 0.5
    mil_scale: float = 10.0
    word_weight: float = 0.5
    init: str | None = None  # hub folder to start from (same model_cfg), e.g. to continue a run
    # issue #17: chance that a caption names an object by its shape alone or its colour alone ("a circle",
    # "a red one"); 0 = captions as before. CLI: `clipkit world train-clip --partial-names P`.
    partial_names: float = 0.0
    # issue #18: weight of the photo–drawing activation loss (clipkit.training.pairs); > 0 draws the pairs.
    # CLI: `clipkit world train-clip --pair-weight W`.
    pair_weight: float = 0.0

    def __post_init__(self) -> None:
        self.pairs = self.pairs or self.pair_weight > 0


def train_clip(cfg: TrainClipConfig, *, quiet: bool = False, log: Callable[[str], None] | None = None,
               checkpoint: Callable[[torch.nn.Module, int], None] | None = None, checkpoint_every: int = 0):
    """Train an open_clip model on a shapes-world pool. Returns (model, tokenizer, LoopResult, pool seconds).

    ``checkpoint(model, step)`` is called every ``checkpoint_every`` steps (0 = never), e.g. to evaluate
    intermediate models.
    """
    log = log or (lambda s: None)
    model, tokenizer = start_run(cfg)
    if cfg.init:
        from safetensors.torch import load_file

        sd = load_file(str(Path(cfg.init) / "open_clip_model.safetensors"))
        model.load_state_dict({k: v.float() for k, v in sd.items()})
        log(f"initialised from {cfg.init}")
    t0 = time.perf_counter()
    pool = draw_pool(cfg)
    pool_s = time.perf_counter() - t0
    log(f"pool of {cfg.pool_size} scenes drawn in {pool_s:.0f}s")
    ds = SceneCaptionDataset(pool, seed=cfg.seed, p_partial=cfg.partial_names)

    def on_step(step: int, loss: float, lr: float) -> None:
        log(f"step {step} loss {loss:.4f} lr {lr:.2e} t {time.perf_counter() - t0:.0f}s")
        if checkpoint is not None and checkpoint_every and step and step % checkpoint_every == 0:
            checkpoint(model, step)
            model.train()

    it = batches(ds, cfg.batch_size, cfg.steps, seed=cfg.seed)
    from clipkit.world.data import WORDS
    from clipkit.world.scenes import CATEGORIES

    head = MilHead(len(CATEGORIES), len(WORDS), cfg.model_cfg["embed_dim"])
    loss_fn = clip_loss_fn(tokenizer, label_texts=list(CATEGORIES), mil_weight=cfg.mil_weight,
                           mil_scale=cfg.mil_scale, mil_head=head, word_weight=cfg.word_weight,
                           pair_weight=cfg.pair_weight)
    res = train_loop(model, it, loss_fn, steps=cfg.steps, lr=cfg.lr, extra_params=head.parameters(),
                     weight_decay=cfg.weight_decay, warmup=cfg.warmup,
                     max_seconds=cfg.max_minutes * 60 if cfg.max_minutes else None, quiet=quiet,
                     on_step=lambda s, loss, lr: on_step(s, loss, lr))
    return model, tokenizer, res, pool_s
