"""Ground-truth labels for detection scoring (ROS-free): per bag stamp or per dataset image.

The scores themselves (AP, mAP50, mAP50-95, recall) are ``eval.detection_metrics``. Labels
(``read_labels`` / ``load_labels``) come in three formats, told apart by what the path is:

- **JSON keyed by stamp** (a ``.json`` file with ``"frames"``), the format ``bag make`` writes for
  the synthetic scene (``scene_objects.json`` in the bag directory)::

    {"classes": ["person", "car"], "frames": {"<rgb stamp ns>": [["person", x0, y0, x1, y1], ...]}}

  with pixel corners;
- **YOLO txt** (a directory): one ``<rgb stamp ns>.txt`` per labelled frame, lines
  ``class_id cx cy w h`` as fractions of the image width / height (ultralytics convention; a 6th
  column, a confidence, is ignored; an empty file is a frame with no objects). Class names come
  from ``classes.txt`` (one name per line) or ``data.yaml`` (``names:`` as a list or
  ``{id: name}``) in the directory (both present: they must agree); without either the class id,
  as text, is the name. Converting to pixels needs the image size (``image_size``);
- **COCO** (a ``.json`` file with ``"images"`` and ``"annotations"``): ``annotations`` with a
  pixel ``bbox`` ``[x, y, w, h]`` and a ``category_id`` of ``categories`` (``id`` / ``name``);
  each image carries its stamp as ``stamp_ns`` (integer), ``stamp`` (``{"sec", "nanosec"}``) or,
  failing both, a ``file_name`` whose stem is the stamp in ns (``1700000000123456789.png``). An
  image without annotations is a labelled frame with no objects; ``iscrowd`` annotations are
  skipped.

Stamps are the RGB header stamps in ns; boxes are in the RGB camera's image, which is the fused
frame's geometry. Anything malformed raises ``LabelError`` naming the file, the entry or line where
possible, and what was expected. Detections match labels by class NAME, and the detector's names
are its model's (COCO: person, car, ...), so YOLO labels without a names file (names "0", "1", ...)
only match a model whose names are the ids.

With ``keys="name"`` (``detect eval`` / ``detect train`` on a paired image dataset) frames are
keyed by image name instead of stamp: a YOLO file is ``<image name>.txt``, a COCO image is its
``file_name``'s stem and the JSON format's keys are image names.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from mex_fusion_ros.eval.detection_metrics import LabeledBox

#: How far YOLO fractions may stray outside [0, 1]: the tools that write them round (6 decimals,
#: or a box computed from whole pixels), and a label a hair outside the image is still a label.
YOLO_TOLERANCE = 1e-3
YOLO_CLASSES_FILE = "classes.txt"
YOLO_DATA_FILE = "data.yaml"
LABEL_FORMATS = ("json", "yolo", "coco")
#: What frames are keyed by: the RGB header stamp in ns (bags) or the image name (paired datasets).
LABEL_KEYS = ("stamp", "name")
_STAMP = re.compile(r"[0-9]+")
_CLASS_ID = re.compile(r"[0-9]+(\.0*)?")  # ultralytics writes ints; some converters write "3.0"
_JSON_EXPECTED = '{"frames": {"<stamp ns>": [["class", x0, y0, x1, y1], ...]}}'
_COCO_EXPECTED = '{"images": [...], "annotations": [...], "categories": [{"id", "name"}, ...]}'


class LabelError(ValueError):
    """A labels file that cannot be read; the message names the file and the entry."""


@dataclass(frozen=True)
class LabelSet:
    """Labels as read: stamp (ns) or image name -> boxes, in pixels, or for YOLO txt in fractions of the image.

    Reading validates everything; only the conversion of YOLO fractions to pixels waits for the
    image size (``boxes_at`` / ``in_pixels``).
    """

    path: Path
    format: str  # one of LABEL_FORMATS
    frames: dict[int | str, list[LabeledBox]]
    #: The class names the file declares, in id order (YOLO names file, COCO categories, the JSON's
    #: "classes"); None when it declares none.
    classes: tuple[str, ...] | None = None

    @property
    def normalised(self) -> bool:
        """True when the boxes are fractions of the image width / height (YOLO txt)."""
        return self.format == "yolo"

    def boxes_at(self, stamp: int | str, image_size: tuple[int, int] | None = None) -> list[LabeledBox]:
        """The boxes of one frame in pixels (none when the frame is not in the labels)."""
        boxes = self.frames.get(stamp, [])
        if not self.normalised:
            return list(boxes)
        width, height = self._pixel_scale(image_size)
        return [
            LabeledBox(b.label, (b.box[0] * width, b.box[1] * height, b.box[2] * width, b.box[3] * height))
            for b in boxes
        ]

    def in_pixels(self, image_size: tuple[int, int] | None = None) -> dict[int | str, list[LabeledBox]]:
        """Stamp (ns) -> boxes in pixels; ``image_size`` = (width, height) is needed for YOLO txt."""
        return {stamp: self.boxes_at(stamp, image_size) for stamp in self.frames}

    def _pixel_scale(self, image_size: tuple[int, int] | None) -> tuple[int, int]:
        if image_size is None:
            raise LabelError(
                f"labels {self.path} are YOLO txt (fractions of the image); image_size=(width, height) "
                "is needed to convert them to pixels"
            )
        width, height = image_size
        if width <= 0 or height <= 0:
            raise ValueError(f"image_size must be positive (width, height), got {image_size}")
        return width, height


def read_labels(path: str | Path, keys: str = "stamp") -> LabelSet:
    """Read and validate labels in any of the three formats (module docstring); ``LabelError`` if malformed.

    ``keys``: ``"stamp"`` (bags: frames keyed by RGB header stamp in ns, ints) or ``"name"`` (paired
    image datasets: frames keyed by image name, strings).
    """
    if keys not in LABEL_KEYS:
        raise ValueError(f"keys must be one of {LABEL_KEYS}, got {keys!r}")
    path = Path(path)
    if path.is_dir():
        names = _yolo_names(path)
        classes = tuple(names[i] for i in sorted(names)) if names is not None else None
        return LabelSet(path, "yolo", _read_yolo_dir(path, names, keys), classes)
    if not path.exists():
        raise LabelError(f"labels file {path} does not exist")
    if path.suffix.lower() == ".txt":
        per_frame = "<stamp ns>.txt" if keys == "stamp" else "<image name>.txt"
        raise LabelError(
            f"labels file {path} is a single text file; for YOLO txt labels pass the directory that holds "
            f"one {per_frame} per frame"
        )
    try:
        document = json.loads(_read_text(path))
    except RecursionError:
        raise LabelError(f"labels file {path} is malformed: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer literal too long to convert
        raise LabelError(f"labels file {path} is malformed: not JSON ({exc})") from None
    if isinstance(document, dict) and "images" in document and "annotations" in document:
        frames, classes = _parse_coco(document, path, keys)
        return LabelSet(path, "coco", frames, classes)
    if isinstance(document, dict) and "frames" in document:
        classes = document.get("classes")
        declared = tuple(classes) if isinstance(classes, list) and all(isinstance(c, str) for c in classes) else None
        return LabelSet(path, "json", _parse_frames(document["frames"], path, keys), declared)
    raise LabelError(
        f"labels file {path} is malformed: expected {_JSON_EXPECTED} or a COCO file {_COCO_EXPECTED}, "
        f"got {_short(document)}"
    )


def load_labels(path: str | Path, image_size: tuple[int, int] | None = None) -> dict[int, list[LabeledBox]]:
    """Stamp (ns) -> boxes in pixels from labels in any of the three formats (module docstring).

    ``image_size`` = (width, height) of the labelled image (the RGB / fused frame) converts YOLO txt
    fractions to pixels and is required for them; the other formats are in pixels already and
    ignore it. ``LabelError`` for anything malformed.
    """
    return read_labels(path).in_pixels(image_size)


# ------------------------------------------------------------------------------------------ parsing
def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _malformed(path: Path, where: str | None, what: str) -> LabelError:
    return LabelError(f"labels file {path} is malformed{f' at {where}' if where else ''}: {what}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelError(f"labels file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise _malformed(path, None, f"not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise LabelError(f"labels file {path} cannot be read: {exc}") from None


def _number(value: object, path: Path, where: str, name: str) -> float:
    """A finite JSON number (not a bool)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    raise _malformed(path, where, f"{name} must be a finite number, got {_short(value)}")


