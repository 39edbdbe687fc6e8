"""clipkit: open-vocabulary vision with CLIP-family models.

The public API is a handful of names, imported lazily so that ``import clipkit`` stays cheap::

    import clipkit
    model = clipkit.load_model("shapes-clip")
    results = clipkit.classify("examples/scenes/", ["red circle", "blue square"], model=model)
"""

from importlib import import_module
from typing import Any

from clipkit._version import __version__

_LAZY = {
    "load_model": "clipkit.registry",
    "LoadedModel": "clipkit.registry",
    "classify": "clipkit.api",
    "segment": "clipkit.api",
    "group": "clipkit.api",
    "detect": "clipkit.api",
    "ground": "clipkit.api",
    "sketch": "clipkit.api",
    "text_embeddings": "clipkit.prompts",
    "Classification": "clipkit.results",
    "Segmentation": "clipkit.results",
    "Detections": "clipkit.results",
    "Sketch": "clipkit.results",
    "Grounding": "clipkit.results",
    "run": "clipkit.api",
    "embed": "clipkit.collection.embed",
    "search": "clipkit.collection.search",
    "ErrorRecord": "clipkit.results",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clipkit' has no attribute {name!r}")
