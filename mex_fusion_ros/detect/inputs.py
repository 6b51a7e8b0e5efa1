"""What the detector looks at: the infrared image, the visible image, or a fuser's output (ROS-free).

An input spec is ``ir``, ``vi`` or any fuser spec ``fusion.registry.create_fuser`` builds (``nano``,
``laplacian``, ``nano:path.pt``, ``path.pt``, ...). Every input turns one registered pair (float32
in [0, 1], the project conventions) into the uint8 image the detector gets, exactly as the ROS
graph hands frames on (``nodes.pipeline.to_uint8``): ``ir`` as a grey image, ``vi`` and fused
images in colour (a grey visible camera gives grey).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mex_fusion_ros.fusion.base import ImageFuser
from mex_fusion_ros.nodes.pipeline import to_uint8

SINGLE_CAMERA_INPUTS = ("ir", "vi")


class InputError(ValueError):
    """An input spec that cannot be built (unknown fuser, missing weights); names the spec."""


@dataclass
class DetectorInput:
    """One input: ``name`` for reports (the fuser's name, or the spec), ``spec`` as given."""

    name: str
    spec: str
    fuser: ImageFuser | None = None

    def image(self, ir: np.ndarray, vi: np.ndarray) -> tuple[np.ndarray, float]:
        """The uint8 detector input of one pair and the seconds its fusion took (0 for ir/vi)."""
        if self.spec == "ir":
            return to_uint8(ir, color=False), 0.0
        if self.spec == "vi":
            return to_uint8(vi, color=vi.ndim == 3), 0.0
        start = time.perf_counter()
        fused = self.fuser.fuse(ir.copy(), vi.copy()).fused
        elapsed = time.perf_counter() - start
        return to_uint8(fused, color=fused.ndim == 3), elapsed


def build_inputs(specs: tuple[str, ...] | list[str], device: str = "auto") -> list[DetectorInput]:
    """One ``DetectorInput`` per spec (repeats dropped), fusers built up front so a bad spec fails first."""
    from mex_fusion_ros.fusion.registry import create_fuser

    inputs: list[DetectorInput] = []
    for spec in dict.fromkeys(s.strip() for s in specs):
        if spec in SINGLE_CAMERA_INPUTS:
            inputs.append(DetectorInput(spec, spec))
            continue
        try:
            fuser = create_fuser(spec, device=device)
        # Unknown spec (ValueError), unusable weights (WeightsError is a RuntimeError), unreadable
        # file (OSError), no torch / runtime (ImportError): this input cannot run.
        except (ValueError, RuntimeError, OSError, ImportError) as exc:
            raise InputError(f"input {spec!r}: {exc} (inputs: ir, vi or a fuser spec)") from exc
        name = getattr(fuser, "name", "") or spec
        taken = {i.name for i in inputs}
        inputs.append(DetectorInput(spec if name in taken or name in SINGLE_CAMERA_INPUTS else name, spec, fuser))
    if not inputs:
        raise InputError("no input given: use --input ir, --input vi or --input FUSER")
    return inputs
