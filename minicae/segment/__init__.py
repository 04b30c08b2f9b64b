"""Image segmentation with autoencoder features.

- ``features``: per-pixel hypercolumns at input resolution (:class:`PixelFeatures`);
- ``texture``: the Gabor bank and texture energies (:class:`TextureEnergy`);
- ``cluster``: :class:`KMeans`, :func:`kmeans_segment`, :func:`mean_field_segment`,
  :func:`majority_filter`,
  Hungarian matching (:func:`linear_sum_assignment`, :func:`match_labels`);
- ``head``: the few-label :class:`SegmentationHead`;
- ``anomaly``: reconstruction-error maps, Otsu and percentile thresholds;
- ``metrics``: pixel accuracy, IoU, Dice, adjusted Rand index, pixel AUROC;
- ``pipeline``: the ``minicae segment`` workflow (:func:`run_segment`);
- ``pictures``: every method on the same images, and an mIoU bar chart.
"""

from __future__ import annotations

from .anomaly import otsu_threshold, reconstruction_error_map, threshold_scores
from .cluster import (KMeans, kmeans_segment, linear_sum_assignment, majority_filter, match_labels,
                      mean_field_segment)
from .features import PixelFeatures, box_mean, pixel_features, resample_matrix
from .head import SegmentationHead
from .metrics import (adjusted_rand_index, confusion_matrix, dice, dice_per_class, foreground,
                      iou_per_class, mean_iou, pixel_accuracy, roc_auc, segmentation_scores)
from .pipeline import add_segment_arguments, format_table, run_segment
from .texture import TextureEnergy, gabor_bank, gaussian_smooth

__all__ = ["PixelFeatures", "pixel_features", "box_mean", "resample_matrix", "KMeans",
           "kmeans_segment", "majority_filter", "linear_sum_assignment", "match_labels",
           "SegmentationHead", "reconstruction_error_map", "otsu_threshold",
           "threshold_scores", "confusion_matrix", "pixel_accuracy", "iou_per_class",
           "mean_iou", "dice_per_class", "dice", "adjusted_rand_index", "roc_auc",
           "foreground", "segmentation_scores", "run_segment", "format_table",
           "add_segment_arguments", "mean_field_segment", "TextureEnergy", "gabor_bank",
           "gaussian_smooth"]
