"""Train a tiny GroupViT on shapes-world image–caption pairs (no masks, no boxes): ``clipkit world train-groupvit``.

Recipe (NVlabs/GroupViT ``configs/default.yml`` + ``group_vit_gcc_yfcc_30e.yml``, scaled down): AdamW
(betas 0.9/0.999, weight decay 0.05), linear warm-up then cosine decay to ``min_lr``, gradient clipping at 5.0;
loss = image–text contrastive + multi-label contrastive with ``multi_label`` = 3 prompts per image, each a random
template filled with one noun phrase of the caption (the official ``WordAugTokenizeWrapper``, word_type
``noun_phrase``), padded with the caption itself when the caption names fewer objects.

Addition (``group_loss``, default weight 1; 0 = the official losses only): clipkit's group-level noun loss
(:func:`clipkit.training.groupvit_losses.group_noun_contrastive`): each noun prompt must be picked out by the image's
best-matching final group, against all other nouns including those of the same image. With the official losses
alone, our CPU-sized runs collapsed to one or two groups (stage-2 assignment independent of the image; measured
in docs/group.md); the extra term still uses captions only.

Optional warm start (``init_clip``, ``--init-clip shapes-clip``; off by default, not in the official recipe,
which trains from scratch): before training, :func:`clipkit.training.groupvit_clip_init.init_from_clip` copies an
open_clip ViT's patch conv, positions (CLS row dropped), ``ln_pre`` (fitted to GroupViT's LayerNorm-before-
positions embedding on ``calib_images`` training images), its first ``depths[0]`` blocks into stage 1 and its
whole text tower (``tiny_config``'s text tower is shapes-clip's); projection heads, group tokens, grouping blocks
and later stages stay at random init. ``image_mean/std`` become the source's. The report goes to the log and to
``clipkit.json`` (``warm_start``).

Continued runs (``init``): ``image_size`` resizes the position grid (:mod:`clipkit.training.groupvit_phases`);
``scene_size`` generates the scenes at another size and resizes every batch to ``image_size`` (PIL bicubic, as
inference resizes a picture); ``freeze_grouping`` trains only what names the groups, with the grouping stages in
eval mode, ``freeze_stages`` = K freezes only the first K stages (the later ones regroup); ``group_flat``
adds :func:`clipkit.training.groupvit_losses.unclaimed_group_flatness` (flat noun scores for groups no noun claims).
Each run's ``clipkit.json`` carries the records of the runs it continues (``lineage``).

Deviations (documented in docs/group.md): the noun phrases are the world's object names ("red circle") read from
the scene instead of an NLTK chunker (NLTK's tagger data cannot be downloaded here); augmentation is a horizontal
flip (the caption's "left of"/"right of" swapped) instead of RandAugment + random resized crops; one process,
small batches; the learning-rate schedule runs on ``max(step / steps, elapsed / time budget)`` so a run cut by
its time budget still ends annealed. Only the shapes world's *captions* supervise the model; masks are used
afterwards to measure it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from clipkit.groupvit.config import GroupViTConfig, TextConfig, VisionConfig
from clipkit.groupvit.model import GroupViT
from clipkit.groupvit.text import tokenize
from clipkit.groupvit.weights import save_hf_dir
from clipkit.training.groupvit_losses import (
    group_noun_contrastive,
    image_text_contrastive,
    multi_label_contrastive,
    unclaimed_group_flatness,
)
from clipkit.training.groupvit_phases import freeze_grouping, grouping_eval_mode, set_image_size

# Prompt templates for the multi-label noun prompts (and the label ensemble at inference).
TEMPLATES: tuple[str, ...] = ("{}", "a {}", "a photo of a {}.", "a picture of a {}.")


def tiny_config(image_size: int = 96) -> GroupViTConfig:
    """The shapes-groupvit architecture: two grouping stages (32 -> 8 groups) over 12x12 patches of 8 px.

    The text tower matches shapes-clip's (heads 4, MLP 2 x 64, GELU); the shipped shapes-groupvit predates that
    (heads 2, MLP 256, QuickGELU) and keeps loading from its own config.json."""
    return GroupViTConfig(
        vision=VisionConfig(image_size=image_size, patch_size=8, width=96, depths=(2, 2, 1), num_heads=(3, 3, 3),
                            num_group_tokens=(32, 8, 0), num_output_groups=(32, 8), mlp_ratio=2.0,
                            drop_path_rate=0.0),
        # = shapes-clip's text tower (4 heads, MLP 128, exact GELU), so --init-clip copies it exactly
        text=TextConfig(context_length=32, width=64, layers=2, heads=4, mlp_ratio=2.0, hidden_act="gelu"),
        projection_dim=64,
        projection_inner_dim=256,
        multi_label=3,
    )


@dataclass
class TrainOptions:
    """Everything that determines a training run (written to the model card)."""

    out: str = "runs/shapes-groupvit"
    scenes: int = 16000
    seed: int = 1  # scene stream of the training set; `clipkit world export` defaults to seed 0 (held out)
    image_size: int | None = None  # training resolution (None: 96 for a new model, the --init model's own)
    batch_size: int = 64
    steps: int = 2000
    minutes: float = 20.0
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    clip_grad: float = 5.0
    threads: int = 2
    log_every: int = 25
    save_every: int = 250
    keep_every: int = 0  # also keep a copy every this many steps in OUT/ckpt-NNNNNN (0 = none)
    torch_seed: int = 0
    group_loss: float = 1.0  # weight of clipkit's group-level noun loss (0 = the official losses only)
    group_flat: float = 0.0  # weight of losses.unclaimed_group_flatness (0 = off)
    multi_label: int = 3  # noun prompts per image for the multi-label loss (official gcc_yfcc config: 3)
    init: str | None = None  # continue from this GroupViT folder instead of random weights
    freeze_grouping: bool = False  # train only what cannot move the assignment maps (freeze_grouping())
    freeze_stages: int = 0  # freeze only the first K stages' assignment maps (0 = see freeze_grouping)
    scene_size: int | None = None  # generate scenes at this size, resized per batch to the model's (bicubic)
    init_clip: str | None = None  # warm start from an open_clip hub folder or "shapes-clip" (clip_init.py)
    calib_images: int = 256  # training images used to fit the warm start's patch-embedding scalars
    config: dict = field(default_factory=dict)


def _scenes(n: int, seed: int, size: int, log: Callable[[str], None]) -> tuple[np.ndarray, list[str], list[list[str]]]:
    """Pre-generate ``n`` scenes: uint8 ``[n, size, size, 3]``, captions, object names per scene."""
    from clipkit.world import SceneConfig, generate

    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions, names = [], []
    t0 = time.time()
    for i, scene in enumerate(generate(n, seed=seed, config=SceneConfig(size=(size, size)))):
        images[i] = np.asarray(scene.image)
        captions.append(scene.caption)
        names.append(scene.names)
        if (i + 1) % 4000 == 0:
            log(f"generated {i + 1}/{n} scenes ({time.time() - t0:.0f} s)")
    return images, captions, names


def _batch(images: np.ndarray, idx: list[int], size: int) -> torch.Tensor:
    """``[B, 3, size, size]`` float32 in [0, 1]; scenes of another size are resized as inference's
    ``preprocess`` resizes a picture (PIL bicubic), so training at 352 px on 224 px scenes sees what
    inference at 352 px sees."""
    if images.shape[1] != size:
        from PIL import Image

        rows = [np.asarray(Image.fromarray(images[i]).resize((size, size), Image.Resampling.BICUBIC)) for i in idx]
        return torch.from_numpy(np.stack(rows)).permute(0, 3, 1, 2).float() / 255.0
    return torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 255.0


def _flip_caption(caption: str) -> str:
    return caption.replace("left of", "\0").replace("right of", "left of").replace("\0", "right of")


def _texts(caption: str, names: list[str], k: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """([caption, k noun prompts], the k nouns with "" for padding) (the official multi-label augmentation)."""
    chosen = rng.sample(names, min(k, len(names)))
    prompts = [rng.choice(TEMPLATES).format(n) for n in chosen]
    pad = k - len(prompts)
    return [caption, *prompts, *[caption] * pad], [*chosen, *[""] * pad]


def _short_tokens(texts: list[str], context_length: int, vocab: CompactVocab | None) -> torch.Tensor:
    """Token ids cut after the batch's last EOT (the causal mask makes the padding irrelevant, so this only
    saves compute), remapped to the compact vocabulary when one is given."""
    tokens = tokenize(texts, context_length)
    tokens = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
    return vocab(tokens) if vocab is not None else tokens


def _encode_texts(model: GroupViT, texts: list[list[str]], vocab: CompactVocab | None = None) -> torch.Tensor:
    """``[B, 1 + K, D]`` projected features of [caption, K prompts] per image. Captions and the (short) prompts
    go through the transformer separately (less padding) and through the projection head together, so its
    BatchNorm sees one batch of all B(1+K) texts as in the official code."""
    b, n = len(texts), len(texts[0])
    ctx = model.cfg.text.context_length
    caps = model.text_encoder(_short_tokens([t[0] for t in texts], ctx, vocab))
    if n == 1:
        return model.text_projector(caps).reshape(b, 1, -1)
    prompts = model.text_encoder(_short_tokens([p for t in texts for p in t[1:]], ctx, vocab))
    feats = torch.cat([caps.unsqueeze(1), prompts.reshape(b, n - 1, -1)], dim=1)
    return model.text_projector(feats.reshape(b * n, -1)).reshape(b, n, -1)


class CompactVocab:
    """Train the text tower on the few dozen token ids the world's texts use instead of all 49408 rows.

    Only speed changes: rows never looked up get no gradient anyway, but AdamW would still touch all of them
    every step. Ids map monotonically (the EOT token keeps the largest id, so EOT pooling by argmax still
    works). Use :meth:`full_table` around saving: it writes the trained rows into the full table.
    """

    def __init__(self, model: GroupViT, texts: list[str]) -> None:
        ctx = model.cfg.text.context_length
        chunks = [tokenize(texts[i : i + 512], ctx).flatten() for i in range(0, len(texts), 512)]
        self.ids = torch.unique(torch.cat(chunks))  # sorted
        self.lut = torch.zeros(model.cfg.text.vocab_size, dtype=torch.long)
        self.lut[self.ids] = torch.arange(len(self.ids))
        self.model = model
        self.full = model.text_encoder.token_embedding
        self.small = torch.nn.Embedding(len(self.ids), self.full.embedding_dim)
        with torch.no_grad():
            self.small.weight.copy_(self.full.weight[self.ids])
        model.text_encoder.token_embedding = self.small

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lut[tokens]

    @contextmanager
    def full_table(self) -> Iterator[None]:
        with torch.no_grad():
            self.full.weight[self.ids] = self.small.weight
        self.model.text_encoder.token_embedding = self.full
        try:
            yield
        finally:
            self.model.text_encoder.token_embedding = self.small


def _lr(opts: TrainOptions, step: int, progress: float) -> float:
    if step < opts.warmup_steps:
        return opts.lr * (step + 1) / opts.warmup_steps
    return opts.min_lr + 0.5 * (opts.lr - opts.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def train(opts: TrainOptions, log: Callable[[str], None] = print) -> Path:
    """Train and save to ``opts.out`` (Hugging Face layout + clipkit.json + train_log.jsonl); returns the folder."""
    torch.set_num_threads(max(1, opts.threads))
    torch.manual_seed(opts.torch_seed)
    rng = random.Random(opts.torch_seed)
    if opts.init and opts.init_clip:
        from clipkit.errors import UsageError

        raise UsageError("give either --init (a GroupViT folder) or --init-clip (an open_clip model), not both")
    lineage: list[dict] = []
    if opts.init:
        from clipkit.groupvit.weights import load_groupvit

        lineage = _lineage(Path(opts.init))
        model = load_groupvit(opts.init)
        cfg = model.cfg
        if opts.image_size and opts.image_size != cfg.vision.image_size:
            log(f"training at {opts.image_size} px: positions resized from {cfg.vision.image_size} px")
            set_image_size(model, opts.image_size)
    else:
        cfg = GroupViTConfig.from_dict(opts.config) if opts.config else tiny_config(opts.image_size or 96)
        model = GroupViT(cfg)
    cfg.multi_label = opts.multi_label
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    images, captions, names = _scenes(opts.scenes, opts.seed, opts.scene_size or cfg.vision.image_size, log)
    warm: dict | None = None
    if opts.init_clip:
        from clipkit.training.groupvit_clip_init import init_from_clip, summary

        calib = torch.from_numpy(images[: opts.calib_images]).permute(0, 3, 1, 2).float() / 255.0
        warm = init_from_clip(model, opts.init_clip, calib)  # also sets cfg.image_mean/std to the source's
        log(summary(warm))
    opts.config = cfg.to_dict()
    mean = torch.tensor(cfg.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.image_std).view(1, 3, 1, 1)

    model.train()
    frozen_stages = None if opts.freeze_grouping else (opts.freeze_stages or 0)
    if frozen_stages != 0:
        frozen = freeze_grouping(model, frozen_stages)
        grouping_eval_mode(model, frozen_stages)
        log(f"grouping frozen ({frozen_stages or 'all'} stages): {len(frozen)} image-encoder tensors")
    vocab_texts = [*captions, *[_flip_caption(c) for c in captions if "of" in c],
                   *[t.format(n) for names_i in names for n in names_i for t in TEMPLATES]]
    vocab = CompactVocab(model, sorted(set(vocab_texts)))
    log(f"text vocabulary: {len(vocab.ids)} token ids")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2 and "token" not in n and "pos_embed" not in n]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and "token" not in n and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": opts.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=opts.lr, betas=(0.9, 0.999), eps=1e-8)
    k = cfg.multi_label
    noun_index = {n: i for i, n in enumerate(sorted({n for row in names for n in row}))}
    budget = opts.minutes * 60.0
    t0 = time.time()
    order: list[int] = []
    log_path = out / "train_log.jsonl"
    log_file = log_path.open("w")
    step = 0
    try:
        while True:
            elapsed = time.time() - t0
            progress = max(step / opts.steps, elapsed / budget)
            if progress >= 1.0:
                break
            if len(order) < opts.batch_size:
                order += np.random.default_rng(opts.torch_seed + step).permutation(len(images)).tolist()
            idx, order = order[: opts.batch_size], order[opts.batch_size :]
            batch = _batch(images, idx, cfg.vision.image_size)
            flip = torch.rand(len(idx)) < 0.5
            batch[flip] = batch[flip].flip(-1)
            pixels = (batch - mean) / std
            texts: list[list[str]] = []
            nouns: list[list[str]] = []
            for j, i in enumerate(idx):
                cap = _flip_caption(captions[i]) if flip[j] else captions[i]
                t, n = _texts(cap, names[i], k, rng)
                texts.append(t)
                nouns.append(n)
            for group in opt.param_groups:
                group["lr"] = _lr(opts, step, progress)
            if frozen_stages != 0:
                grouping_eval_mode(model, frozen_stages)  # _save() puts the whole model back in train mode
            if opts.group_loss:
                image_x, group_x, vis = model.encode_image_groups(pixels)
            else:
                image_x = model.encode_image(pixels)
            text_x = _encode_texts(model, texts, vocab)
            itc = image_text_contrastive(image_x, text_x[:, 0], model.logit_scale)
            mlc = multi_label_contrastive(image_x, text_x[:, 1:], model.multi_label_logit_scale) if k else itc * 0
            loss = itc + mlc
            gnc = torch.zeros(())
            if opts.group_loss and k:
                ids = torch.tensor([[noun_index.get(n, -1) for n in row] for row in nouns])
                gnc = group_noun_contrastive(group_x, text_x[:, 1:], ids, model.multi_label_logit_scale)
                for tokens in vis.stage_tokens[:-1]:  # deep supervision of the earlier grouping stages
                    early = model.img_projector(model.img_encoder.norm(tokens))
                    gnc = gnc + group_noun_contrastive(early, text_x[:, 1:], ids, model.multi_label_logit_scale)
                loss = loss + opts.group_loss * gnc
                if opts.group_flat:
                    complete = torch.tensor([len(names[i]) <= k for i in idx])
                    loss = loss + opts.group_flat * unclaimed_group_flatness(group_x, text_x[:, 1:], ids, complete,
                                                                             model.logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), opts.clip_grad)
            opt.step()
            step += 1
            if step % opts.log_every == 0 or step == 1:
                rec = {"step": step, "loss": round(loss.item(), 4), "itc": round(itc.item(), 4),
                       "mlc": round(mlc.item(), 4), "gnc": round(gnc.item(), 4),
                       "lr": round(opt.param_groups[0]["lr"], 7),
                       "scale": round(model.logit_scale_value, 2), "seconds": round(time.time() - t0, 1)}
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
                log(json.dumps(rec))
            if step % opts.save_every == 0:
                _save(model, vocab, out, opts, step, time.time() - t0, warm, lineage)
            if opts.keep_every and step % opts.keep_every == 0:
                _save(model, vocab, out / f"ckpt-{step:06d}", opts, step, time.time() - t0, warm, lineage)
    finally:
        log_file.close()
    _save(model, vocab, out, opts, step, time.time() - t0, warm, lineage)
    log(f"trained {step} steps in {time.time() - t0:.0f} s -> {out}")
    return out


def _lineage(init: Path) -> list[dict]:
    """The runs that made the ``--init`` folder, oldest first: its own ``lineage`` plus its ``training`` record
    (config dropped), so a chain of continued runs stays reproducible from the last folder's clipkit.json."""
    meta_path = init / "clipkit.json"
    if not meta_path.is_file():
        return []
    meta = json.loads(meta_path.read_text())
    runs = list(meta.get("lineage", []))
    if "training" in meta:
        runs.append({k: v for k, v in meta["training"].items() if k != "config"})
    return runs


def _save(model: GroupViT, vocab: CompactVocab, out: Path, opts: TrainOptions, step: int, seconds: float,
          warm: dict | None = None, lineage: list[dict] | None = None) -> None:
    was_training = model.training
    model.eval()
    with vocab.full_table():
        save_hf_dir(model, out)
    meta_path = out / "clipkit.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.update({"kind": "groupvit", "templates": list(TEMPLATES), "default_templates": "none",
                 "training": {**asdict(opts), "steps_done": step, "seconds": round(seconds, 1)}})
    if lineage:
        meta["lineage"] = lineage
    if warm is not None:
        meta["warm_start"] = {key: warm[key] for key in ("source", "embedding", "left_at_init", "skipped")}
        meta["warm_start"]["copied"] = sorted(warm["copied"])
    tmp = out / "clipkit.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(meta_path)
    model.train(was_training)
