"""``mex-fusion detect train``: fuse a labelled paired dataset, write an ultralytics dataset, train a YOLO.

Steps (everything under ``--out``):

1. ``dataset/``: every pair of the training data (and of ``--val-data``, or a share of the training
   pairs picked by name hash, ``--val-fraction``) is optionally degraded (``--degrade``: ``training``
   = a preset drawn by ``data.degradations.sample_training_preset``, or a named preset; seeded per
   pair by ``eval.runner.degradation_seed``) and turned into one image per ``--input`` (``ir``, ``vi``
   or a fuser, ``detect.inputs``). Written as ultralytics expects: ``images/{train,val}/``,
   ``labels/{train,val}/`` (YOLO txt) and ``data.yaml``. ``dataset/manifest.json`` records what it
   was built from; a later run with the same settings reuses it (``--resume``), other settings refuse.
2. ``train/``: ultralytics trains ``--model`` (an architecture ``.yaml`` such as ``yolov8n.yaml``
   for a network from scratch, or a ``.pt`` to start from) with its own progress output;
   ``train/weights/best.pt`` and ``last.pt``. ``--resume`` continues from ``last.pt``.
3. ``results.json``: ultralytics' ``val`` of ``best.pt`` on the validation split (mAP50, mAP50-95,
   precision, recall, per class), the settings, dataset counts and times.

Nothing is downloaded: ``YOLO_OFFLINE=1`` is set before ultralytics is imported, plots (which fetch
a font) are off, and a ``--model`` that is neither a file nor a ``.yaml`` is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mex_fusion_ros.data.degradations import PRESETS, apply_preset, sample_training_preset
from mex_fusion_ros.data.paired import DatasetError, read_pair
from mex_fusion_ros.detect.dataset import DetectDatasetError, LabelledDataset, load_labelled_dataset
from mex_fusion_ros.detect.inputs import DetectorInput, InputError, build_inputs
from mex_fusion_ros.eval.report import slug
from mex_fusion_ros.eval.runner import degradation_seed

DEGRADE_CHOICES = ("none", "training")
MANIFEST = "manifest.json"


class TrainError(ValueError):
    """Training cannot start or finish (bad data, input, model or option); the message says why."""


@dataclass
class TrainSettings:
    data: Path
    out: Path
    inputs: tuple[str, ...]
    model: str = "yolov8n.yaml"
    val_data: Path | None = None
    val_fraction: float = 0.2
    degrade: str = "none"
    seed: int = 0
    epochs: int = 50
    imgsz: int = 640
    batch: int = 16
    device: str = "cpu"
    workers: int = 0
    patience: int = 100
    resume: bool = False
    limit: int | None = None
    labels: Path | None = None
    val_labels: Path | None = None
    #: Further ultralytics ``train`` arguments (``close_mosaic``, ``lr0``, ...).
    extra: dict = field(default_factory=dict)
    command: str = ""

    def check(self) -> None:
        if not self.inputs:
            raise TrainError("no input given: --input ir, --input vi or --input FUSER")
        if self.degrade not in DEGRADE_CHOICES and self.degrade not in PRESETS:
            raise TrainError(f"--degrade must be one of {', '.join(DEGRADE_CHOICES)} or a preset "
                             f"({', '.join(PRESETS)}), got {self.degrade!r}")
        if self.val_data is None and not 0.0 < self.val_fraction < 1.0:
            raise TrainError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("epochs", "imgsz", "batch"):
            if getattr(self, name) < 1:
                raise TrainError(f"--{name} must be >= 1, got {getattr(self, name)}")
        model_path = Path(self.model).expanduser()
        if not self.model.endswith((".yaml", ".yml")) and not model_path.is_file():
            raise TrainError(f"--model {self.model}: no such file; give a .pt to start from or an architecture "
                             ".yaml (e.g. yolov8n.yaml) to train from scratch; nothing is downloaded")


def _offline_ultralytics() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")  # read when ultralytics is imported


def validation_names(names: list[str], fraction: float) -> set[str]:
    """The pairs held out for validation: ``fraction`` of them (at least one), those with the lowest
    hash of their name, so the split does not depend on the order or on the names' sorting."""
    count = min(len(names) - 1, max(1, round(fraction * len(names))))
    return set(sorted(names, key=lambda name: (zlib.crc32(name.encode()), name))[:count])


