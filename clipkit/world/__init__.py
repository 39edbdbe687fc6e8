"""The shapes world: synthetic scenes with exact ground truth, their export, and the trainers of the bundled
models (see docs/world.md)."""

from clipkit.world.scenes import (
    BACKGROUNDS,
    CATEGORIES,
    COLOURS,
    SHAPES,
    Scene,
    SceneConfig,
    SceneObject,
    category_id,
    category_name,
    generate,
    generate_scene,
)

__all__ = [
    "BACKGROUNDS",
    "CATEGORIES",
    "COLOURS",
    "SHAPES",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "category_id",
    "category_name",
    "generate",
    "generate_scene",
]
