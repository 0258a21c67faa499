"""Evaluation: metrics from raw model outputs and their terminal tables.

Importing this package does not import torch: outputs are numpy arrays.
"""

from foundry.evaluation.metrics import compute_metrics, probabilities
from foundry.evaluation.report import confusion_table, metrics_table

__all__ = ["compute_metrics", "confusion_table", "metrics_table", "probabilities"]
