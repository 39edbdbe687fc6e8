"""Finish a trained shapes-world GroupViT: calibrate its background threshold, measure it, write its model card.

Calibration uses validation scenes (stream 2); the reported figures use held-out test scenes (stream 0, the
``clipkit world export`` default); training used stream 1. No stream's masks ever reach the training loss.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

VAL_SEED, TEST_SEED = 2, 0
VAL_N, TEST_N = 100, 200


def finish_model(folder: str | Path, *, command: str, evaluate: bool = True,
                 log: Callable[[str], None] = print, val_n: int = VAL_N, test_n: int = TEST_N) -> dict | None:
    """Write ``bg_thresh`` into clipkit.json, ``metrics.json`` and ``README.md``; returns the metrics (or None)."""
    from clipkit.groupvit.segment import OFFICIAL_BG_THRESH, OFFICIAL_TOPK
    from clipkit.groupvit.weights import load_groupvit
    from clipkit.training.groupvit_sweep import CALIBRATION_TOP_KS, miou_at, sweep_world

    folder = Path(folder)
    meta_path = folder / "clipkit.json"
    meta = json.loads(meta_path.read_text())
    metrics: dict[str, Any] | None = None
    if evaluate:
        model = load_groupvit(folder)
        templates = meta.get("templates") or ["{}"]
        log(f"calibrating the background threshold and image-level top-k on {val_n} validation scenes "
            f"(seed {VAL_SEED})")
        val = sweep_world(model, templates, seed=VAL_SEED, n=val_n, top_ks=CALIBRATION_TOP_KS)
        thresh, top_k = val["best_bg_thresh"], val["best_top_k"]
        log(f"bg_thresh {thresh}, top-k {top_k} (val mIoU {miou_at(val, thresh, top_k):.3f}); testing on "
            f"{test_n} held-out scenes (seed {TEST_SEED})")
        test = sweep_world(model, templates, seed=TEST_SEED, n=test_n, thresholds=(thresh, OFFICIAL_BG_THRESH),
                           top_ks=sorted({top_k, OFFICIAL_TOPK}))
        test["miou"] = miou_at(test, thresh, top_k)
        test["miou_official_0.95"] = miou_at(test, OFFICIAL_BG_THRESH, OFFICIAL_TOPK)
        test["miou_no_background"] = test["miou_no_background_by_top_k"][str(top_k)]
        metrics = {"bg_thresh": thresh, "top_k": top_k, "val": val, "test": test}
        meta["top_k"] = top_k
        meta["bg_thresh"] = thresh
        _write(meta_path, json.dumps(meta, indent=2) + "\n")
        _write(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    meta["command"] = command
    _write(meta_path, json.dumps(meta, indent=2) + "\n")
    _write(folder / "README.md", model_card(meta, metrics, command))
    return metrics


def _write(path: Path, text: str) -> None:
    from clipkit.writers import atomic_write_text

    atomic_write_text(path, text)


# Training-record fields written as flags whenever the record has them, then those written only when they differ
# from the trainer's default (older records lack some: they ran with the default).
_GIVEN_FLAGS = ("init_clip", "init", "image_size", "scene_size", "steps", "minutes", "batch_size", "lr", "scenes",
                "threads")
_CHANGED_FLAGS = ("freeze_stages", "seed", "keep_every", "group_loss", "group_flat")


def run_command(tr: dict) -> str:
    """The ``clipkit world train-groupvit`` command line of one training record (``clipkit.json`` → training)."""
    from dataclasses import fields

    from clipkit.training.groupvit import TrainOptions

    defaults = {f.name: f.default for f in fields(TrainOptions)}
    words = ["clipkit world train-groupvit", str(tr.get("out", "OUT"))]
    words += [f"--{k.replace('_', '-')} {tr[k]}" for k in _GIVEN_FLAGS if tr.get(k) is not None]
    words += [f"--{k.replace('_', '-')} {tr[k]}" for k in _CHANGED_FLAGS if tr.get(k, defaults[k]) != defaults[k]]
    if tr.get("freeze_grouping"):
        words.append("--freeze-grouping")
    return " ".join(words)


def _chain(meta: dict, command: str) -> list[str]:
    """Markdown lines: every run from the first to this one (``lineage`` + this run), with how each ended."""
    runs = [*meta.get("lineage", []), meta.get("training", {})]
    if len(runs) == 1:
        return ["```", command, "```"]
    lines = ["A chain of runs, each continuing from the previous one's folder (`--init`):", ""]
    for i, tr in enumerate(runs, start=1):
        done, steps = tr.get("steps_done", "?"), tr.get("steps", "?")
        end = f"{done} of {steps} scheduled steps"
        if isinstance(done, int) and isinstance(steps, int) and done < steps:
            timed_out = tr.get("seconds", 0) >= 0.99 * 60 * float(tr.get("minutes", 0) or 0)
            end += (" (time budget reached: the schedule followed elapsed time, so the step count depends on the "
                    "machine's load)" if timed_out else ": the checkpoint the next run starts from")
        note = f" (`--init`: {tr['init_note']})" if tr.get("init_note") else ""
        lines.append(f"{i}. `{run_command(tr)}` — {end}, {tr.get('seconds', 0) / 60:.0f} min{note}")
    return lines


def _origin(meta: dict) -> str:
    runs = [*meta.get("lineage", []), meta.get("training", {})]
    clip = next((r["init_clip"] for r in runs if r.get("init_clip")), None)
    if clip:
        return (f"warm-started from the open_clip model `{clip}` (patch embedding, stage-1 blocks, text tower; see "
                f"docs/group.md) and trained in {len(runs)} run{'s' if len(runs) > 1 else ''}")
    return "trained further from `" + runs[-1]["init"] + "`" if runs[-1].get("init") else "trained from scratch"


def _minutes(meta: dict) -> float:
    return sum(r.get("seconds", 0) for r in [*meta.get("lineage", []), meta.get("training", {})]) / 60


def _frozen_note(meta: dict) -> list[str]:
    tr = meta.get("training", {})
    lines = []
    if tr.get("freeze_grouping"):
        size = tr.get("config", {}).get("vision", {}).get("image_size")
        scenes = (f" on {tr['scene_size']} px scenes resized to it, as `clipkit group` resizes its input"
                  if tr.get("scene_size") and tr["scene_size"] != size else "")
        lines += [f"The last run froze everything the grouping depends on and trained, at {size} px{scenes}, only "
                  "what names the groups (`--freeze-grouping`, a deviation: continuing the full recipe made the",
                  "names better but the groups worse; see docs/group.md)."]
    if tr.get("group_flat"):
        lines += [f"It adds clipkit's unclaimed-group flatness term (`--group-flat {tr['group_flat']}`, not "
                  "official): groups that no noun of the caption claims get flat class scores, so the official",
                  "background rule removes them (GroupViT has no background class)."]
    return lines


def model_card(meta: dict, metrics: dict | None, command: str) -> str:
    """The README.md of a shapes-world GroupViT."""
    tr = meta.get("training", {})
    cfg = tr.get("config", {})
    v, t = cfg.get("vision", {}), cfg.get("text", {})
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: clipkit",
        "tags: [groupvit, zero-shot-segmentation, synthetic]",
        "---",
        "",
        "# shapes-groupvit",
        "",
        "A tiny GroupViT (Xu et al., CVPR 2022; architecture of NVlabs/GroupViT) " + _origin(meta) + " on the",
        "clipkit shapes world from **image–caption pairs only** (no masks, no boxes): image–text contrastive +",
        "multi-label contrastive loss (3 noun-phrase prompts per caption)"
        + (f", plus clipkit's group-level noun loss (weight {tr['group_loss']}; not in the official code: "
           "with the official losses alone our CPU-sized runs collapsed to 1-2 groups, see docs/group.md)."
           if tr.get("group_loss") else "."),
        *_frozen_note(meta),
        "Segmentation emerges from the grouping: `clipkit group` labels the final groups with text, as the",
        "official evaluation does.",
        "",
        "Stored in the Hugging Face port's layout (`config.json`, `model.safetensors`,",
        "`preprocessor_config.json`), so `transformers.GroupViTModel.from_pretrained` opens it too;",
        "`clipkit.json` holds the prompt templates, the calibrated background threshold and image-level top-k.",
        "",
        "## Reproduce",
        "",
        *_chain(meta, command),
        "",
        f"{'Last run' if meta.get('lineage') else 'Training'}: {tr.get('steps_done', '?')} steps of "
        f"{tr.get('batch_size', '?')} scenes in "
        f"{tr.get('seconds', 0) / 60:.1f} min on a shared 2-core CPU (wall clock; the schedule follows "
        f"`max(step/steps, elapsed/{tr.get('minutes', '?')} min)`), {tr.get('scenes', '?')} scenes of stream "
        f"{tr.get('seed', '?')}, AdamW lr {tr.get('lr', '?')} (warm-up {tr.get('warmup_steps', '?')} steps, "
        f"cosine), weight decay {tr.get('weight_decay', '?')}, gradient clip {tr.get('clip_grad', '?')}. "
        "With a time budget the number of steps depends on the machine's load; give `--steps N --minutes 1000` "
        "for a load-independent run.",
        "",
        "## Architecture",
        "",
        f"- image {v.get('image_size')} px, patch {v.get('patch_size')}, width {v.get('width')}, depths "
        f"{v.get('depths')}, heads {v.get('num_heads')}, MLP ratio {v.get('mlp_ratio')}",
        f"- group tokens {v.get('num_group_tokens')} -> output groups {v.get('num_output_groups')} "
        "(official: [64, 8, 0] -> [64, 8]; scaled down for a small patch grid)",
        "- hard Gumbel-softmax assignment with straight-through gradients (training), hard argmax (inference)",
        f"- text: causal transformer width {t.get('width')}, {t.get('layers')} layers, {t.get('heads')} heads, "
        f"MLP ratio {t.get('mlp_ratio', 4.0)}, {t.get('hidden_act', 'quick_gelu')}, context "
        f"{t.get('context_length')}, CLIP BPE; projection MLPs to {cfg.get('projection_dim')}-d",
        "",
    ]
    if metrics:
        test, val = metrics["test"], metrics["val"]
        top_k = metrics.get("top_k", 5)  # models calibrated before top-k was: the official 5
        lines += [
            "## Results (held-out scenes)",
            "",
            f"Test: {test['n_images']} scenes of stream {test['seed']} at {test['size']} px, all 48 category "
            f"names as labels, the official labelling rule (image-level top-k classes, background threshold) "
            f"with this model's calibrated top-k {top_k} and bg_thresh {metrics['bg_thresh']}.",
            "",
            "| metric | value |",
            "|---|---|",
            f"| mIoU (background included), top-k {top_k}, bg_thresh {metrics['bg_thresh']} | {test['miou']:.3f} |",
            f"| mIoU with the official top-5 and bg_thresh 0.95 | {test['miou_official_0.95']:.3f} |",
            f"| mIoU without background rule | {test['miou_no_background']:.3f} |",
            f"| stage-1 group purity | {test['purity']['stage1']:.3f} |",
            f"| stage-2 group purity | {test['purity']['stage2']:.3f} |",
            f"| groups used per image (stage 1 / 2) | {test['groups_used']['stage1']} / "
            f"{test['groups_used']['stage2']} |",
            "",
            f"The top-k and background threshold were chosen on {val['n_images']} validation scenes "
            f"(stream {val['seed']}), never on the test scenes.",
            "",
        ]
        if test["miou"] < 0.6:
            lines += [
                f"**Status: below the issue's target (mIoU 0.60): {test['miou']:.3f}.** docs/group.md and",
                "bench/results/group.md say where the rest is lost: mostly in the grouping itself, whose bound",
                "(each final group labelled by its majority ground-truth class) `bench/group_diagnose.py` measures.",
                "",
            ]
    lines += [
        "## Limits",
        "",
        f"Trained for {_minutes(meta):.0f} min of CPU wall clock on synthetic flat shapes: it knows 8 colours x 6 "
        "shapes and nothing else.",
        "Use it to test and demonstrate `clipkit group`, not on photographs.",
        "",
    ]
    return "\n".join(lines)
