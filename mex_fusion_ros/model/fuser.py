"""Inference front end of the network: numpy or torch pairs in, :class:`FusionResult` out.

Split into preprocess (checks, grey -> 3 channels, to tensors on the device) -> inference (the
network pads to its stride and crops back) -> postprocess (clip to [0, 1], to numpy, degradation
estimate and routing per image), shared by single-frame :meth:`Fuser.fuse` and :meth:`Fuser.fuse_batch`.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mex_fusion_ros.fusion.base import (
    DegradationEstimate,
    FusionInputError,
    FusionResult,
    GateRouting,
    check_pair,
)
from mex_fusion_ros.model.calibration import validate_thresholds
from mex_fusion_ros.model.config import ModelConfig
from mex_fusion_ros.model.network import MexFusionNet, ModelOutput
from mex_fusion_ros.model.weights import load_weights

ArrayLike = np.ndarray | torch.Tensor


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda*`` without CUDA raises ``ValueError``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"invalid device {device!r}: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return resolved


def _tensor_to_hwc(image: torch.Tensor, what: str) -> np.ndarray:
    """Torch ``(C, H, W)`` / ``(1, C, H, W)`` / ``(H, W)`` image in [0, 1] -> numpy float32 convention."""
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise FusionInputError(f"{what}: fuse() takes one image; use fuse_batch for {tuple(image.shape)}")
        image = image[0]
    if image.ndim == 3:
        if image.shape[0] not in (1, 3):
            raise FusionInputError(f"{what}: expected (C, H, W) with C in (1, 3), got {tuple(image.shape)}")
        array = image.detach().float().cpu().numpy()
        return array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0))
    if image.ndim == 2:
        return image.detach().float().cpu().numpy()
    raise FusionInputError(f"{what}: expected (H, W), (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")


class Fuser:
    """A trained :class:`MexFusionNet` ready for inference (implements ``fusion.base.ImageFuser``)."""

    def __init__(self, model: MexFusionNet, *, device: str | torch.device = "auto", half: bool = False,
                 name: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        self.device = select_device(device)
        # fp16 only where it is fast and supported; on the CPU it would be slower and less accurate.
        self.half = bool(half) and self.device.type == "cuda"
        self.model = model.to(self.device).eval()
        if self.half:
            self.model.half()
        # CPU: channels-last tensors let the 1x1 convolutions run as plain matrix products
        # (layers.PointwiseConv), about 10-20 % faster here; same weights, same results.
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.config: ModelConfig = model.config
        self.name = name or model.config.name
        self.metadata = dict(metadata or {})
        #: Per-type presence thresholds calibrated for these weights (``mex-fusion calibrate``).
        self.presence_thresholds = validate_thresholds(self.metadata.get("presence_thresholds", {}),
                                                       self.config.degradation_types)
        self.weights_path: Path | None = None

    @classmethod
    def from_weights(cls, path: str | os.PathLike[str], device: str | torch.device = "auto",
                     half: bool = False, expected: str | ModelConfig | None = None) -> Fuser:
        """Load a weights file (``model.weights``); ``WeightsError`` names the file on any problem.

        ``expected``: configuration (name) the file must have been trained with.
        """
        model, metadata = load_weights(path, expected=expected)
        fuser = cls(model, device=device, half=half, metadata=metadata)
        fuser.weights_path = Path(path)
        return fuser

    # ------------------------------------------------------------------------------------------
    def _to_batch(self, irs: Sequence[np.ndarray], vis: Sequence[np.ndarray]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = torch.float16 if self.half else torch.float32
        ir = torch.from_numpy(np.stack([np.ascontiguousarray(a) for a in irs])[:, None])
        vi_list = [np.repeat(v[:, :, None], 3, axis=2) if v.ndim == 2 else v for v in vis]
        vi = torch.from_numpy(np.ascontiguousarray(np.stack(vi_list).transpose(0, 3, 1, 2)))
        return ir.to(self.device, dtype), vi.to(self.device, dtype)

    @torch.inference_mode()
    def infer(self, ir: torch.Tensor, vi: torch.Tensor) -> ModelOutput:
        """Run the network on ``(B, 1, H, W)`` / ``(B, 3, H, W)`` tensors (any H, W; padding inside)."""
        dtype = torch.float16 if self.half else torch.float32
        ir = ir.to(self.device, dtype).contiguous(memory_format=self.memory_format)
        vi = vi.to(self.device, dtype).contiguous(memory_format=self.memory_format)
        return self.model(ir, vi)

    def _results(self, output: ModelOutput, colour: Sequence[bool], timings: dict[str, float]
                 ) -> list[FusionResult]:
        started = time.perf_counter()
        assert output.fused is not None and output.fused_luminance is not None
        fused_rgb = output.fused.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        fused_y = output.fused_luminance.float().clamp(0, 1)[:, 0].cpu().numpy()
        restored_ir = output.restored_ir.float().clamp(0, 1)[:, 0].cpu().numpy()
        restored_vi = output.restored_vi.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        probabilities = output.degradation_logits.float().sigmoid().cpu().numpy()
        severities = output.degradation_severity.float().cpu().numpy()
        types = self.config.degradation_types
        decisions = [(d.gate, d.indices.cpu().numpy(), d.weights.float().cpu().numpy())
                     for d in output.routing]
        results = []
        for index, is_colour in enumerate(colour):
            vi_restored = restored_vi[index]
            if not is_colour:
                vi_restored = vi_restored @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            fused = fused_rgb[index] if is_colour else fused_y[index]
            results.append(FusionResult(
                fused=np.ascontiguousarray(fused, dtype=np.float32),
                restored_ir=np.ascontiguousarray(restored_ir[index], dtype=np.float32),
                restored_vi=np.ascontiguousarray(np.clip(vi_restored, 0, 1), dtype=np.float32),
                degradation=DegradationEstimate(
                    probabilities={t: float(p) for t, p in zip(types, probabilities[index])},
                    severities={t: float(s) for t, s in zip(types, severities[index])},
                    thresholds=dict(self.presence_thresholds),
                ),
                routing=[GateRouting(gate, tuple(int(e) for e in experts[index]),
                                     tuple(float(w) for w in weights[index]))
                         for gate, experts, weights in decisions],
                timings=dict(timings),
            ))
        postprocess = time.perf_counter() - started
        for result in results:
            result.timings["postprocess"] = postprocess
        return results

    def fuse(self, ir: ArrayLike, vi: ArrayLike) -> FusionResult:
        """Fuse one pair: numpy ``ir (H, W)``, ``vi (H, W, 3)`` or ``(H, W)`` float32 in [0, 1]
        (``fusion.base`` conventions), or torch tensors ``(C, H, W)`` / ``(1, C, H, W)``.

        The fused image is ``(H, W, 3)`` when the visible input is colour, else ``(H, W)``.
        """
        return self.fuse_batch([ir], [vi])[0]

    def fuse_batch(self, irs: Sequence[ArrayLike] | torch.Tensor, vis: Sequence[ArrayLike] | torch.Tensor
                   ) -> list[FusionResult]:
        """Fuse several pairs in one forward pass per image size (pairs of equal size are batched).

        ``irs``/``vis``: sequences of numpy or torch images, or batched tensors ``(B, 1, H, W)`` and
        ``(B, 3, H, W)``. Results come back in input order.
        """
        started = time.perf_counter()
        if isinstance(irs, torch.Tensor):
            irs = list(irs)
        if isinstance(vis, torch.Tensor):
            vis = list(vis)
        if len(irs) != len(vis):
            raise FusionInputError(f"{len(irs)} infrared but {len(vis)} visible images")
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for index, (ir, vi) in enumerate(zip(irs, vis)):
            ir_np = _tensor_to_hwc(ir, f"infrared #{index}") if isinstance(ir, torch.Tensor) else ir
            vi_np = _tensor_to_hwc(vi, f"visible #{index}") if isinstance(vi, torch.Tensor) else vi
            check_pair(ir_np, vi_np)
            pairs.append((ir_np, vi_np))
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (ir_np, _) in enumerate(pairs):
            groups.setdefault(ir_np.shape, []).append(index)
        results: list[FusionResult | None] = [None] * len(pairs)
        preprocess_share = (time.perf_counter() - started) / max(1, len(groups))
        for indices in groups.values():
            group_start = time.perf_counter()
            ir_t, vi_t = self._to_batch([pairs[i][0] for i in indices], [pairs[i][1] for i in indices])
            preprocess = preprocess_share + time.perf_counter() - group_start
            forward_start = time.perf_counter()
            output = self.infer(ir_t, vi_t)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            timings = {"preprocess": preprocess, "forward": time.perf_counter() - forward_start}
            colour = [pairs[i][1].ndim == 3 for i in indices]
            for i, result in zip(indices, self._results(output, colour, timings)):
                results[i] = result
        return [r for r in results if r is not None]
