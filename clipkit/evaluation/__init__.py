"""Metrics and evaluators behind ``clipkit eval …`` (each reads a shapes-world export)."""

from clipkit.evaluation.segmentation import confusion_matrix, confusion_miou, miou_from_confusion

__all__ = ["confusion_matrix", "confusion_miou", "miou_from_confusion"]