def _stamp_key(text: object, path: Path, where: str) -> int:
    if isinstance(text, str) and _STAMP.fullmatch(text):
        return int(text)
    raise _malformed(path, where, f"stamp must be the header stamp in ns (digits), got {_short(text)}")


def _parse_frames(frames: object, path: Path, keys: str = "stamp") -> dict[int | str, list[LabeledBox]]:
    """The project's JSON: ``{"<stamp ns>": [["class", x0, y0, x1, y1], ...]}`` (or image names)."""
    if not isinstance(frames, dict):
        raise _malformed(path, '"frames"', f"expected {_JSON_EXPECTED}, got {_short(frames)}")
    labels: dict[int | str, list[LabeledBox]] = {}
    for key, boxes in frames.items():
        stamp = _stamp_key(key, path, f"frame {_short(key)}") if keys == "stamp" else key
        if stamp in labels:
            raise _malformed(path, f"frame {_short(key)}", f"stamp {stamp} given twice")
        if not isinstance(boxes, list):
            raise _malformed(path, f"frame {key}", f"expected a list of boxes, got {_short(boxes)}")
        labels[stamp] = []
        for index, item in enumerate(boxes):
            where = f"frame {key} box {index}"
            if not isinstance(item, list) or len(item) != 5:
                raise _malformed(path, where, f'expected ["class", x0, y0, x1, y1], got {_short(item)}')
            label = item[0]
            if not isinstance(label, str):
                raise _malformed(path, where, f"class must be a name (string), got {_short(label)}")
            x0, y0, x1, y1 = (_number(v, path, where, n) for v, n in zip(item[1:], ("x0", "y0", "x1", "y1")))
            if x1 < x0 or y1 < y0:
                raise _malformed(path, where, f"expected corners with x0 <= x1 and y0 <= y1, got {item[1:]}")
            labels[stamp].append(LabeledBox(label, (x0, y0, x1, y1)))
    return labels


