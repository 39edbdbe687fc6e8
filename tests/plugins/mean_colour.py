"""A seventh method in a few lines: the mean colour of each image, as a Classification over "red/green/blue".

Used by tests/test_shell.py to prove that a method is only a config and a predictor: registering it gives it
the CLI command, inputs, batching, error records, -o, --resume and the closed-pipe behaviour of every method.
``register(SPEC)`` adds it to the method table (tests do it in a fixture and take it out again, so it never leaks
into other tests' view of the CLI); ``python tests/plugins/mean_colour.py ARGS`` runs the clipkit CLI with it.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from clipkit.config import MethodConfig, option
from clipkit.methods import MethodSpec, register
from clipkit.results import Classification


class MeanColourConfig(MethodConfig):
    scale: float = option(1.0, "Multiply the mean colour (0..1) by this.", gt=0)


def _mean_rgb(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(0) / 255.0


class MeanColourPredictor:
    keep_image = False
    transform = staticmethod(_mean_rgb)  # runs in the decoding workers
    batches: ClassVar[list[int]] = []  # batch sizes seen (tests read it)

    def __init__(self, model, text, config: MeanColourConfig):
        self.config = config

    def predict(self, samples):
        MeanColourPredictor.batches.append(len(samples))
        return [Classification(s.key, ["red", "green", "blue"], s.pixels * self.config.scale) for s in samples]


SPEC = MethodSpec("mean-colour", MeanColourConfig, f"{__name__}:MeanColourPredictor",
                           "The mean colour of each image.", text="none", model_kind="none", out_dir="none",
                           batch_size=4)

if __name__ == "__main__":
    register(SPEC)  # before the CLI is built, so the command exists
    from clipkit.cli.app import main

    main()
