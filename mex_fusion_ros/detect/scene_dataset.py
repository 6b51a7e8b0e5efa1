"""The synthetic demo scene as a labelled paired dataset (``mex-fusion detect scene``; ROS-free).

``bag.scene.DemoScene`` knows where its pedestrians and cars are, so every rendered frame comes
with exact boxes. This writes frames of one or more scenes (one seed each) in the layout
``detect.dataset`` reads: ``ir/<name>.png`` (8-bit grey), ``vi/<name>.png`` (8-bit RGB),
``labels/<name>.txt`` (YOLO txt) and ``labels/classes.txt`` (``bag.scene.SCENE_CLASSES``). Frames are
clean: ``detect eval`` degrades them with its presets and ``detect train --degrade`` with its own.

Frame indices are spread evenly over each scene's sequence (the light goes from day to dusk over
it), shifted by a seed-dependent offset so that scenes do not all show the same instants.
Names are ``s<seed>_f<index>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mex_fusion_ros.bag.scene import SCENE_CLASSES, DemoScene, SceneConfig, SceneObject
from mex_fusion_ros.detect.dataset import LABELS_DIR
from mex_fusion_ros.nodes.pipeline import to_uint8


@dataclass(frozen=True)
class SceneDatasetSummary:
    root: Path
    seeds: tuple[int, ...]
    frames: int
    objects: dict[str, int]


def yolo_lines(objects: Iterable[SceneObject], width: int, height: int,
               classes: tuple[str, ...] = SCENE_CLASSES) -> list[str]:
    """``class_id cx cy w h`` lines (fractions of the image) of a frame's objects."""
    lines = []
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        lines.append(
            f"{classes.index(obj.label)} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
            f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"
        )
    return lines


def frame_indices(seed: int, frames_per_seed: int, num_frames: int) -> list[int]:
    """``frames_per_seed`` indices spread over ``[0, num_frames)``, offset by the seed."""
    if frames_per_seed < 1:
        raise ValueError(f"frames per seed must be >= 1, got {frames_per_seed}")
    step = num_frames / frames_per_seed
    offset = (seed * 7919) % max(1, int(step))  # a prime stride: neighbouring seeds differ
    return sorted({min(num_frames - 1, int(i * step) + offset) for i in range(frames_per_seed)})


def write_scene_dataset(out: str | Path, seeds: Iterable[int], frames_per_seed: int,
                        size: tuple[int, int] = (320, 256), num_frames: int = 300) -> SceneDatasetSummary:
    """Render the frames and write them with their labels under ``out`` (created; must not hold a dataset)."""
    out = Path(out)
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("at least one scene seed is needed")
    folders = {name: out / name for name in ("ir", "vi", LABELS_DIR)}
    for folder in folders.values():
        if folder.exists() and any(folder.iterdir()):
            raise FileExistsError(f"{folder} is not empty; write the scene dataset into a new folder")
        folder.mkdir(parents=True, exist_ok=True)
    (folders[LABELS_DIR] / "classes.txt").write_text("".join(f"{name}\n" for name in SCENE_CLASSES))
    width, height = size
    objects = dict.fromkeys(SCENE_CLASSES, 0)
    written = 0
    for seed in seeds:
        scene = DemoScene(SceneConfig(width=width, height=height, num_frames=num_frames, seed=seed))
        for index in frame_indices(seed, frames_per_seed, num_frames):
            frame = scene.render(index)
            name = f"s{seed}_f{index:04d}"
            cv2.imwrite(str(folders["ir"] / f"{name}.png"), to_uint8(frame.ir, color=False))
            rgb = to_uint8(frame.vi, color=True)
            cv2.imwrite(str(folders["vi"] / f"{name}.png"), np.ascontiguousarray(rgb[:, :, ::-1]))
            lines = yolo_lines(frame.objects, width, height)
            (folders[LABELS_DIR] / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))
            for obj in frame.objects:
                objects[obj.label] += 1
            written += 1
    return SceneDatasetSummary(out, seeds, written, objects)