# ---------------------------------------------------------------------------------------- YOLO txt
def _read_yolo_dir(
    directory: Path, names: dict[int, str] | None, keys: str = "stamp"
) -> dict[int | str, list[LabeledBox]]:
    try:
        files = sorted(
            p for p in directory.iterdir() if p.suffix.lower() == ".txt" and p.name != YOLO_CLASSES_FILE and p.is_file()
        )
    except OSError as exc:
        raise LabelError(f"labels directory {directory} cannot be read: {exc}") from None
    frames: dict[int | str, list[LabeledBox]] = {}
    for file in files:
        if keys == "name":
            stamp: int | str = file.stem
        elif not _STAMP.fullmatch(file.stem):
            raise _malformed(file, None, "YOLO label files must be named <RGB header stamp in ns>.txt")
        else:
            stamp = int(file.stem)
        if stamp in frames:
            raise _malformed(file, None, f"a second file for stamp {stamp} (leading zeros?)")
        frames[stamp] = [
            _yolo_box(line.split(), names, file, number)
            for number, line in enumerate(_read_text(file).splitlines(), 1)
            if line.strip()
        ]
    if not frames:
        per_frame = "<stamp ns>.txt" if keys == "stamp" else "<image name>.txt"
        raise LabelError(
            f"labels directory {directory} holds no YOLO label files; expected one {per_frame} per labelled frame"
        )
    return frames


