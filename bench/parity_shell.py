"""Shell-refactor parity: the five image methods on the example scenes, dumped for an exact comparison.

Run it with two trees on PYTHONPATH (e.g. a worktree of the commit before a refactor, and the current one):

    PYTHONPATH=/path/to/old python bench/parity_shell.py /tmp/old.json
    PYTHONPATH=$PWD python bench/parity_shell.py /tmp/new.json && cmp /tmp/old.json /tmp/new.json

Label maps are compared by hash, boxes and scores rounded (3 / 5 decimals): a refactor of the shell must give
identical files. Uses only the public functions (clipkit.classify …), which exist with the same names before and
after the one-shell refactor.
"""

import glob
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

import clipkit

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
imgs = sorted(glob.glob(str(ROOT / "examples/scenes/images/*.png")))
labels = [x.strip() for x in (ROOT / "examples/labels.txt").read_text().splitlines() if x.strip()]
out = {}
m = clipkit.load_model("shapes-clip")


def h(a):
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]


r = clipkit.classify(imgs, labels, model=m)
out["classify"] = [[x.labels[:3], [float(v) for v in x.scores[:3]]] for x in r]
r = clipkit.segment(imgs, labels, model=m)
out["segment"] = [h(x.label_map) for x in r]
r = clipkit.segment(imgs, labels, model=m, head="lseg-shapes")
out["segment_head"] = [h(x.label_map) for x in r]
r = clipkit.group(imgs, labels)
out["group"] = [h(x.label_map) for x in r]
r = clipkit.detect(imgs, labels, model=m)
out["detect"] = [[x.xyxy.round(3).tolist(), x.confidence.round(5).tolist(), x.class_id.tolist()] for x in r]
r = clipkit.ground(imgs, "a yellow cross left of a green star", model=m)
out["ground"] = [[x.detections.xyxy.round(3).tolist(), x.detections.confidence.round(5).tolist()] for x in r]
Path(sys.argv[1]).write_text(json.dumps(out, sort_keys=True))
print("wrote", sys.argv[1])
