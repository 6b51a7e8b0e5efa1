"""The fusion node's per-frame work without ROS: normalise, register, fuse, convert back.

``FusionPipeline.process(thermal, rgb)`` takes the arrays decoded from the two camera messages
and returns the fused frame as uint8, ready for ``sensor_msgs/Image``. The node, the
``mex-fusion run`` launcher and ``scripts/bench_node_latency.py`` all go through this class, so
the node stays a thin adapter and its overhead can be measured apart from the model forward.

Steps (each timed):

1. preprocess: thermal to float32 [0, 1] (16-bit and float input through the AGC; 8-bit scaled),
   registration of the thermal image onto the RGB camera with the configured homography
   (``cv2.warpPerspective`` straight to the output size), RGB resized to the output size;
2. inference: ``ImageFuser.fuse`` (its own ``timings["forward"]`` when it reports one);
3. postprocess: float [0, 1] to uint8 ``rgb8`` ``(H, W, 3)`` or ``mono8`` ``(H, W)``.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from mex_fusion_ros.codec.agc import ThermalAGC
from mex_fusion_ros.fusion.base import FusionResult, ImageFuser

IDENTITY_HOMOGRAPHY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


class FrameError(ValueError):
    """A decoded camera frame cannot be used (shape, dtype, size); the message says why."""


def parse_homography(values: Sequence[float], name: str = "registration.homography") -> np.ndarray:
    """Row-major 9 values -> an invertible 3x3 float64 matrix, or ``ValueError`` naming ``name``."""
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.shape != (9,):
        raise ValueError(f"{name}: expected 9 values (row-major 3x3), got {matrix.size}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name}: values must be finite, got {list(values)}")
    matrix = matrix.reshape(3, 3)
    if abs(np.linalg.det(matrix)) < 1e-12:
        raise ValueError(f"{name}: the homography is singular (determinant 0)")
    return matrix


def thermal_to_unit(thermal: np.ndarray, agc: ThermalAGC) -> np.ndarray:
    """A decoded thermal frame -> float32 ``(H, W)`` in [0, 1].

    uint16 (``mono16``/``16UC1``, raw radiometric counts) and float (``32FC1``) go through the
    AGC, which maps the scene's percentile range to [0, 1]; uint8 is already display-ranged and is
    only scaled. A 3-channel frame (a colourised thermal camera) is converted to grey.
    """
    if thermal.ndim == 3 and thermal.shape[2] == 1:
        thermal = thermal[:, :, 0]
    if thermal.ndim == 3 and thermal.shape[2] in (3, 4):
        if thermal.dtype != np.uint8:
            raise FrameError(f"colour thermal frames must be 8-bit, got {thermal.dtype}")
        thermal = cv2.cvtColor(np.ascontiguousarray(thermal[:, :, :3]), cv2.COLOR_RGB2GRAY)
    if thermal.ndim != 2:
        raise FrameError(f"thermal frame must be (H, W) or (H, W, 3), got shape {thermal.shape}")
    if thermal.size == 0:
        raise FrameError(f"thermal frame is empty, shape {thermal.shape}")
    if thermal.dtype == np.uint8:
        return thermal.astype(np.float32) * np.float32(1.0 / 255.0)
    if thermal.dtype in (np.uint16, np.int16, np.float32, np.float64):
        return agc.apply(thermal)  # non-finite pixels map to 0 there
    raise FrameError(f"unsupported thermal dtype {thermal.dtype}")


def rgb_to_unit(rgb: np.ndarray) -> np.ndarray:
    """A decoded RGB frame (RGB channel order) -> float32 ``(H, W, 3)`` in [0, 1] (grey stays 2-D)."""
    if rgb.ndim == 3 and rgb.shape[2] == 1:
        rgb = rgb[:, :, 0]
    if rgb.ndim == 3 and rgb.shape[2] == 4:
        rgb = rgb[:, :, :3]
    if rgb.ndim not in (2, 3) or (rgb.ndim == 3 and rgb.shape[2] != 3):
        raise FrameError(f"RGB frame must be (H, W, 3) or (H, W), got shape {rgb.shape}")
    if rgb.size == 0:
        raise FrameError(f"RGB frame is empty, shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    if rgb.dtype == np.uint16:
        return rgb.astype(np.float32) * np.float32(1.0 / 65535.0)
    if rgb.dtype.kind == "f":
        return np.clip(np.nan_to_num(rgb.astype(np.float32)), 0.0, 1.0)
    raise FrameError(f"unsupported RGB dtype {rgb.dtype}")


def to_uint8(image: np.ndarray, color: bool) -> np.ndarray:
    """float [0, 1] ``(H, W)`` or ``(H, W, 3)`` -> uint8 ``(H, W, 3)`` when ``color`` else ``(H, W)``."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    # cv2 clamps and rounds in two passes (~3x faster than the numpy chain at 640x512); the max
    # first because convertScaleAbs would fold negative values back up.
    out = cv2.convertScaleAbs(cv2.max(np.ascontiguousarray(image, dtype=np.float32), 0.0), alpha=255.0)
    if color and out.ndim == 2:
        return np.repeat(out[:, :, None], 3, axis=2)
    if not color and out.ndim == 3:
        return cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    return out