def _yolo_box(fields: list[str], names: dict[int, str] | None, file: Path, number: int) -> LabeledBox:
    where = f"line {number}"
    if len(fields) not in (5, 6):
        raise _malformed(
            file,
            where,
            f"expected 'class_id cx cy w h' (a 6th column, confidence, is allowed), got {len(fields)} columns",
        )
    if not _CLASS_ID.fullmatch(fields[0]):
        raise _malformed(file, where, f"class id must be a non-negative integer, got {_short(fields[0])}")
    class_id = int(fields[0].split(".")[0])
    values = []
    for text, name in zip(fields[1:], ("cx", "cy", "w", "h", "confidence")):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise _malformed(file, where, f"{name} must be a finite number, got {_short(text)}")
        values.append(value)
    cx, cy, w, h = values[:4]
    corners = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    low, high = -YOLO_TOLERANCE, 1.0 + YOLO_TOLERANCE
    if w < 0 or h < 0 or not all(low <= v <= high for v in (cx, cy, w, h, *corners)):
        raise _malformed(
            file, where, f"cx cy w h must be fractions of the image in [0, 1] with the box inside it, got {fields[1:5]}"
        )
    if names is None:
        label = str(class_id)
    elif class_id in names:
        label = names[class_id]
    else:
        raise _malformed(file, where, f"class id {class_id} has no name (names given: ids {sorted(names)})")
    return LabeledBox(label, corners)


def _yolo_names(directory: Path) -> dict[int, str] | None:
    """Class id -> name from classes.txt and/or data.yaml (both: they must agree); None without either."""
    from_txt = from_yaml = None
    classes_file, data_file = directory / YOLO_CLASSES_FILE, directory / YOLO_DATA_FILE
    if classes_file.is_file():
        lines = [line.strip() for line in _read_text(classes_file).splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        for number, line in enumerate(lines, 1):
            if not line:
                raise _malformed(classes_file, f"line {number}", "empty class name (one name per line)")
        from_txt = dict(enumerate(lines))
    if data_file.is_file():
        from_yaml = _names_from_yaml(data_file)
    if from_txt is not None and from_yaml is not None and from_txt != from_yaml:
        raise LabelError(
            f"labels directory {directory}: {YOLO_CLASSES_FILE} and {YOLO_DATA_FILE} name the classes differently"
        )
    return from_txt if from_txt is not None else from_yaml


def _names_from_yaml(path: Path) -> dict[int, str]:
    try:
        document = yaml.safe_load(_read_text(path))
    except Exception as exc:  # YAMLError, or what a constructor raises (an impossible date: ValueError)
        raise _malformed(path, None, f"not YAML ({type(exc).__name__})") from None
    expected = "names: [name, ...] or names: {id: name, ...}"
    if not isinstance(document, dict) or "names" not in document:
        raise _malformed(path, None, f"expected {expected}, got {_short(document)}")
    raw = document["names"]
    if isinstance(raw, list):
        items = list(enumerate(raw))
    elif isinstance(raw, dict):
        items = list(raw.items())
    else:
        raise _malformed(path, "names", f"expected {expected}, got {_short(raw)}")
    names: dict[int, str] = {}
    for key, name in items:
        if isinstance(key, str) and _STAMP.fullmatch(key):
            key = int(key)
        if not isinstance(key, int) or isinstance(key, bool) or key < 0:
            raise _malformed(path, "names", f"class ids must be non-negative integers, got {_short(key)}")
        # YAML turns unquoted yes/no/on/off into booleans: a name that did so must be quoted.
        if isinstance(name, bool) or not isinstance(name, (str, int, float)) or not str(name).strip():
            raise _malformed(path, f"names[{key}]", f"expected a class name (quote it), got {_short(name)}")
        if key in names:
            raise _malformed(path, f"names[{key}]", "class id given twice")
        names[key] = str(name)
    return names


# -------------------------------------------------------------------------------------------- COCO
def _coco_list(document: dict, key: str, path: Path) -> list:
    value = document.get(key)
    if not isinstance(value, list):
        raise _malformed(path, f'"{key}"', f"expected a list in a COCO file {_COCO_EXPECTED}, got {_short(value)}")
    return value


def _coco_id(entry: dict, key: str, path: Path, where: str) -> int | str:
    value = entry.get(key)
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _malformed(path, where, f'"{key}" must be an integer (or string) id, got {_short(value)}')


def _coco_stamp(image: dict, path: Path, where: str) -> int:
    if "stamp_ns" in image:
        value = image["stamp_ns"]
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise _malformed(path, where, f'"stamp_ns" must be a non-negative integer, got {_short(value)}')
    if "stamp" in image:
        value = image["stamp"]
        if isinstance(value, dict):
            sec, nanosec = value.get("sec"), value.get("nanosec")
            valid = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (sec, nanosec))
            if valid and nanosec < 10**9:
                return sec * 10**9 + nanosec
        raise _malformed(path, where, f'"stamp" must be {{"sec": int, "nanosec": int < 1e9}}, got {_short(value)}')
    name = image.get("file_name")
    if isinstance(name, str):
        stem = Path(re.split(r"[\\/]", name)[-1]).stem
        if _STAMP.fullmatch(stem):
            return int(stem)
    raise _malformed(
        path,
        where,
        'an image needs its stamp: "stamp_ns" (int), "stamp" {"sec", "nanosec"} or a "file_name" '
        f"<stamp ns>.png, got file_name {_short(name)}",
    )


