"""The shapes world: synthetic scenes with exact ground truth and their export (see docs/world.md); the bundled
models' trainers live in :mod:`clipkit.training`."""

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
