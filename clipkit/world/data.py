"""In-memory pools of generated scenes as torch Datasets, reusable by every trainer of the shapes world.

Drawing a scene with PIL costs milliseconds, a training step on CPU needs hundreds of them, so trainers draw
a pool once (:class:`ScenePool`) and sample from it with cheap augmentations (flips, which also flip the
relation words of the caption). Items are dicts of tensors:

    "image":     float32 [3, S, S], normalised with the model's mean/std
    "label_map": int64 [S, S], 0 = background, k = category id k (clipkit.world.CATEGORIES[k - 1])
    "caption":   str, e.g. "a red circle left of a blue star" or "red circle and blue star"
    "key":       int, equal for scenes showing the same *set* of categories (multi-positive targets)
    "labels":    float32 [C], multi-hot over CATEGORIES of the objects the caption names
    "words":     float32 [14], multi-hot over WORDS (colour and shape words) of the objects shown
    "content":   tuple of (colour | None, shape) per object as a viewer sees it (colour None: black ink)
    "named":     tuple of (colour | None, shape | None) per object as the caption names it (partial names)
    "pair":      float32 [3, S, S], only with ``PoolConfig.pairs``: the same scene, same flips, as a line drawing
    "scribble":  float32 [3, S, S], only with ``PoolConfig.pairs``: scribbles over the same objects, same flips
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from clipkit.world.drawings import scribble_objects
from clipkit.world.scenes import CATEGORIES, COLOURS, SHAPES, SceneConfig, generate_scene

WORDS: tuple[str, ...] = (*COLOURS, *SHAPES)  # the caption's content words, for word-level targets
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_FLIP_H = {"left of": "right of", "right of": "left of"}
_FLIP_V = {"above": "below", "below": "above"}


PRONOUNS: tuple[str, ...] = ("one", "shape", "object")  # the head of a colour-only name: "a red one"


def parse_name(name: str) -> tuple[str | None, str | None]:
    """``"red circle"`` → ("red", "circle"), ``"star"`` → (None, "star"), ``"red one"`` → ("red", None)."""
    words = name.split()
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    return colour, shape


def partial_names(names: Sequence[str], rng: np.random.Generator, p_partial: float) -> list[str]:
    """Each name kept whole, or with ``p_partial`` cut to its shape ("circle") or its colour ("red one", "red
    shape", "red object"), half and half, so the model learns to ground a shape alone and a colour alone
    (issue #17). Names without a colour (black-ink drawings) stay as they are."""
    out = []
    for name in names:
        colour, shape = parse_name(name)
        if colour is None or shape is None or rng.random() >= p_partial:
            out.append(name)
        elif rng.random() < 0.5:
            out.append(shape)
        else:
            out.append(f"{colour} {PRONOUNS[int(rng.integers(len(PRONOUNS)))]}")
    return out


def satisfies(content: Sequence[tuple[str | None, str]], named: Sequence[tuple[str | None, str | None]]) -> bool:
    """Does a scene showing ``content`` fit a caption naming ``named`` (every object named once)? True when the
    counts are equal and the names can be matched one-to-one to objects, a missing word matching anything
    ("circle" fits a red circle; "red one" fits any red object; "a red circle" does not fit a black-ink
    circle)."""
    if len(content) != len(named):
        return False
    return any(all((c is None or c == oc) and (s is None or s == os_) for (c, s), (oc, os_) in zip(named, perm,
                                                                                                   strict=True))
               for perm in itertools.permutations(content))


def positives(content: Sequence, named: Sequence) -> torch.Tensor:
    """bool [B, B]: ``[i, j]`` = scene i fits caption j (:func:`satisfies`); the diagonal is always True."""
    return torch.tensor([[satisfies(c, n) for n in named] for c in content], dtype=torch.bool)


def _with_article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def caption_text(names: Sequence[str], relation: tuple[int, str, int] | None, rng: np.random.Generator,
                 *, p_article: float = 0.5, p_relation: float = 0.7) -> str:
    """A caption for ``names``: random article style and order; the relation (if any) with p_relation.

    Bare style ("red circle and blue star") matches zero-shot labels under the "none" template set; the
    article style matches exported captions ("a red circle left of a blue star").
    """
    art = rng.random() < p_article
    fmt = _with_article if art else (lambda s: s)
    if relation is not None and rng.random() < p_relation:
        i, rel, j = relation
        return f"{fmt(names[i])} {rel} {fmt(names[j])}"
    order = rng.permutation(len(names))
    parts = [fmt(names[k]) for k in order]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@dataclass
class PoolConfig:
    """What a pool holds: ``n`` scenes of stream ``seed`` drawn at a random side in ``render_range`` and
    resized to ``image_size`` (bicubic, like open_clip's eval transform); ``object_probs[k-1]`` = P(k
    objects)."""

    n: int = 12000
    seed: int = 0
    image_size: int = 96
    render_range: tuple[int, int] = (96, 160)
    object_probs: tuple[float, ...] = (0.35, 0.35, 0.2, 0.1)
    # opt-in (issue #18): this fraction of the scenes is rendered as line drawings (clipkit.world.drawings),
    # captioned by what they show ("a star" for black ink); 0 keeps the pool exactly as before
    drawings: float = 0.0
    # opt-in (issue #18): every scene also as a line drawing of the same layout (``pair_images``) and as
    # scribbles over its objects (``scribble_images``), so a trainer can ask a drawing's activations to equal its
    # photo's and a scribble's not to (what CLIPasso's geometric loss assumes of CLIP)
    pairs: bool = False


class ScenePool:
    """``n`` pre-drawn scenes held as uint8 arrays: images [n, S, S, 3], label maps [n, S, S], plus names
    and relations. Scene i is ``generate_scene(seed, i, ...)``: pools are reproducible, disjoint across seeds.
    With ``cfg.drawings`` > 0, ``drawn`` bool [n] marks the scenes rendered as line drawings; their ``names``
    are the captioned ones (shape alone for black ink), their label maps still hold the objects' categories.
    With ``cfg.pairs``, ``pair_images`` [n, S, S, 3] holds each scene as a line drawing of the same layout (a
    drawn scene is its own pair) and ``scribble_images`` [n, S, S, 3] scribbles over its objects
    (:func:`clipkit.world.drawings.scribble_objects`).
    """

    def __init__(self, cfg: PoolConfig, progress=None) -> None:
        self.cfg = cfg
        s = cfg.image_size
        self.images = np.zeros((cfg.n, s, s, 3), np.uint8)
        self.label_maps = np.zeros((cfg.n, s, s), np.uint8)
        self.names: list[list[str]] = []
        self.relations: list[tuple[int, str, int] | None] = []
        rng = np.random.default_rng([cfg.seed, 0xC0])
        probs = np.asarray(cfg.object_probs, float) / sum(cfg.object_probs)
        counts = rng.choice(np.arange(1, len(probs) + 1), size=cfg.n, p=probs)
        sides = rng.integers(cfg.render_range[0], cfg.render_range[1] + 1, size=cfg.n)
        self.pair_images = np.zeros((cfg.n, s, s, 3), np.uint8) if cfg.pairs else None
        self.scribble_images = np.zeros((cfg.n, s, s, 3), np.uint8) if cfg.pairs else None
        self.drawn = np.zeros(cfg.n, bool)
        if cfg.drawings > 0:  # its own stream, so the photo scenes' draws above stay as they were
            self.drawn = np.random.default_rng([cfg.seed, 0xD7]).random(cfg.n) < cfg.drawings
        for i in range(cfg.n):
            side = int(sides[i])
            scene = generate_scene(cfg.seed, i, SceneConfig(size=(side, side), max_objects=8),
                                   n_objects=int(counts[i]), drawing=bool(self.drawn[i]))
            img, lm = scene.image, Image.fromarray(scene.label_map())
            pair = scribble = img
            if cfg.pairs:
                if not self.drawn[i]:
                    pair = generate_scene(cfg.seed, i, SceneConfig(size=(side, side), max_objects=8),
                                          n_objects=int(counts[i]), drawing=True).image
                scribble = scribble_objects([o.mask for o in scene.objects], np.random.default_rng([cfg.seed, i, 0x5C]))
            if side != s:
                img = img.resize((s, s), Image.Resampling.BICUBIC)
                lm = lm.resize((s, s), Image.Resampling.NEAREST)
                pair = pair.resize((s, s), Image.Resampling.BICUBIC)
                scribble = scribble.resize((s, s), Image.Resampling.BICUBIC)
            self.images[i] = np.asarray(img)
            if self.pair_images is not None:
                self.pair_images[i] = np.asarray(pair)
                self.scribble_images[i] = np.asarray(scribble)
            self.label_maps[i] = np.asarray(lm)
            self.names.append(scene.meta.get("names", scene.names))
            self.relations.append(scene.relation)
            if progress is not None:
                progress(1)
        keys: dict[tuple[str, ...], int] = {}
        self.keys = np.array([keys.setdefault(tuple(sorted(n)), len(keys)) for n in self.names], np.int64)

    def __len__(self) -> int:
        return self.cfg.n


class SceneCaptionDataset(Dataset):
    """Items from a :class:`ScenePool` with random flips (relations flipped to match) and caption styles.

    Deterministic: item ``i`` at epoch-free index uses its own RNG stream (seed, i), so a fixed sampler order
    gives a fixed run.
    """

    def __init__(self, pool: ScenePool, *, mean=OPENAI_MEAN, std=OPENAI_STD, flips: bool = True,
                 seed: int = 0, p_article: float = 0.5, p_relation: float = 0.7, p_partial: float = 0.0) -> None:
        self.pool = pool
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.flips = flips
        self.seed = seed
        self.p_article, self.p_relation = p_article, p_relation
        # issue #17: the chance that a caption names an object by shape alone or colour alone; 0 keeps the
        # captions (and every random draw) of the runs before it
        self.p_partial = p_partial

    def __len__(self) -> int:
        return len(self.pool)

    def item(self, i: int, draw: int = 0) -> dict:
        """Scene ``i`` (mod pool size) augmented with RNG stream (seed, i, draw)."""
        rng = np.random.default_rng([self.seed, i, draw])
        j = i % len(self.pool)
        img = torch.from_numpy(self.pool.images[j]).permute(2, 0, 1)
        lm = torch.from_numpy(self.pool.label_maps[j].astype(np.int64))
        extra = {}  # the scene's line drawing and scribbles, flipped with it
        if self.pool.pair_images is not None:
            extra = {"pair": torch.from_numpy(self.pool.pair_images[j]).permute(2, 0, 1),
                     "scribble": torch.from_numpy(self.pool.scribble_images[j]).permute(2, 0, 1)}
        rel = self.pool.relations[j]
        for dim, swap in ((-1, _FLIP_H), (-2, _FLIP_V)):
            if self.flips and rng.random() < 0.5:
                img, lm = img.flip(dim), lm.flip(dim)
                extra = {k: v.flip(dim) for k, v in extra.items()}
                rel = None if rel is None else (rel[0], swap.get(rel[1], rel[1]), rel[2])
        x = (img.float() / 255.0 - self.mean) / self.std
        names = self.pool.names[j]
        said = names
        if self.p_partial > 0:  # its own stream: the flips, articles and relations above stay as they were
            said = partial_names(names, np.random.default_rng([self.seed, i, draw, 0x9A]), self.p_partial)
        cap = caption_text(said, rel, rng, p_article=self.p_article, p_relation=self.p_relation)
        labels = torch.zeros(len(CATEGORIES))
        labels[[CATEGORIES.index(n) for n in self.pool.names[j] if n in CATEGORIES]] = 1.0
        words = torch.zeros(len(WORDS))
        words[[WORDS.index(w) for n in self.pool.names[j] for w in n.split()]] = 1.0
        content = tuple((c, sh) for c, sh in map(parse_name, names))
        item = {"image": x, "label_map": lm, "caption": cap, "key": int(self.pool.keys[j]), "labels": labels,
                "words": words, "content": content, "named": tuple(parse_name(n) for n in said)}
        item.update({k: (v.float() / 255.0 - self.mean) / self.std for k, v in extra.items()})
        return item

    def __getitem__(self, i: int) -> dict:
        return self.item(i)


def collate(items: list[dict]) -> dict:
    """Stack tensors, keep captions as a list of str, keys as int64 [B], labels/words float32 [B, C];
    ``positives`` bool [B, B] (scene i fits caption j, :func:`positives`)."""
    out = {"image": torch.stack([it["image"] for it in items]),
            "label_map": torch.stack([it["label_map"] for it in items]),
            "caption": [it["caption"] for it in items],
            "key": torch.tensor([it["key"] for it in items], dtype=torch.int64),
            "labels": torch.stack([it["labels"] for it in items]),
            "words": torch.stack([it["words"] for it in items]),
            "positives": positives([it["content"] for it in items], [it["named"] for it in items])}
    for k in ("pair", "scribble"):
        if k in items[0]:
            out[k] = torch.stack([it[k] for it in items])
    return out


def batches(dataset: SceneCaptionDataset, batch_size: int, steps: int, seed: int = 0):
    """Yield ``steps`` collated batches; sampling order from a seeded permutation stream (deterministic)."""
    rng = np.random.default_rng([seed, 0xBA7C])
    n = len(dataset)
    order = rng.permutation(n)
    pos, epoch = 0, 0
    for _ in range(steps):
        idx = []
        while len(idx) < batch_size:
            if pos == n:
                order, pos, epoch = rng.permutation(n), 0, epoch + 1
            idx.append(int(order[pos]))
            pos += 1
        yield collate([dataset.item(i, epoch) for i in idx])
