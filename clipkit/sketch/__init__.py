"""CLIPasso (Vinker et al. 2022): object sketches as Bézier strokes optimised against CLIP.

Official code: https://github.com/yael-vinker/CLIPasso (CC BY-NC-SA 4.0; read for facts, not copied).
"""

from clipkit.sketch.optimize import SketchOptions, SketchOutput, sketch_image

__all__ = ["SketchOptions", "SketchOutput", "sketch_image"]
