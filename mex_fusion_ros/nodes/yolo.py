"""The detector node's model, without ROS: load an ultralytics YOLO model and run it on one image.

``YoloDetector(model, ...)`` accepts what ultralytics accepts: a ``.pt``/``.onnx``/... file, a
released model name (``yolov8n.pt``, fetched by ultralytics where the internet is reachable), or a
model ``.yaml`` (``yolov8n.yaml``: an untrained network built from the architecture file that
ships inside ultralytics, no download). Offline with neither a file nor a ``.yaml``, it raises
``DetectorError`` naming the ``model`` parameter instead of letting a download fail deep inside.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MODEL_FILE_SUFFIXES = (".pt", ".onnx", ".engine", ".torchscript", ".tflite", ".mlpackage", ".xml")
#: ``classes: [-1]`` keeps every class: ``ros2 param set`` cannot send an empty integer list.
ALL_CLASSES = -1


class DetectorError(RuntimeError):
    """The detector cannot start; the message names the parameter to change."""


@dataclass(frozen=True)
class Box:
    """One detection in pixels of the input image (corners, x right, y down)."""

    class_id: int
    class_name: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class Detections:
    boxes: list[Box]
    #: Annotated image, RGB uint8 (H, W, 3), when requested.
    annotated: np.ndarray | None
    inference_ms: float


def _local_model(model: str) -> Path | None:
    """The file ``model`` names if it exists here or in ultralytics' weights directory."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    try:
        from ultralytics.utils import SETTINGS
        cached = Path(SETTINGS["weights_dir"]) / path.name
        return cached if cached.is_file() else None
    except (ImportError, KeyError):
        return None


def class_filter(classes: Sequence[int]) -> list[int] | None:
    """The ``classes`` parameter as ultralytics' filter: ``None`` (every class) for ``[]`` or ``[-1]``."""
    ids = [int(class_id) for class_id in classes]
    if ids == [ALL_CLASSES]:
        return None
    if any(class_id < 0 for class_id in ids):
        raise ValueError(f"classes: class ids are >= 0, and [-1] alone means every class; got {ids}")
    return ids or None


def _offline() -> bool:
    from ultralytics.utils import is_online
    return not is_online()


class YoloDetector:
    """An ultralytics YOLO model with fixed thresholds; ``detect(rgb)`` runs one image."""

    def __init__(self, model: str, *, device: str = "auto", half: bool = False, conf: float = 0.25,
                 iou: float = 0.45, classes: Sequence[int] = (), image_size: int = 640) -> None:
        if not model:
            raise DetectorError("parameter `model` is empty: give a .pt/.onnx file, a model name or a .yaml")
        is_architecture = model.endswith((".yaml", ".yml"))
        missing = not is_architecture and _local_model(model) is None
        if missing and (os.environ.get("YOLO_OFFLINE") or _offline()):
            raise DetectorError(
                f"parameter `model`={model!r}: no such file and no internet to fetch it; give the path of a "
                f"local .pt/.onnx file, or an architecture .yaml (e.g. yolov8n.yaml) for an untrained model")
        from ultralytics import YOLO  # heavy import (torch) only when a detector is built

        try:
            self.model = YOLO(model, task="detect")
        except Exception as error:  # noqa: BLE001 - ultralytics raises many types for a bad model
            raise DetectorError(f"parameter `model`={model!r} could not be loaded: {error}") from error
        self.device = self._resolve_device(device)
        self.half = bool(half) and self.device.startswith("cuda")
        self.conf = conf
        self.iou = iou
        self.classes = classes
        self.image_size = image_size
        self.names: dict[int, str] = dict(self.model.names)

    @property
    def classes(self) -> list[int]:
        """Class ids kept (``[]``: every class); ``[-1]`` may be assigned for every class too."""
        return list(self._class_ids or [])

    @classes.setter
    def classes(self, classes: Sequence[int]) -> None:
        self._class_ids = class_filter(classes)  # ValueError for a negative id other than a lone -1

    @staticmethod
    def _resolve_device(device: str) -> str:
        if device != "auto":
            return device
        import torch
        return "cuda:0" if torch.cuda.is_available() else "cpu"

    def warm_up(self, width: int = 640, height: int = 480) -> None:
        """One forward on a blank image: the first call builds the predictor (seconds, not milliseconds).

        Raises ``DetectorError`` when the model cannot run here (e.g. an ONNX file for another input).
        """
        try:
            self.detect(np.zeros((height, width, 3), dtype=np.uint8))
        except Exception as error:  # noqa: BLE001 - ultralytics and its runtimes raise many types
            raise DetectorError(f"the model's first forward on {self.device} failed: "
                                f"{type(error).__name__}: {error}") from error

    def detect(self, rgb: np.ndarray, annotate: bool = False) -> Detections:
        """Detect objects in ``rgb``: uint8 ``(H, W, 3)`` RGB (or ``(H, W)`` grey)."""
        if rgb.dtype != np.uint8:
            raise ValueError(f"detector input must be uint8, got {rgb.dtype}")
        if rgb.ndim == 2:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_GRAY2BGR)
        elif rgb.ndim == 3 and rgb.shape[2] == 3:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # ultralytics reads numpy input as BGR (OpenCV)
        else:
            raise ValueError(f"detector input must be (H, W, 3) or (H, W), got {rgb.shape}")
        options = {"half": True} if self.half else {}  # ultralytics 8.4 warns on any `half` argument
        start = time.perf_counter()
        result = self.model.predict(bgr, imgsz=self.image_size, conf=self.conf, iou=self.iou,
                                    classes=self._class_ids, device=self.device, verbose=False,
                                    **options)[0]
        inference_ms = (time.perf_counter() - start) * 1e3
        boxes = []
        if result.boxes is not None and len(result.boxes):
            xyxy = result.boxes.xyxy.cpu().numpy()
            scores = result.boxes.conf.cpu().numpy()
            class_ids = result.boxes.cls.cpu().numpy().astype(int)
            for (x1, y1, x2, y2), score, class_id in zip(xyxy, scores, class_ids):
                boxes.append(Box(int(class_id), self.names.get(int(class_id), str(class_id)), float(score),
                                 float(x1), float(y1), float(x2), float(y2)))
        annotated = cv2.cvtColor(result.plot(), cv2.COLOR_BGR2RGB) if annotate else None
        return Detections(boxes, annotated, inference_ms)
