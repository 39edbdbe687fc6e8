"""Plant one-line bugs, one at a time, in a throw-away copy of the tree and check the given tests catch each.

    PYTHONPATH=. python bench/golden/plant_bugs.py [--only SUBSTRING] [--keep /tmp/plant]

Each bug is ``(name, file, old, new, tests)``: ``old`` must occur exactly once in ``file``. The copy (``clipkit/``
and ``tests/`` only) lives in a temporary folder; the working tree is never touched. Prints a Markdown table
(bug, tests run, caught?) for bench/results/mutation.md and exits 1 if any bug survives.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GD = "tests/test_golden_dense.py"
GG = "tests/test_golden_groupvit.py"
GP = "tests/test_groupvit_parity.py"
CD = "tests/test_constants_detect.py"
CG = "tests/test_constants_ground.py"
CS = "tests/test_constants_sketch.py"
CGR = "tests/test_constants_group.py"

BUGS: list[tuple[str, str, str, str, str]] = [
    # dense variants (clipkit/dense.py)
    ("sclip: q·kᵀ instead of k·kᵀ", "clipkit/dense.py",
     "weights + (k @ k.transpose(-2, -1) * scale)", "weights + (q @ k.transpose(-2, -1) * scale)", GD),
    ("sclip: second softmax term dropped", "clipkit/dense.py",
     "weights = weights + (k @ k.transpose(-2, -1) * scale).softmax(-1)", "weights = weights", GD),
    ("clearclip: k·kᵀ instead of q·qᵀ", "clipkit/dense.py",
     "            weights = (q @ q.transpose(-2, -1) * scale).softmax(-1)\n        elif variant == \"naclip\"",
     "            weights = (k @ k.transpose(-2, -1) * scale).softmax(-1)\n        elif variant == \"naclip\"", GD),
    ("naclip: Gaussian prior missing", "clipkit/dense.py",
     "weights = (k @ k.transpose(-2, -1) * scale + prior).softmax(-1)",
     "weights = (k @ k.transpose(-2, -1) * scale).softmax(-1)", GD),
    ("naclip: σ = 3 instead of 5", "clipkit/dense.py", "NACLIP_SIGMA = 5.0", "NACLIP_SIGMA = 3.0", GD),
    ("naclip: prior exp(-d/2σ²) (distance not squared)", "clipkit/dense.py",
     "d2 = torch.cdist(pts, pts).pow(2)", "d2 = torch.cdist(pts, pts)", GD),
    ("naclip: residual kept", "clipkit/dense.py",
     'if variant in ("clearclip", "naclip"):', 'if variant in ("clearclip",):', GD),
    ("clearclip: FFN kept", "clipkit/dense.py",
     'if variant in ("clearclip", "naclip"):', 'if variant in ("naclip",):', GD),
    ("maskclip: value path through q", "clipkit/dense.py",
     "out = attn.out_proj(v)  # every", "out = attn.out_proj(q)  # every", GD),
    ("maskclip: out_proj skipped", "clipkit/dense.py",
     "out = attn.out_proj(v)  # every", "out = v  # every", GD),
    ("all: attention scale 1/d instead of 1/√d", "clipkit/dense.py", "scale = hd**-0.5", "scale = hd**-1.0", GD),
    ("all: ln_1 skipped in the last block", "clipkit/dense.py", "y = blk.ln_1(x)", "y = x", GD),
    # GroupViT weights mapping (clipkit/groupvit/weights.py) and layers (clipkit/groupvit/layers.py)
    ("groupvit: embeddings/final LayerNorm mapping swapped", "clipkit/groupvit/weights.py",
     '"img_encoder.patch_embed.norm."),\n    (r"^vision_model\\.layernorm\\.", "img_encoder.norm."),',
     '"img_encoder.norm."),\n    (r"^vision_model\\.layernorm\\.", "img_encoder.patch_embed.norm."),', GP),
    ("groupvit: q/k/v bias fused in k, q, v order", "clipkit/groupvit/weights.py",
     'out[target] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)',
     'out[target] = torch.cat([parts[c] for c in ("qkv" if target.endswith("weight") else "kqv")], dim=0)', GP),
    ("groupvit: assignment softmax over tokens, not groups", "clipkit/groupvit/layers.py",
     "soft = raw.softmax(dim=-2)", "soft = raw.softmax(dim=-1)", GP),
    ("groupvit: assign_eps dropped", "clipkit/groupvit/layers.py",
     "attn = attn / (attn.sum(dim=-1, keepdim=True) + self.assign_eps)",
     "attn = attn / attn.sum(dim=-1, keepdim=True)", GP),
    ("groupvit: group-token residual dropped", "clipkit/groupvit/layers.py",
     "new_x = new_x + projected", "new_x = new_x", GP),
    ("groupvit: norm_post_tokens skipped", "clipkit/groupvit/layers.py",
     "self.pre_assign_attn(self.norm_post_tokens(projected), x)", "self.pre_assign_attn(projected, x)", GP),
    ("groupvit: assignment softmax over tokens (vs NVlabs)", "clipkit/groupvit/layers.py",
     "soft = raw.softmax(dim=-2)", "soft = raw.softmax(dim=-1)", GG),
    ("groupvit: group-token residual dropped (vs NVlabs)", "clipkit/groupvit/layers.py",
     "new_x = new_x + projected", "new_x = new_x", GG),
    ("groupvit: projector 1x1 conv not squeezed (NVlabs names)", "clipkit/groupvit/weights.py",
     "value = value[..., 0]", "value = value", GG),
    # GroupViT segmentation rule (clipkit/groupvit/segment.py)
    ("group seg: image-level top-5 → top-3", "clipkit/groupvit/segment.py",
     "OFFICIAL_TOPK = 5", "OFFICIAL_TOPK = 3", GG),
    ("group seg: product with the unmasked softmax dropped", "clipkit/groupvit/segment.py",
     'group_aff = affinity.masked_fill(~keep, float("-inf")).softmax(dim=-1) * pre',
     'group_aff = affinity.masked_fill(~keep, float("-inf")).softmax(dim=-1)', GG),
    ("group seg: stage maps not chained (last stage alone)", "clipkit/groupvit/segment.py",
     "acc = a if acc is None else acc @ a", "acc = a if acc is None else a", GG),
    ("group seg: logit scale not clamped at 100", "clipkit/groupvit/model.py",
     "exp().clamp(max=100.0)", "exp()", GG),
    ("group seg: background threshold 0.95 → 0.9 (constants)", "clipkit/groupvit/segment.py",
     "OFFICIAL_BG_THRESH = 0.95", "OFFICIAL_BG_THRESH = 0.9", CGR),
    ("group seg: image-level top-5 → top-6 (constants)", "clipkit/groupvit/segment.py",
     "OFFICIAL_TOPK = 5", "OFFICIAL_TOPK = 6", CGR),
    # ViLD (clipkit/methods/detect.py)
    ("detect: temperature 100 → 50", "clipkit/methods/detect.py",
     "temperature: float | None = 100.0", "temperature: float | None = 50.0", CD),
    ("detect: ensemble exponents swapped", "clipkit/methods/detect.py",
     "probs.pow(lam) * p_fast.pow(1.0 - lam)", "probs.pow(1.0 - lam) * p_fast.pow(lam)", CD),
    ("detect: ensemble λ = 1/2", "clipkit/methods/detect.py",
     "ensemble_weight: float = 2 / 3", "ensemble_weight: float = 1 / 2", CD),
    ("detect: NMS IoU 0.5 → 0.7", "clipkit/methods/detect.py", "nms_iou: float = 0.5", "nms_iou: float = 0.7", CD),
    ("detect: class-agnostic NMS", "clipkit/methods/detect.py",
     "keep = batched_nms(b, scores, cls_idx, cfg.nms_iou)", "keep = batched_nms(b, scores, cls_idx * 0, cfg.nms_iou)",
     CD),
    ("detect: score threshold 0.3 → 0.25", "clipkit/methods/detect.py",
     "score_threshold: float = 0.3", "score_threshold: float = 0.25", CD),
    # ReCLIP (clipkit/methods/ground.py)
    ("ground: blur radius 100 → 50", "clipkit/methods/ground.py",
     "blur_radius: float = 100.0", "blur_radius: float = 50.0", CG),
    ("ground: radius not scaled by the smaller side ratio", "clipkit/methods/ground.py",
     "radius = blur_radius * min(w / image.width, h / image.height)",
     "radius = blur_radius * max(w / image.width, h / image.height)", CG),
    ("ground: context view replaced by the whole image", "clipkit/methods/ground.py",
     "return mask * x + (1 - mask) * base", "return x.expand(len(b), -1, -1, -1)", CG),
    ("ground: mean logit not divided by the number of representations", "clipkit/methods/ground.py",
     "probs = (logits / len(reps)).softmax(-1)", "probs = logits.softmax(-1)", CG),
    ("ground: no context view by default", "clipkit/methods/ground.py",
     'context: str = "blur"', 'context: str = "none"', CG),
    # CLIPasso (clipkit/clipasso/loss.py)
    ("sketch: fc weight 0.1 → 0.2", "clipkit/clipasso/loss.py",
     "FC_LOSS_WEIGHT = 0.1 ", "FC_LOSS_WEIGHT = 0.2 ", CS),
    ("sketch: conv layers 1,2 instead of 2,3", "clipkit/clipasso/loss.py",
     "CONV_LAYER_WEIGHTS = (0.0, 0.0, 1.0, 1.0, 0.0)", "CONV_LAYER_WEIGHTS = (0.0, 1.0, 1.0, 0.0, 0.0)", CS),
    ("sketch: 3 augmentations instead of 4", "clipkit/clipasso/loss.py", "NUM_AUGS = 4 ", "NUM_AUGS = 3 ", CS),
    ("sketch: distortion 0.5 → 0.4", "clipkit/clipasso/loss.py", "DISTORTION = 0.5 ", "DISTORTION = 0.4 ", CS),
    ("sketch: crop scale 0.8 → 0.9", "clipkit/clipasso/loss.py", "CROP_SCALE = 0.8 ", "CROP_SCALE = 0.9 ", CS),
]


def run(bug, keep: Path | None) -> bool:
    name, file, old, new, tests = bug
    tmp = Path(keep or tempfile.mkdtemp(prefix="clipkit-plant-"))
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for d in ("clipkit", "tests"):
        shutil.copytree(ROOT / d, tmp / d, ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp / file
    text = path.read_text()
    assert text.count(old) == 1, f"{name}: {old!r} occurs {text.count(old)} times in {file}"
    path.write_text(text.replace(old, new))
    env = {**os.environ, "PYTHONPATH": str(tmp)}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests.split()],
                         cwd=tmp, env=env, capture_output=True, text=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return res.returncode != 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="run the bugs whose name contains this")
    ap.add_argument("--keep", type=Path, default=None, help="folder for the copy (default: a temporary one)")
    args = ap.parse_args(argv)
    survived = 0
    print("| planted bug | file | tests | caught |\n|---|---|---|---|")
    for bug in BUGS:
        if args.only and args.only not in bug[0]:
            continue
        caught = run(bug, args.keep)
        survived += not caught
        print(f"| {bug[0]} | `{bug[1]}` | `{bug[4]}` | {'yes' if caught else '**NO**'} |", flush=True)
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
