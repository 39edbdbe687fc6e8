"""Where the bundled ``shapes-clip`` lives, and a plain open_clip loader for it.

clipkit's registry (``clipkit.registry.load_model("shapes-clip")``) is the normal way to load it; this loader
is for code that needs the bare open_clip objects (trainers, metrics) without the registry.
"""

from __future__ import annotations

from pathlib import Path

SHAPES_CLIP_DIR = Path(__file__).resolve().parents[1] / "assets" / "shapes-clip"


def load_shapes_clip(folder: str | Path = SHAPES_CLIP_DIR):
    """(model, preprocess, tokenizer) of an open_clip hub-layout folder, offline, eval mode, float32 on CPU.

    preprocess: PIL.Image -> float32 [3, S, S]; tokenizer: list[str] -> int64 [N, context_length].
    """
    from clipkit.openclip_import import open_clip_module

    open_clip = open_clip_module()

    folder = Path(folder)
    if not (folder / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"no open_clip_config.json in {folder}")
    model, preprocess = open_clip.create_model_from_pretrained("local-dir:" + str(folder))
    tokenizer = open_clip.get_tokenizer("local-dir:" + str(folder))
    return model.float().eval(), preprocess, tokenizer