def _coco_name(image: dict, path: Path, where: str) -> str:
    name = image.get("file_name")
    if isinstance(name, str) and name.strip():
        return Path(re.split(r"[\\/]", name)[-1]).stem
    raise _malformed(path, where, f'an image needs a "file_name" (its stem is the image name), got {_short(name)}')


def _parse_coco(
    document: dict, path: Path, keys: str = "stamp"
) -> tuple[dict[int | str, list[LabeledBox]], tuple[str, ...]]:
    images, annotations = _coco_list(document, "images", path), _coco_list(document, "annotations", path)
    categories = _coco_list(document, "categories", path)
    names: dict[int | str, str] = {}
    for index, category in enumerate(categories):
        where = f"categories[{index}]"
        if not isinstance(category, dict):
            raise _malformed(path, where, f'expected {{"id", "name"}}, got {_short(category)}')
        category_id = _coco_id(category, "id", path, where)
        if not isinstance(category.get("name"), str):
            raise _malformed(path, where, f'"name" must be a string, got {_short(category.get("name"))}')
        if category_id in names:
            raise _malformed(path, where, f"category id {category_id!r} given twice")
        names[category_id] = category["name"]
    stamps: dict[int | str, int | str] = {}
    frames: dict[int | str, list[LabeledBox]] = {}
    for index, image in enumerate(images):
        where = f"images[{index}]"
        if not isinstance(image, dict):
            raise _malformed(path, where, f'expected {{"id", "stamp_ns" | "stamp" | "file_name"}}, got {_short(image)}')
        image_id = _coco_id(image, "id", path, where)
        if image_id in stamps:
            raise _malformed(path, where, f"image id {image_id!r} given twice")
        stamp = _coco_stamp(image, path, where) if keys == "stamp" else _coco_name(image, path, where)
        if stamp in frames:
            raise _malformed(path, where, f"{keys} {stamp} belongs to two images")
        stamps[image_id] = stamp
        frames[stamp] = []
    for index, annotation in enumerate(annotations):
        where = f"annotations[{index}]"
        if not isinstance(annotation, dict):
            raise _malformed(path, where, f'expected {{"image_id", "category_id", "bbox"}}, got {_short(annotation)}')
        crowd = annotation.get("iscrowd", 0)
        if not isinstance(crowd, int):  # bool is an int
            raise _malformed(path, where, f'"iscrowd" must be 0 or 1, got {_short(crowd)}')
        if crowd:
            continue  # crowd regions are not objects to find (COCO ignores them too)
        image_id = _coco_id(annotation, "image_id", path, where)
        if image_id not in stamps:
            raise _malformed(path, where, f"image_id {image_id!r} is not among the images")
        category_id = _coco_id(annotation, "category_id", path, where)
        if category_id not in names:
            raise _malformed(path, where, f"category_id {category_id!r} is not among the categories")
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise _malformed(path, where, f'"bbox" must be [x, y, w, h] in pixels, got {_short(bbox)}')
        x, y, w, h = (_number(v, path, where, f"bbox {n}") for v, n in zip(bbox, "xywh"))
        if w < 0 or h < 0:
            raise _malformed(path, where, f"bbox width and height must be >= 0, got {bbox}")
        frames[stamps[image_id]].append(LabeledBox(names[category_id], (x, y, x + w, y + h)))
    return frames, tuple(dict.fromkeys(names.values()))