@dataclass
class ProcessedFrame:
    """One frame as the node publishes it; images uint8, timings milliseconds."""

    fused: np.ndarray
    restored_thermal: np.ndarray | None
    restored_rgb: np.ndarray | None
    result: FusionResult | None
    #: "fused", "thermal_only" or "rgb_only".
    mode: str
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    #: Model forward alone when the fuser reports it (``FusionResult.timings["forward"]``), else inference.
    forward_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class FusionPipeline:
    """Register, fuse and convert one thermal/RGB pair; owns the fuser and the AGC state.

    Not thread-safe by design: one worker thread calls ``process``; parameter changes from other
    threads go through ``update``, which takes the same lock.
    """

    def __init__(self, fuser: ImageFuser, *, homography: Sequence[float] = IDENTITY_HOMOGRAPHY,
                 output_size: tuple[int, int] = (0, 0), color: bool = True,
                 agc: ThermalAGC | None = None) -> None:
        self.fuser = fuser
        self._homography = parse_homography(homography)
        self._output_size = output_size  # (width, height); 0 = the RGB image's size
        self.color = color
        self.agc = agc if agc is not None else ThermalAGC(1.0, 99.0, 0.9)
        self._warp_cache: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()

    def update(self, *, agc: ThermalAGC | None = None) -> None:
        """Swap run-time settings (the AGC) between frames."""
        with self._lock:
            if agc is not None:
                self.agc = agc

    def output_size_for(self, rgb_shape: tuple[int, ...]) -> tuple[int, int]:
        """(width, height) of the fused image for an RGB frame of ``rgb_shape``."""
        width, height = self._output_size
        return (width or rgb_shape[1], height or rgb_shape[0])

    def _thermal_to_output(self, thermal_shape: tuple[int, ...], rgb_shape: tuple[int, ...]) -> np.ndarray:
        """Homography from thermal pixels to output pixels: scale(RGB -> output) @ H."""
        key = (thermal_shape[:2], rgb_shape[:2], self._output_size)
        matrix = self._warp_cache.get(key)
        if matrix is None:
            out_w, out_h = self.output_size_for(rgb_shape)
            scale = np.diag([out_w / rgb_shape[1], out_h / rgb_shape[0], 1.0])
            matrix = scale @ self._homography
            if len(self._warp_cache) > 16:  # sizes change rarely; bound the cache anyway
                self._warp_cache.clear()
            self._warp_cache[key] = matrix
        return matrix

    def prepare(self, thermal: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decoded frames -> registered ``ir (H, W)``, ``vi (H, W, 3)``: float32 [0, 1], output size."""
        vi = rgb_to_unit(rgb)
        ir_native = thermal_to_unit(thermal, self.agc)
        out_w, out_h = self.output_size_for(vi.shape)
        if vi.shape[:2] != (out_h, out_w):
            shrinking = out_w < vi.shape[1] or out_h < vi.shape[0]
            interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            vi = cv2.resize(vi, (out_w, out_h), interpolation=interpolation)
        return self._register(ir_native, rgb.shape), vi

    def _register(self, ir_native: np.ndarray, rgb_shape: tuple[int, ...]) -> np.ndarray:
        """Warp the thermal image onto the output grid (skipped when that is the identity)."""
        out_w, out_h = self.output_size_for(rgb_shape)
        matrix = self._thermal_to_output(ir_native.shape, rgb_shape)
        if ir_native.shape == (out_h, out_w) and np.allclose(matrix, np.eye(3), atol=1e-9):
            return ir_native  # already aligned (e.g. a co-boresighted pair of equal size)
        return cv2.warpPerspective(ir_native, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def process(self, thermal: np.ndarray, rgb: np.ndarray) -> ProcessedFrame:
        """Fuse one pair of decoded frames (thermal: any of ``thermal_to_unit``'s inputs; rgb: RGB order)."""
        with self._lock:
            start = time.perf_counter()
            ir, vi = self.prepare(thermal, rgb)
            prepared = time.perf_counter()
            result = self.fuser.fuse(ir, vi)
            fused_at = time.perf_counter()
            frame = self._finish(result, result.fused, "fused")
            done = time.perf_counter()
        return self._timed(frame, start, prepared, fused_at, done, result)

    def process_single(self, camera: str, image: np.ndarray, rgb_shape: tuple[int, ...] | None = None
                       ) -> ProcessedFrame:
        """One camera alone (its partner stopped): restore it if the fuser can, else pass it through.

        The fuser gets the live image and an all-zero partner of the same size. A network fuser
        then returns the live modality restored (``restored_ir``/``restored_vi``), which is what is
        published; a classical fuser has no restoration, so the live image itself (normalised,
        registered, resized) is published. A fused image of one real and one blank input is never
        published: it would halve the contrast for no information.
        """
        if camera not in ("thermal", "rgb"):
            raise ValueError(f"camera must be 'thermal' or 'rgb', got {camera!r}")
        with self._lock:
            start = time.perf_counter()
            if camera == "rgb":
                vi = rgb_to_unit(image)
                out_w, out_h = self.output_size_for(vi.shape)
                if vi.shape[:2] != (out_h, out_w):
                    vi = cv2.resize(vi, (out_w, out_h), interpolation=cv2.INTER_AREA)
                ir = np.zeros(vi.shape[:2], dtype=np.float32)
            else:
                ir_native = thermal_to_unit(image, self.agc)
                # Without an RGB frame the registration target size is the last known RGB size.
                target = rgb_shape if rgb_shape is not None else ir_native.shape
                ir = self._register(ir_native, target)
                vi = np.zeros((*ir.shape, 3), dtype=np.float32)
            prepared = time.perf_counter()
            result = self.fuser.fuse(ir, vi)
            fused_at = time.perf_counter()
            if camera == "rgb":
                alone = result.restored_vi if result.restored_vi is not None else vi
                frame = self._finish(result, alone, "rgb_only")
            else:
                alone = result.restored_ir if result.restored_ir is not None else ir
                frame = self._finish(result, alone, "thermal_only")
            done = time.perf_counter()
        return self._timed(frame, start, prepared, fused_at, done, result)

    def _finish(self, result: FusionResult, image: np.ndarray, mode: str) -> ProcessedFrame:
        restored_thermal = None if result.restored_ir is None else to_uint8(result.restored_ir, color=False)
        restored_rgb = None if result.restored_vi is None else to_uint8(result.restored_vi, color=True)
        return ProcessedFrame(fused=to_uint8(image, self.color), restored_thermal=restored_thermal,
                              restored_rgb=restored_rgb, result=result, mode=mode)

    @staticmethod
    def _timed(frame: ProcessedFrame, start: float, prepared: float, fused_at: float, done: float,
               result: FusionResult) -> ProcessedFrame:
        frame.preprocess_ms = (prepared - start) * 1e3
        frame.inference_ms = (fused_at - prepared) * 1e3
        frame.postprocess_ms = (done - fused_at) * 1e3
        forward = result.timings.get("forward")
        frame.forward_ms = forward * 1e3 if forward is not None else frame.inference_ms
        return frame
