"""Metrics: each owns its validation, preparation, distance and result shape."""

from .dense import Metric
from .registry import METRIC_NAMES, get_metric, metric_class

__all__ = ["Metric", "METRIC_NAMES", "get_metric", "metric_class"]
