"""Comparing with results made outside the project (ROS-free).

Three pieces behind ``mex-fusion eval``:

- :func:`save_degraded_inputs` writes the degraded inputs of an evaluation as image files
  (``DIR/<preset>/ir/<name>.png``, ``DIR/<preset>/vi/<name>.png``: each preset folder has the
  ``ir/`` + ``vi/`` layout every fusion code base reads), so another tool can fuse exactly what
  the project's methods fused;
- :class:`ExternalResults` reads the fused images such a tool wrote (``DIR/<preset>/<name>.<ext>``)
  and hands them to the evaluation as one more method;
- :func:`load_reference` reads published figures (``{preset: {method: {metric: mean}}}``, the format of
  ``../shared/data/peers/roadscene_val.json``) that the report shows beside the runs, marked as
  reference figures.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

#: File name extensions accepted for external fused images, in the order they are looked for.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Keys of a reference file that are not presets (free text about how the figures were made).
ABOUT_KEY = "_about"


class ExternalError(ValueError):
    """An external result or reference file cannot be used; the message names the file and why."""


def to_file_image(image: np.ndarray, bits: int) -> np.ndarray:
    """Float ``(H, W)`` / ``(H, W, 3)`` RGB in [0, 1] -> uint8/uint16 array in OpenCV's BGR order."""
    dtype, peak = (np.uint8, 255.0) if bits == 8 else (np.uint16, 65535.0)
    array = np.rint(np.clip(image, 0.0, 1.0) * peak).astype(dtype)
    return cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array


def save_degraded_inputs(root: Path, preset: str, name: str, ir: np.ndarray, vi: np.ndarray, bits: int) -> None:
    """Write one degraded pair as ``root/<preset>/ir/<name>.png`` and ``root/<preset>/vi/<name>.png``."""
    if bits not in (8, 16):
        raise ExternalError(f"inputs can be saved as 8- or 16-bit PNG files, not {bits}-bit")
    for modality, image in (("ir", ir), ("vi", vi)):
        folder = root / preset / modality
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        if not cv2.imwrite(str(path), to_file_image(image, bits)):
            raise ExternalError(f"cannot write {path}")


def write_inputs_manifest(root: Path, *, command: str, seed: int, bits: int, presets: list[str],
                          images: list[str]) -> Path:
    """``root/inputs.json``: how the saved inputs were made and what an external tool should write."""
    path = root / "inputs.json"
    path.write_text(json.dumps({
        "command": command, "seed": seed, "bits": bits, "presets": presets, "images": images,
        "layout": "<preset>/ir/<name>.png and <preset>/vi/<name>.png (visible: RGB)",
        "external_results": "write the fused image of each pair as <DIR>/<preset>/<name>.png "
                            "(grey or RGB, 8 or 16 bit, the size of the inputs), then "
                            "mex-fusion eval ... --external NAME=<DIR>",
    }, indent=1) + "\n", encoding="utf-8")
    return path


@dataclass
class ExternalResults:
    """Fused images written by another tool: ``root/<preset>/<name>.<ext>`` for every evaluated pair."""

    name: str
    root: Path

    def check(self, presets: list[str] | tuple[str, ...], images: list[str] | tuple[str, ...]) -> None:
        """Fail before any work when the folder lacks a preset folder or an image (the first few named)."""
        if not self.root.is_dir():
            raise ExternalError(f"--external {self.name}={self.root}: not a folder")
        missing = [f"{preset}/{image}" for preset in presets for image in images
                   if self._find(preset, image) is None]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            raise ExternalError(f"--external {self.name}={self.root}: no fused image for {shown} "
                                f"(expected <preset>/<name>{{{','.join(IMAGE_SUFFIXES)}}})")

    def _find(self, preset: str, image: str) -> Path | None:
        for suffix in IMAGE_SUFFIXES:
            path = self.root / preset / f"{image}{suffix}"
            if path.is_file():
                return path
        return None

    def load(self, preset: str, image: str, like: np.ndarray) -> np.ndarray:
        """The fused image of one pair as float32 in [0, 1], shaped like the visible input ``like``
        (a grey result is repeated over the channels of a colour input)."""
        path = self._find(preset, image)
        if path is None:
            raise ExternalError(f"--external {self.name}: {self.root / preset / image}.* does not exist")
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise ExternalError(f"--external {self.name}: {path} is not a readable image")
        if array.dtype == np.uint8:
            fused = array.astype(np.float32) / 255.0
        elif array.dtype == np.uint16:
            fused = array.astype(np.float32) / 65535.0
        else:
            raise ExternalError(f"--external {self.name}: {path} has {array.dtype} pixels; expected 8 or 16 bit")
        if fused.ndim == 3:
            if fused.shape[2] == 4:
                fused = fused[:, :, :3]
            if fused.shape[2] == 1:
                fused = fused[:, :, 0]
            else:
                fused = cv2.cvtColor(fused, cv2.COLOR_BGR2RGB)
        if fused.shape[:2] != like.shape[:2]:
            raise ExternalError(f"--external {self.name}: {path} is {fused.shape[1]}x{fused.shape[0]}, "
                                f"the inputs are {like.shape[1]}x{like.shape[0]}")
        if like.ndim == 3 and fused.ndim == 2:
            fused = np.repeat(fused[:, :, None], 3, axis=2)
        elif like.ndim == 2 and fused.ndim == 3:
            fused = cv2.cvtColor(fused, cv2.COLOR_RGB2GRAY)
        return np.ascontiguousarray(fused, dtype=np.float32)


