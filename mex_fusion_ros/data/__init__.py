"""Paired infrared/visible datasets, synthetic degradations and training crops.

``paired`` and ``degradations`` are numpy/OpenCV only; ``DegradedCropDataset`` (in ``training``)
needs torch and is imported on first use, so importing this package never loads torch.
"""
from __future__ import annotations

from typing import Any

from mex_fusion_ros.data.degradations import (
    DEGRADATION_TYPES,
    PRESETS,
    Degradation,
    DegradationLabel,
    DegradedPair,
    Preset,
    UnknownPresetError,
    apply_preset,
    get_preset,
    sample_training_preset,
)
from mex_fusion_ros.data.paired import (
    DatasetError,
    ImagePair,
    PairListing,
    find_pairs,
    read_ir,
    read_pair,
    read_vi,
)

__all__ = [
    "DEGRADATION_TYPES",
    "PRESETS",
    "DatasetError",
    "Degradation",
    "DegradationLabel",
    "DegradedCropDataset",
    "DegradedPair",
    "ImagePair",
    "PairListing",
    "Preset",
    "UnknownPresetError",
    "apply_preset",
    "find_pairs",
    "get_preset",
    "read_ir",
    "read_pair",
    "read_vi",
    "sample_training_preset",
]


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attribute: torch is imported only when the training dataset is asked for.
    if name == "DegradedCropDataset":
        from mex_fusion_ros.data.training import DegradedCropDataset

        return DegradedCropDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
