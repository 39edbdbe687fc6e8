"""GroupViT (Xu et al., CVPR 2022): architecture, weight loading (Hugging Face port / NVlabs), losses, the
official zero-shot segmentation rule, the shapes-world trainer and a training-free fallback for plain CLIPs.

Modules: ``config`` (official defaults), ``layers`` + ``model`` (architecture), ``weights`` (key maps, load/save),
``losses``, ``text`` (tokenising, label embeddings), ``segment`` (inference), ``fallback`` (dense grouping),
``train`` + ``card`` (shapes-groupvit), ``clip_init`` (warm start from an open_clip ViT), ``evaluate``
(``clipkit eval group``).
"""

from clipkit.groupvit.config import GroupViTConfig, TextConfig, VisionConfig
from clipkit.groupvit.model import GroupViT
from clipkit.groupvit.weights import load_groupvit, save_hf_dir

__all__ = ["GroupViT", "GroupViTConfig", "TextConfig", "VisionConfig", "load_groupvit", "save_hf_dir"]