def degrade_pair(mode: str, ir: np.ndarray, vi: np.ndarray, seed: int, name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The pair degraded as ``mode`` says (``none``, ``training`` or a preset name) and the preset used."""
    if mode == "none":
        return ir, vi, "clean"
    pair_seed = degradation_seed(seed, name, mode)
    preset = sample_training_preset(pair_seed) if mode == "training" else PRESETS[mode]
    degraded = apply_preset(preset, ir, vi, seed=pair_seed)
    return degraded.ir, degraded.vi, preset.name


def _yolo_label_lines(boxes, classes: tuple[str, ...], width: int, height: int) -> list[str]:
    lines = []
    for box in boxes:
        x0, y0, x1, y1 = (min(max(v, 0.0), limit) for v, limit in zip(box.box, (width, height, width, height)))
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            continue
        lines.append(f"{classes.index(box.label)} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                     f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return lines


def _manifest(settings: TrainSettings, classes: tuple[str, ...]) -> dict:
    return {
        "data": str(Path(settings.data).resolve()),
        "val_data": str(Path(settings.val_data).resolve()) if settings.val_data else None,
        "val_fraction": None if settings.val_data else settings.val_fraction,
        "labels": str(settings.labels) if settings.labels else None,
        "val_labels": str(settings.val_labels) if settings.val_labels else None,
        "inputs": list(settings.inputs),
        "degrade": settings.degrade,
        "seed": settings.seed,
        "limit": settings.limit,
        "classes": list(classes),
    }


def _load(data: Path, labels: Path | None, limit: int | None) -> LabelledDataset:
    try:
        return load_labelled_dataset(data, labels, limit)
    except DetectDatasetError as exc:
        raise TrainError(str(exc)) from exc


def prepare_dataset(settings: TrainSettings, inputs: list[DetectorInput] | None = None,
                    progress: bool = True) -> tuple[Path, dict]:
    """Step 1: the ultralytics dataset under ``out/dataset``; returns ``data.yaml``'s path and counts."""
    train_set = _load(settings.data, settings.labels, settings.limit)
    val_set = _load(settings.val_data, settings.val_labels, settings.limit) if settings.val_data else None
    classes = train_set.classes
    if val_set is not None and val_set.classes != classes:
        raise TrainError(f"the validation labels name the classes {list(val_set.classes)}, the training labels "
                         f"{list(classes)}; they must be the same, in the same order")
    root = Path(settings.out) / "dataset"
    manifest = _manifest(settings, classes)
    data_yaml = root / "data.yaml"
    if (root / MANIFEST).is_file():
        previous = json.loads((root / MANIFEST).read_text())
        if {k: v for k, v in previous.items() if k != "counts"} == manifest and data_yaml.is_file():
            return data_yaml, previous["counts"]
        raise TrainError(f"{root} was built from other settings ({root / MANIFEST}); choose another --out")
    if root.exists():  # an interrupted preparation: start it again
        shutil.rmtree(root)
    inputs = inputs if inputs is not None else _build_inputs(settings)
    held_out = set() if val_set is not None else validation_names([p.name for p in train_set.pairs],
                                                                  settings.val_fraction)
    jobs = [(pair, train_set, "val" if pair.name in held_out else "train") for pair in train_set.pairs]
    if val_set is not None:
        jobs += [(pair, val_set, "val") for pair in val_set.pairs]
    counts = {split: {"pairs": 0, "images": 0, "objects": dict.fromkeys(classes, 0)} for split in ("train", "val")}
    presets: dict[str, int] = {}
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for pair, source, split in tqdm(jobs, desc="detect train: dataset", unit="pair", disable=not progress):
        try:
            ir, vi = read_pair(pair)
        except DatasetError as exc:
            raise TrainError(str(exc)) from exc
        height, width = vi.shape[:2]
        boxes = source.boxes(pair.name, (width, height))
        ir, vi, preset = degrade_pair(settings.degrade, ir, vi, settings.seed, pair.name)
        presets[preset] = presets.get(preset, 0) + 1
        lines = _yolo_label_lines(boxes, classes, width, height)
        counts[split]["pairs"] += 1
        for box in boxes:
            counts[split]["objects"][box.label] += 1
        for item in inputs:
            image, _ = item.image(ir, vi)
            stem = f"{pair.name}__{slug(item.name)}" if len(inputs) > 1 else pair.name
            if image.ndim == 3:
                image = np.ascontiguousarray(image[:, :, ::-1])  # RGB -> BGR for OpenCV
            if not cv2.imwrite(str(root / "images" / split / f"{stem}.png"), image):
                raise TrainError(f"cannot write {root / 'images' / split / f'{stem}.png'}")
            (root / "labels" / split / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
            counts[split]["images"] += 1
    if counts["train"]["images"] == 0 or counts["val"]["images"] == 0:
        raise TrainError(f"the split left {counts['train']['pairs']} training and {counts['val']['pairs']} "
                         "validation pairs; both need at least one (more pairs, --val-fraction or --val-data)")
    counts["degradation_presets"] = presets
    data_yaml.write_text(
        f"# written by mex-fusion detect train\npath: {root.resolve()}\ntrain: images/train\nval: images/val\n"
        f"names:\n" + "".join(f"  {index}: {json.dumps(name)}\n" for index, name in enumerate(classes))
    )
    (root / MANIFEST).write_text(json.dumps({**manifest, "counts": counts}, indent=1) + "\n")
    return data_yaml, counts


def _build_inputs(settings: TrainSettings) -> list[DetectorInput]:
    try:
        return build_inputs(settings.inputs, device=settings.device)
    except InputError as exc:
        raise TrainError(str(exc)) from exc


def _val_numbers(metrics) -> dict:
    box = metrics.box
    names = metrics.names
    per_class = {}
    for i, class_index in enumerate(box.ap_class_index):
        precision, recall, ap50, ap = box.class_result(i)
        per_class[names[int(class_index)]] = {"AP50": float(ap50), "AP50-95": float(ap), "precision": float(precision),
                                              "recall": float(recall)}
    return {"mAP50": float(box.map50), "mAP50-95": float(box.map), "precision": float(box.mp),
            "recall": float(box.mr), "per_class": per_class}


def train_detector(settings: TrainSettings, progress: bool = True, log: Callable[[str], None] = print,
                   callbacks: dict[str, Callable] | None = None) -> dict:
    """Run the three steps (module docstring); returns what ``results.json`` holds.

    ``callbacks``: ultralytics callbacks by event (``on_fit_epoch_end``, ...), added to the model's.
    """
    settings.check()
    _offline_ultralytics()
    started = time.perf_counter()
    out = Path(settings.out)
    run_dir = out / "train"
    last = run_dir / "weights" / "last.pt"
    if run_dir.exists() and not settings.resume:
        raise TrainError(f"{run_dir} already holds a training run: --resume to continue it, or another --out")
    if settings.resume and not last.is_file():
        raise TrainError(f"--resume: {last} does not exist (nothing to resume)")
    log(f"[1/3] dataset: {settings.data}" + (f" + {settings.val_data}" if settings.val_data else "")
        + f", inputs {', '.join(settings.inputs)}, degrade {settings.degrade}")
    data_yaml, counts = prepare_dataset(settings, progress=progress)
    log(f"      {data_yaml}: {counts['train']['images']} training / {counts['val']['images']} validation images")
    from ultralytics import YOLO

    arguments = dict(data=str(data_yaml.resolve()), epochs=settings.epochs, imgsz=settings.imgsz,
                     batch=settings.batch, device=settings.device, workers=settings.workers,
                     project=str(out.resolve()), name="train", exist_ok=True, plots=False, seed=settings.seed,
                     patience=settings.patience, verbose=progress)
    arguments.update(settings.extra)
    train_started = time.perf_counter()
    model = YOLO(str(last)) if settings.resume else YOLO(settings.model, task="detect")
    for event, function in (callbacks or {}).items():
        model.add_callback(event, function)
    try:
        if settings.resume:
            log(f"[2/3] resuming {last}")
            model.train(resume=True)
        else:
            log(f"[2/3] training {settings.model} for {settings.epochs} epochs at imgsz {settings.imgsz}")
            model.train(**arguments)
    # ultralytics' errors for bad arguments, and for resuming a run that has finished (AssertionError)
    except (FileNotFoundError, SyntaxError, ValueError, KeyError, AssertionError) as exc:
        raise TrainError(f"ultralytics training failed: {type(exc).__name__}: {exc}") from exc
    train_s = time.perf_counter() - train_started
    best = run_dir / "weights" / "best.pt"
    weights = best if best.is_file() else last
    log(f"[3/3] validating {weights}")
    metrics = YOLO(str(weights)).val(data=str(data_yaml.resolve()), split="val", imgsz=settings.imgsz,
                                     batch=settings.batch, device=settings.device, workers=settings.workers,
                                     plots=False, verbose=False, project=str(out.resolve()), name="val",
                                     exist_ok=True)
    results = {
        "command": settings.command,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "dataset": {"data_yaml": str(data_yaml), **counts},
        "weights": {"best": str(best) if best.is_file() else None, "last": str(last)},
        "val": _val_numbers(metrics),
        "train_time_s": train_s,
        "wall_time_s": time.perf_counter() - started,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return results
