"""GroupViT (Xu et al., CVPR 2022): the model — architecture, weight loading (Hugging Face port / NVlabs), and
its inference rules (the official zero-shot segmentation, sliding windows, a training-free fallback for plain
CLIPs).

Modules: ``config`` (official defaults), ``layers`` + ``model`` (architecture), ``weights`` (key maps, load/save),
``text`` (tokenising, label embeddings), ``segment`` + ``slide`` (inference), ``fallback`` (dense grouping).
Training, its losses, the calibration sweep and the model card are in :mod:`clipkit.training`.
"""

from clipkit.groupvit.config import GroupViTConfig, TextConfig, VisionConfig
from clipkit.groupvit.model import GroupViT
from clipkit.groupvit.weights import load_groupvit, save_hf_dir

__all__ = ["GroupViT", "GroupViTConfig", "TextConfig", "VisionConfig", "load_groupvit", "save_hf_dir"]
