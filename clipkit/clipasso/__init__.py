"""CLIPasso (Vinker et al. 2022): object sketches as Bézier strokes optimised against CLIP.

(Named ``clipasso`` rather than ``sketch`` so that ``clipkit.sketch`` stays the public function.)

Official code: https://github.com/yael-vinker/CLIPasso (CC BY-NC-SA 4.0; read for facts, not copied).
"""

from clipkit.clipasso.optimize import SketchConfig, SketchOutput, sketch_image

__all__ = ["SketchConfig", "SketchOutput", "sketch_image"]
