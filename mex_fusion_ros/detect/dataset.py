"""A labelled paired dataset: registered infrared/visible pairs and boxes per pair (ROS-free).

Layout (the one ``data.paired`` reads, plus labels)::

    DATA/ir/<name>.png        infrared (any name ``data.paired`` accepts: ir/, infrared/)
    DATA/vi/<name>.png        visible, same name (vi/, vis/, visible/)
    DATA/labels/<name>.txt    YOLO txt: ``class_id cx cy w h`` as fractions of the image, one line per
                              object, an empty file for a pair without objects
    DATA/labels/classes.txt   class names, one per line (or ``data.yaml`` with ``names:``)

or, instead of ``labels/``, a COCO detection JSON (``--labels FILE``, or ``DATA/labels.json``)
whose images are matched to pairs by the stem of their ``file_name``. Boxes are in the visible
image's geometry (also the fused image's). Parsing is ``bag.detection.read_labels`` (keys by
image name), so every malformed line is reported with its file and line number; here, in
addition, every pair must have labels: a missing ``<name>.txt`` (or a COCO file without the image)
is an error naming the file, as is a YOLO directory without class names (the detector's classes
are matched by name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mex_fusion_ros.bag.detection import LabelError, LabelSet, read_labels
from mex_fusion_ros.data.paired import DatasetError, ImagePair, find_pairs
from mex_fusion_ros.eval.detection_metrics import LabeledBox

LABELS_DIR = "labels"
COCO_FILE = "labels.json"


class DetectDatasetError(ValueError):
    """A labelled dataset that cannot be used; the message names the folder, file or line."""


@dataclass(frozen=True)
class LabelledDataset:
    """Pairs (sorted by name) and their labels (``labels.boxes_at(pair.name, (width, height))``)."""

    root: Path
    pairs: tuple[ImagePair, ...]
    labels: LabelSet
    #: Class names in id order (the labels' names file or COCO categories).
    classes: tuple[str, ...]

    def boxes(self, name: str, image_size: tuple[int, int]) -> list[LabeledBox]:
        """Boxes of pair ``name`` in pixels of its visible image, ``image_size`` = (width, height)."""
        return self.labels.boxes_at(name, image_size)


def default_labels_path(root: Path) -> Path:
    """``labels/`` when it exists, else ``labels.json``; the first when neither does (for the error)."""
    directory, coco = root / LABELS_DIR, root / COCO_FILE
    if not directory.exists() and coco.is_file():
        return coco
    return directory


def load_labelled_dataset(root: str | Path, labels: str | Path | None = None,
                          limit: int | None = None) -> LabelledDataset:
    """Pairs of ``root`` and their labels (``labels`` or the default place); ``DetectDatasetError`` if unusable.

    Unpaired images are an error (as in ``mex-fusion eval``); ``limit`` keeps the first N pairs by
    name (labels are checked for those only).
    """
    root = Path(root)
    try:
        listing = find_pairs(root)
    except DatasetError as exc:
        raise DetectDatasetError(str(exc)) from exc
    unpaired = [f"{n} (no infrared)" for n in listing.missing_ir] + [f"{n} (no visible)" for n in listing.missing_vi]
    if unpaired:
        shown = ", ".join(unpaired[:5]) + (f" and {len(unpaired) - 5} more" if len(unpaired) > 5 else "")
        raise DetectDatasetError(f"{root}: unpaired image files: {shown}; every image needs a partner of the same name")
    pairs = listing.pairs
    if limit is not None:
        if limit < 1:
            raise DetectDatasetError(f"limit must be >= 1, got {limit}")
        pairs = pairs[:limit]
    path = Path(labels) if labels is not None else default_labels_path(root)
    if not path.exists():
        raise DetectDatasetError(
            f"labels {path} do not exist: give a labels/ folder of YOLO txt files (<image name>.txt, with "
            f"classes.txt or data.yaml) or a COCO JSON ({COCO_FILE}, or --labels FILE)"
        )
    try:
        label_set = read_labels(path, keys="name")
    except LabelError as exc:
        raise DetectDatasetError(str(exc)) from exc
    if label_set.format == "yolo" and label_set.classes is None:
        raise DetectDatasetError(
            f"labels directory {path} names no classes: add classes.txt (one name per line, the first line is "
            "class id 0) or data.yaml with names:, since detections are matched by class name"
        )
    for pair in pairs:
        if pair.name not in label_set.frames:
            if label_set.format == "yolo":
                raise DetectDatasetError(
                    f"label file {path / (pair.name + '.txt')} does not exist: every image pair needs one "
                    f"(an empty file for a pair without objects); pair {pair.vi_path}"
                )
            raise DetectDatasetError(
                f"labels file {path} has no image named {pair.name!r} (matched by the stem of file_name); "
                f"every image pair needs an entry, one without annotations for a pair without objects"
            )
    classes = label_set.classes
    if classes is None:  # the project's JSON without "classes"
        classes = tuple(sorted({b.label for boxes in label_set.frames.values() for b in boxes}))
    return LabelledDataset(root=root, pairs=tuple(pairs), labels=label_set, classes=tuple(classes))
