"""Full-resolution Laplacian-pyramid fusion driven by low-resolution network features.

The network works on 4x4 pixel cells (``nano``), but the fused image must keep every pixel of
detail the restored images have. So the network does not paint the fused image: it predicts, at
its own resolution, how to combine the Laplacian pyramids of the two restored luminances, and the
pyramids are built, blended and collapsed at full resolution:

- detail level ``k`` (resolution ``H / 2^k``): a per-pixel selection weight
  ``w = sigmoid(exp(s_k) * (|D_ir| - |D_vi|) + b_k)`` where ``D`` is each source's detail, ``s_k``
  a learned sharpness and ``b_k`` a learned bias map; then
  a learned gain ``g_k`` in (0, 2): ``D_k = g_k * (D_vi + w * (D_ir - D_vi))``. With zero-initialised
  maps this starts as the classical choose-max rule (Burt and Adelson 1983; the ``laplacian``
  baseline); the bias lets the network prefer one source where the other's detail is residual noise,
  and the gain attenuates noise or restores contrast;
- base (``H / 2^K``): a learned per-pixel weight ``w_b = sigmoid(b_base)``, so thermal targets can
  keep their brightness (saliency) where averaging would halve their contrast.

Pyramids use 2x2 average pooling down and bilinear upsampling: every level is a cheap separable
filter, ``collapse_pyramid(laplacian_pyramid(x))`` is exact, and everything exports to ONNX.
Tensor functions take and return ``(B, C, H, W)`` tensors (kornia style).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Initial activity sharpness: an activity difference of 0.02 (about 5 grey levels) gives a
#: selection logit of 2 (weight 0.88), close to the hard choose-max rule.
INITIAL_SHARPNESS = 100.0


def pyramid_down(x: torch.Tensor) -> torch.Tensor:
    """Halve ``(B, C, H, W)`` (H, W even) by 2x2 averaging -> ``(B, C, H/2, W/2)``.

    Same values as ``F.avg_pool2d(x, 2)``; four strided views added are 2.6x faster on one CPU
    thread (0.46 vs 1.21 ms for two 640x512 images).
    """
    return (x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2]) * 0.25


def pyramid_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``(B, C, h, w)`` to ``(B, C, *size)`` (half-pixel centres)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``levels`` detail images (finest first) and the low-pass base of ``(B, C, H, W)``.

    H and W must be divisible by ``2 ** levels``. Detail ``k`` is ``(B, C, H / 2^k, W / 2^k)``, the
    base ``(B, C, H / 2^levels, W / 2^levels)``.
    """
    height, width = x.shape[-2:]
    if height % (2 ** levels) or width % (2 ** levels):
        raise ValueError(f"laplacian_pyramid: size {height}x{width} is not divisible by 2^{levels}")
    pyramid = []
    current = x
    for _ in range(levels):
        down = pyramid_down(current)
        pyramid.append(current - pyramid_up(down, current.shape[-2:]))
        current = down
    pyramid.append(current)
    return pyramid


def collapse_pyramid(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`laplacian_pyramid`: details (finest first) + base -> ``(B, C, H, W)``."""
    image = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        image = pyramid_up(image, detail.shape[-2:]) + detail
    return image


def resize_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bring a ``(B, C, h, w)`` weight map to ``size``: bilinear up, or area average down by an
    integer factor (sizes here are always powers-of-two multiples of each other)."""
    height, width = x.shape[-2:]
    if (height, width) == tuple(size):
        return x
    if height > size[0]:
        return F.avg_pool2d(x, (height // size[0], width // size[1]))
    return pyramid_up(x, size)


@dataclass
class PyramidMaps:
    """What the fusion chose, for inspection: per detail level the selection weight of the infrared
    detail and the gain, ``(B, 1, H_k, W_k)``, and the base weight of the infrared ``(B, 1, H_K, W_K)``."""

    detail_weights: list[torch.Tensor]
    gains: list[torch.Tensor]
    base_weight: torch.Tensor


class PyramidFusion(nn.Module):
    """Fuse two luminances ``(B, 1, H, W)`` in a ``levels``-level Laplacian pyramid with weight maps
    predicted from fusion features ``(B, C, h, w)`` (any h dividing H by a power of two).

    The head predicts ``2 * levels + 1`` maps: the selection bias of each detail level, the gain
    logit of each detail level, and the base weight logit. All start at zero (choose-max details at
    gain 1, averaged base).
    """

    def __init__(self, feature_channels: int, levels: int) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"PyramidFusion needs at least one level, got {levels}")
        self.levels = levels
        self.head = nn.Conv2d(feature_channels, 2 * levels + 1, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.log_sharpness = nn.Parameter(torch.full((levels,), math.log(INITIAL_SHARPNESS)))

    def forward(self, features: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor
                ) -> tuple[torch.Tensor, PyramidMaps]:
        """``features`` ``(B, C, h, w)``, ``ir``/``vi`` luminances ``(B, 1, H, W)`` -> fused ``(B, 1, H, W)``."""
        # Plain layout: channel slices of a channels-last map would send every resampling below
        # down a slow strided path.
        maps = self.head(features).contiguous()
        levels = self.levels
        # Per level: selection bias (a logit) and gain in (0, 2), made at the features' resolution.
        level_maps = torch.cat((maps[:, :levels], 2.0 * torch.sigmoid(maps[:, levels:2 * levels])), dim=1)
        batch = ir.shape[0]
        # One pyramid for both sources: half the calls.
        pyramid = laplacian_pyramid(torch.cat((ir, vi), dim=0), levels)
        sharpness = self.log_sharpness.exp().to(ir.dtype)
        fused: list[torch.Tensor] = []
        weights: list[torch.Tensor] = []
        gains: list[torch.Tensor] = []
        for level, detail in enumerate(pyramid[:-1]):
            # Bias and gain of this level brought to its resolution in one resampling.
            pair = level_maps[:, (level, levels + level)]
            bias, gain = resize_map(pair, detail.shape[-2:]).split(1, dim=1)
            detail_ir, detail_vi = detail[:batch], detail[batch:]
            contrast = detail_ir.abs() - detail_vi.abs()
            weight = torch.sigmoid(torch.addcmul(bias, contrast, sharpness[level]))
            fused.append(torch.addcmul(detail_vi, weight, detail_ir - detail_vi) * gain)
            weights.append(weight)
            gains.append(gain)
        base = pyramid[-1]
        base_weight = torch.sigmoid(resize_map(maps[:, 2 * levels:], base.shape[-2:]))
        fused.append(torch.addcmul(base[batch:], base_weight, base[:batch] - base[batch:]))
        return collapse_pyramid(fused), PyramidMaps(weights, gains, base_weight)


__all__ = ["INITIAL_SHARPNESS", "PyramidFusion", "PyramidMaps", "collapse_pyramid", "laplacian_pyramid",
           "pyramid_down", "pyramid_up", "resize_map"]
