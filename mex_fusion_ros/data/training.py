"""Training crops: random crops of clean pairs, flipped, then degraded, with degradation labels.

This module imports torch; ``data.paired`` and ``data.degradations`` stay torch-free.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mex_fusion_ros.data.degradations import (
    CameraVariation,
    Preset,
    apply_preset,
    get_preset,
    quantize,
    sample_training_preset,
    vary_camera,
)
from mex_fusion_ros.data.paired import DatasetError, ImagePair, PairListing, as_pairs, read_pair


def _compact(image: np.ndarray) -> np.ndarray:
    """Store an image read from an 8-bit file as uint8 (4x less memory), bit-exact on expansion."""
    quantised = np.rint(image * 255.0).astype(np.uint8)
    if np.array_equal(quantised.astype(np.float32) / np.float32(255.0), image):
        return quantised
    return image


def _expand(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    return image.astype(np.float32, copy=True)


def _to_chw(image: np.ndarray) -> torch.Tensor:
    """``(H, W)`` -> ``(1, H, W)``, ``(H, W, C)`` -> ``(C, H, W)``; contiguous float32 tensor."""
    chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))


def _rgb(image: np.ndarray) -> np.ndarray:
    """Grey visible ``(H, W)`` replicated to ``(H, W, 3)`` so every batch has 3 visible channels."""
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


class DegradedCropDataset(Dataset):
    """Random ``crop_size`` crops of registered pairs with synthetic degradations and labels.

    Each item: the clean pair is cropped at a random position and flipped horizontally and/or
    vertically (each with probability 1/2), then degraded. ``presets=None`` draws a preset per item
    from ``sample_training_preset``; a list of preset names draws uniformly among them.

    Items are dicts: ``ir`` ``(1, h, w)`` and ``vi`` ``(3, h, w)`` float32 in [0, 1] (degraded),
    ``clean_ir``, ``clean_vi`` (same shapes), ``label`` ``(T,)`` severities and ``present`` ``(T,)``
    0/1 in ``DEGRADATION_TYPES`` order, ``preset`` (str). Grey visible images are replicated to 3
    channels. Item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``: call ``set_epoch(e)``
    before each epoch (with ``DataLoader(num_workers>0)`` the workers see it as long as they are not
    persistent). All images are read once at construction and kept in memory (8-bit images as uint8).

    ``samples_per_epoch``: items per epoch; default one per pair (item ``i`` crops pair ``i``);
    when given, each item crops a random pair. ``resize``: passed to ``read_pair``.
    ``extra_images``: clean ``(ir (h, w), vi (h, w, 3))`` float pairs in [0, 1] held in memory (e.g.
    rendered frames of the demo scene) that are sampled like the pairs read from files.

    Camera augmentation (both off by default): ``rescale=(low, high)`` takes, with probability 1/2,
    a window ``crop_size / s`` pixels wide (``s`` log-uniform in the range, capped by the image) and
    resizes it to the crop, so scenes appear at other resolutions and object sizes;
    ``camera_variation`` varies the look of each clean modality (``data.degradations.vary_camera``:
    gamma, contrast, brightness, white balance, faint sensor noise) before the degradation. Both
    change the clean target too: they are other cameras, not degradations.

    ``pair_weights``: relative sampling weight of each pair (then of each extra image), e.g. to
    sample a small second dataset as often as a large first one; default: uniform. Only used with
    ``samples_per_epoch``.

    ``input_bits``: round the degraded inputs (not the clean targets) to 8 or 16 bits, as camera
    drivers and image files deliver them (0 = keep float). It matters for the degradation
    estimate: in a dark blurred image the 8-bit steps are most of the fine-scale gradient, and an
    estimate trained on float inputs recognised blur on half of the rounded MSRS pairs it knew.
    """

    def __init__(
        self,
        root_or_pairs: str | os.PathLike[str] | PairListing | Sequence[ImagePair],
        crop_size: int = 128,
        presets: Sequence[str | Preset] | None = None,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        resize: bool = False,
        extra_images: Sequence[tuple[np.ndarray, np.ndarray]] = (),
        rescale: tuple[float, float] | None = None,
        camera_variation: CameraVariation | None = None,
        pair_weights: Sequence[float] | None = None,
        input_bits: int = 0,
    ) -> None:
        if crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {crop_size}")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1 or None, got {samples_per_epoch}")
        if presets is not None:
            if isinstance(presets, str):
                raise TypeError(f"presets must be a list of preset names, got the string {presets!r}")
            if len(presets) == 0:
                raise ValueError("presets must be None (random training presets) or a non-empty list")
            # Unknown names fail here, not in the middle of an epoch.
            self.presets: tuple[Preset, ...] | None = tuple(get_preset(p) for p in presets)
        else:
            self.presets = None
        if rescale is not None and not 0 < rescale[0] <= rescale[1]:
            raise ValueError(f"rescale must be (low, high) with 0 < low <= high, got {rescale}")
        self.rescale = rescale
        self.camera_variation = camera_variation
        if input_bits not in (0, 8, 16):
            raise ValueError(f"input_bits must be 8, 16 or 0 (float), got {input_bits}")
        self.input_bits = int(input_bits)
        self.crop_size = int(crop_size)
        self.seed = int(seed)
        self.epoch = 0
        self.samples_per_epoch = samples_per_epoch
        # In-memory images alone are a dataset too (an empty pair list is an error otherwise).
        only_extra = bool(extra_images) and isinstance(root_or_pairs, Sequence) and not root_or_pairs
        self.pairs = () if only_extra else as_pairs(root_or_pairs)
        self._images: list[tuple[np.ndarray, np.ndarray]] = []
        for pair in self.pairs:
            ir, vi = read_pair(pair, resize=resize)
            height, width = ir.shape
            if height < self.crop_size or width < self.crop_size:
                raise DatasetError(
                    f"pair {pair.name!r} ({pair.vi_path}) is {width}x{height}, smaller than the "
                    f"{self.crop_size}x{self.crop_size} crop"
                )
            self._images.append((_compact(ir), _compact(vi)))
        for number, (ir, vi) in enumerate(extra_images):
            height, width = ir.shape[:2]
            if height < self.crop_size or width < self.crop_size or vi.shape[:2] != ir.shape[:2]:
                raise DatasetError(f"extra image pair {number} is {width}x{height} (visible {vi.shape[:2]}); "
                                   f"need equal sizes of at least the {self.crop_size}x{self.crop_size} crop")
            self._images.append((_compact(np.asarray(ir, np.float32)), _compact(np.asarray(vi, np.float32))))

        self._cumulative: np.ndarray | None = None
        if pair_weights is not None:
            weights = np.asarray(pair_weights, dtype=np.float64)
            if weights.shape != (len(self._images),) or (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f"pair_weights needs {len(self._images)} non-negative weights with a positive "
                                 f"sum, got {weights.shape[0] if weights.ndim == 1 else weights.shape}")
            self._cumulative = np.cumsum(weights / weights.sum())

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of an epoch (crops, flips and degradations change per epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch if self.samples_per_epoch is not None else len(self._images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        if self.samples_per_epoch is None:
            pair_index = index
        elif self._cumulative is None:
            pair_index = int(rng.integers(len(self._images)))
        else:
            pair_index = min(int(np.searchsorted(self._cumulative, rng.random(), side="right")),
                             len(self._images) - 1)
        ir_full, vi_full = self._images[pair_index]
        height, width = ir_full.shape
        window = self.crop_size
        if self.rescale is not None and rng.random() < 0.5:
            scale = math.exp(rng.uniform(math.log(self.rescale[0]), math.log(self.rescale[1])))
            window = max(8, min(round(self.crop_size / scale), height, width))
        top = int(rng.integers(0, height - window + 1))
        left = int(rng.integers(0, width - window + 1))
        rows, cols = slice(top, top + window), slice(left, left + window)
        clean_ir, clean_vi = _expand(ir_full[rows, cols]), _expand(vi_full[rows, cols])
        if window != self.crop_size:
            size = (self.crop_size, self.crop_size)
            interpolation = cv2.INTER_AREA if window > self.crop_size else cv2.INTER_LINEAR
            clean_ir = np.clip(cv2.resize(clean_ir, size, interpolation=interpolation), 0.0, 1.0)
            clean_vi = np.clip(cv2.resize(clean_vi, size, interpolation=interpolation), 0.0, 1.0)
        if rng.random() < 0.5:
            clean_ir, clean_vi = clean_ir[:, ::-1], clean_vi[:, ::-1]
        if rng.random() < 0.5:
            clean_ir, clean_vi = clean_ir[::-1], clean_vi[::-1]
        clean_ir, clean_vi = np.ascontiguousarray(clean_ir), np.ascontiguousarray(clean_vi)
        if self.camera_variation is not None:
            clean_ir = vary_camera(clean_ir, rng, self.camera_variation)
            clean_vi = vary_camera(clean_vi, rng, self.camera_variation)
        if self.presets is None:
            preset = sample_training_preset(rng)
        else:
            preset = self.presets[int(rng.integers(len(self.presets)))]
        degraded = apply_preset(preset, clean_ir, clean_vi, seed=rng)
        return {
            "ir": _to_chw(quantize(degraded.ir, self.input_bits)),
            "vi": _to_chw(_rgb(quantize(degraded.vi, self.input_bits))),
            "clean_ir": _to_chw(clean_ir),
            "clean_vi": _to_chw(_rgb(clean_vi)),
            "label": torch.from_numpy(degraded.label.vector()),
            "present": torch.from_numpy(degraded.label.present_mask()),
            "preset": preset.name,
        }