def parse_external(spec: str) -> ExternalResults:
    """``NAME=DIR`` -> :class:`ExternalResults` (``ExternalError`` for another form)."""
    name, separator, folder = spec.partition("=")
    if not separator or not name.strip() or not folder.strip():
        raise ExternalError(f"--external {spec!r}: expected NAME=DIR")
    return ExternalResults(name.strip(), Path(folder.strip()))


@dataclass
class Reference:
    """Figures from elsewhere: ``summary[preset][method][metric]`` means, and where they came from."""

    path: Path
    summary: dict[str, dict[str, dict[str, float]]]
    about: str = ""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        names: list[str] = []
        for by_method in self.summary.values():
            names += [name for name in by_method if name not in names]
        return names


def load_reference(path: Path, presets: list[str] | tuple[str, ...], metrics: list[str] | tuple[str, ...],
                   known_presets: list[str] | tuple[str, ...]) -> Reference:
    """Read a reference JSON file (``{preset: {method: {metric: mean, "n": count}}, "_about": text}``).

    Keys that are not metrics of ``metrics`` (``n``, other conventions such as ``refPSNR``) are left
    out. Only the evaluated ``presets`` are kept. ``ExternalError`` names the file and the key path
    of anything malformed: not JSON, not an object, an unknown preset, a method that is not an
    object, a metric value that is not a finite number.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExternalError(f"--reference {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ExternalError(f"--reference {path}: cannot read it ({error})") from None
    except json.JSONDecodeError as error:
        raise ExternalError(f"--reference {path}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise ExternalError(f"--reference {path}: expected an object {{preset: {{method: {{metric: value}}}}}}, "
                            f"got {type(document).__name__}")
    about = document.get(ABOUT_KEY, "")
    summary: dict[str, dict[str, dict[str, float]]] = {}
    counts: dict[str, dict[str, int]] = {}
    for preset, by_method in document.items():
        if preset.startswith("_"):
            continue
        if preset not in known_presets:
            raise ExternalError(f"--reference {path}: {preset!r} is not a preset (valid: {', '.join(known_presets)})")
        if not isinstance(by_method, dict) or not by_method:
            raise ExternalError(f"--reference {path}: {preset}: expected an object of methods")
        for method, values in by_method.items():
            where = f"{preset}.{method}"
            if not isinstance(values, dict):
                raise ExternalError(f"--reference {path}: {where}: expected an object of metric values")
            kept: dict[str, float] = {}
            for metric, value in values.items():
                if metric == "n":
                    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                        raise ExternalError(f"--reference {path}: {where}.n: expected a positive integer")
                    counts.setdefault(preset, {})[method] = value
                    continue
                if metric not in metrics:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise ExternalError(f"--reference {path}: {where}.{metric}: expected a finite number, "
                                        f"got {value!r}")
                kept[metric] = float(value)
            if not kept:
                raise ExternalError(f"--reference {path}: {where}: no known metric "
                                    f"(known: {', '.join(metrics)})")
            if preset in presets:
                summary.setdefault(preset, {})[method] = kept
    if not summary:
        raise ExternalError(f"--reference {path}: no figures for the evaluated presets ({', '.join(presets)})")
    return Reference(path=path, summary=summary, about=str(about), counts=counts)


__all__ = ["ABOUT_KEY", "IMAGE_SUFFIXES", "ExternalError", "ExternalResults", "Reference", "load_reference",
           "parse_external", "save_degraded_inputs", "to_file_image", "write_inputs_manifest"]
