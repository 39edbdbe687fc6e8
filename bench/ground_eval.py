"""Accuracy of `clipkit ground` per expression type on held-out shapes-world scenes; calibration on validation.

    python bench/ground_eval.py [--model shapes-clip] [--n 100] [--seed 2026] [--repeat-prob 0.5]
                                [--configs "" "superlative_rule=count" ...]
    python bench/ground_eval.py --calibrate [--n 60] [--seed 77] [--write]

Evaluation exports ``--n`` scenes of stream ``--seed`` (disjoint from shapes-clip's training stream 0; with
``--repeat-prob`` > 0 objects repeat shapes and categories, so relations and superlatives have work to do) to
a temporary folder (or uses ``--data``) and runs ``clipkit.evaluation.grounding.evaluate_grounding`` once per
config (``key=value`` pairs separated by commas; empty = the defaults): one ground call per expression. Prints a
markdown table (accuracy@0.5 per type, absent answered empty, ms per expression) and writes the raw figures to
``--json``.

``--calibrate`` fits the softmax temperature and the no-object logit on validation scenes (with ``--split-expanded``
separately for phrases scored over several vocabulary names, "the circle", stored under ``expanded``)
(:func:`clipkit.reclip.fit_calibration`, in each no-object mode of :func:`clipkit.reclip.margins`: a constant logit,
the best background-prompt logit plus an offset, or per box the best competing vocabulary name plus an offset; the
lower NLL wins) and the per-box calibration (:func:`clipkit.reclip.fit_box_calibration`), prints the rates of
"answered" present and "answered empty" absent phrases per presence threshold (the stored threshold is 0.5, the
equal-cost decision for calibrated probabilities), and with ``--write`` stores them in the model folder's
``clipkit.json`` → ``ground_calibration``.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np


def parse_config(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def fit_group(samples: list, title: str) -> dict:
    """Calibration of one group of referents (mode by NLL, phrase and per-box fits); prints the threshold sweep."""
    from clipkit.reclip import MODES, fit_box_calibration, fit_calibration, margins, phrase_distribution

    shifted = {m: [(margins(lg, {"mode": m}, bg, comp), t, ious) for lg, bg, t, ious, comp, _ in samples]
               for m in MODES}
    fits = {m: fit_calibration([(x, t) for x, t, _ in shifted[m]]) for m in MODES}
    mode = min(fits, key=lambda m: fits[m]["nll"])
    fit = fits[mode]
    kept = [(x, t, ious) for x, t, ious in shifted[mode] if len(x)]
    box_fit = fit_box_calibration(np.concatenate([x for x, _, _ in kept]),
                                  np.concatenate([ious >= 0.5 for _, _, ious in kept]))
    pres = np.array([1 - phrase_distribution(x, fit["temperature"], fit["no_object_logit"])[1]
                     for x, _, _ in shifted[mode]])
    absent = np.array([t < 0 for _, t, _ in shifted[mode]])
    print(f"## {title}: {len(samples)} referents, {int(absent.sum())} absent")
    print(json.dumps({"fits": fits, "mode": mode, "box_fit": box_fit}, indent=1))
    print("| threshold | present answered | absent empty |\n|---|---|---|")
    for thr in (0.3, 0.5, 0.7, 0.8, 0.9):
        answered = float((pres[~absent] >= thr).mean()) if (~absent).any() else 0.0
        empty = float((pres[absent] < thr).mean()) if absent.any() else 0.0
        print(f"| {thr:.2f} | {answered:.3f} | {empty:.3f} |")
    return {"temperature": round(fit["temperature"], 4), "no_object_logit": round(fit["no_object_logit"], 4),
            "mode": mode, "box_temperature": round(box_fit["temperature"], 4),
            "box_no_object_logit": round(box_fit["no_object_logit"], 4)}


def calibrate(model, data, args) -> dict:
    """One calibration for every referent, or with ``--split-expanded`` phrases naming one vocabulary name and
    phrases scored over several ("the circle") apart; the threshold is 0.5, the equal-cost decision."""
    from clipkit.evaluation.grounding import calibration_samples

    samples = calibration_samples(data, model, limit=args.n)
    if not args.split_expanded:
        return {**fit_group(samples, "all referents"), "threshold": 0.5}
    cal = fit_group([s for s in samples if not s[5]], "full names")
    expanded = [s for s in samples if s[5]]
    if expanded:
        cal["expanded"] = fit_group(expanded, "expanded phrases")
    return {**cal, "threshold": 0.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes-clip")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat-prob", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", nargs="*", default=[""])
    ap.add_argument("--types", default=None, help="comma-separated expression types (default: all)")
    ap.add_argument("--json", default="bench/results/ground.json")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--write", action="store_true", help="with --calibrate: store it in the model's clipkit.json")
    ap.add_argument("--split-expanded", action="store_true",
                    help="with --calibrate: calibrate phrases expanded over the vocabulary on their own")
    args = ap.parse_args()

    import torch

    from clipkit.evaluation.grounding import evaluate_grounding
    from clipkit.registry import load_model
    from clipkit.world.export import export

    torch.set_num_threads(args.threads)
    model = load_model(args.model, args.pretrained, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or export(Path(tmp) / "data", n=args.n, seed=args.seed, size=args.size,
                                   repeat_prob=args.repeat_prob)
        if args.calibrate:
            cal = calibrate(model, data, args)
            cal["source"] = f"python bench/ground_eval.py {' '.join(sys.argv[1:])} (validation scenes)"
            print(json.dumps(cal))
            if args.write:
                path = Path(model.path) / "clipkit.json"
                meta = json.loads(path.read_text())
                meta["ground_calibration"] = cal
                path.write_text(json.dumps(meta, indent=2) + "\n")
                print(f"wrote {path}")
            return
        rows = []
        types = tuple(args.types.split(",")) if args.types else None
        for text in args.configs:
            cfg = parse_config(text)
            res = {"config": text or "defaults", **evaluate_grounding(data, model, limit=args.n, types=types, **cfg)}
            rows.append(res)
            print(json.dumps(res), flush=True)
    r0 = rows[0]
    counts = ", ".join(f"{k} {v['expressions']}" for k, v in r0["per_type"].items())
    print(f"\nmodel {args.model}, {r0['images']} held-out scenes ({args.data or f'seed {args.seed}, {args.size} px, '}"
          f"{'' if args.data else f'repeat-prob {args.repeat_prob}'}), {r0['expressions']} expressions ({counts}), "
          f"parser {r0['parser']}, {platform.machine()}, torch threads {args.threads}\n")
    print("| config | overall | plain | attribute | relation | superlative | absent → empty | ms/expr |")
    print("|---|---|---|---|---|---|---|---|")

    def f(v):
        return "—" if v is None else f"{v:.3f}"

    for r in rows:
        pt = {k: v["accuracy"] for k, v in r["per_type"].items()}
        print(f"| {r['config']} | {f(r['accuracy'])} | {f(pt.get('plain'))} | {f(pt.get('attribute'))} | "
              f"{f(pt.get('relation'))} | {f(pt.get('superlative'))} | {f(pt.get('absent'))} | "
              f"{r['ms_per_phrase']:.0f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"model": args.model, "n": args.n, "seed": args.seed,
                                           "repeat_prob": args.repeat_prob, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
