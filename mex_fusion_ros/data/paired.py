"""Registered infrared/visible image pairs on disk (RoadScene, MSRS, M3FD, LLVIP, TNO layouts).

A dataset folder holds one infrared and one visible sub-folder; files with the same stem (name
without extension) are a pair, so ``a.png`` pairs with ``a.jpg``. Recognised sub-folder names
(case-insensitive): infrared ``ir`` / ``infrared``; visible ``vi`` / ``vis`` / ``visible``.

ROS-free and torch-free. Images come back as the project conventions: infrared ``float32 (H, W)``
in [0, 1]; visible ``float32 (H, W, 3)`` RGB in [0, 1] (``(H, W)`` for a grey visible image).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IR_DIR_NAMES: tuple[str, ...] = ("ir", "infrared")
VI_DIR_NAMES: tuple[str, ...] = ("vi", "vis", "visible")
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


class DatasetError(ValueError):
    """A dataset folder or image file cannot be used; the message names the folder or file."""


@dataclass(frozen=True)
class ImagePair:
    """One registered pair: ``name`` is the shared file stem."""

    name: str
    ir_path: Path
    vi_path: Path


@dataclass(frozen=True)
class PairListing:
    """The pairs of one dataset folder, sorted by name, and the files left without a partner.

    ``missing_ir``: visible files (by stem) that have no infrared partner; ``missing_vi``: infrared
    files that have no visible partner. Both are skipped, sorted, and listed here.
    """

    pairs: tuple[ImagePair, ...]
    missing_ir: tuple[str, ...] = ()
    missing_vi: tuple[str, ...] = ()
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[ImagePair]:
        return iter(self.pairs)

    def __getitem__(self, index: int) -> ImagePair:
        return self.pairs[index]


def _find_modality_dir(root: Path, names: tuple[str, ...], what: str) -> Path | None:
    matches = [child for child in root.iterdir() if child.is_dir() and child.name.lower() in names]
    if len(matches) > 1:
        found = ", ".join(sorted(child.name for child in matches))
        raise DatasetError(f"{root}: more than one {what} folder ({found}); keep one")
    return matches[0] if matches else None


def _images_by_stem(folder: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file() or entry.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if entry.stem in images:
            raise DatasetError(
                f"{folder}: two images share the name {entry.stem!r} ({images[entry.stem].name}, "
                f"{entry.name}); pairs are matched by name, so each name must be unique"
            )
        images[entry.stem] = entry
    return images


def find_pairs(root: str | os.PathLike[str]) -> PairListing:
    """List the infrared/visible pairs of a dataset folder (see the module docstring for the layout).

    Raises ``DatasetError`` when the folder does not exist, has no infrared or no visible
    sub-folder, or holds no pair at all. Unpaired files are skipped and listed in the result.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a folder")
    ir_dir = _find_modality_dir(root, IR_DIR_NAMES, "infrared")
    vi_dir = _find_modality_dir(root, VI_DIR_NAMES, "visible")
    if ir_dir is None or vi_dir is None:
        lacking = " and ".join(
            f"{what} ({'/'.join(names)})"
            for what, names, found in (("infrared", IR_DIR_NAMES, ir_dir), ("visible", VI_DIR_NAMES, vi_dir))
            if found is None
        )
        subfolders = sorted(child.name for child in root.iterdir() if child.is_dir())
        hint = f"; its sub-folders are: {', '.join(subfolders)}" if subfolders else "; it has no sub-folders"
        raise DatasetError(f"{root} has no {lacking} sub-folder{hint}")
    ir_images = _images_by_stem(ir_dir)
    vi_images = _images_by_stem(vi_dir)
    common = sorted(ir_images.keys() & vi_images.keys())
    if not common:
        raise DatasetError(
            f"{root} holds no image pairs: {len(ir_images)} infrared images in {ir_dir.name}/, "
            f"{len(vi_images)} visible images in {vi_dir.name}/, no shared file names"
        )
    pairs = tuple(ImagePair(name, ir_images[name], vi_images[name]) for name in common)
    return PairListing(
        pairs=pairs,
        missing_ir=tuple(sorted(vi_images.keys() - ir_images.keys())),
        missing_vi=tuple(sorted(ir_images.keys() - vi_images.keys())),
        root=root,
    )


def _read_unchanged(path: Path) -> np.ndarray:
    # IMREAD_UNCHANGED keeps the bit depth (8 or 16 bit) and the channel count; it also ignores
    # EXIF rotation, which must not be applied to one image of a registered pair only.
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        reason = "does not exist" if not path.exists() else "is unreadable or not a valid image (corrupt?)"
        raise DatasetError(f"image file {path} {reason}")
    return image


def _to_unit_float(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535.0)
    if image.dtype in (np.float32, np.float64):
        low, high = float(np.nanmin(image)), float(np.nanmax(image))
        if not np.isfinite(image).all() or low < 0.0 or high > 1.0:
            raise DatasetError(f"image file {path}: float pixels must lie in [0, 1], found [{low}, {high}]")
        return image.astype(np.float32)
    raise DatasetError(
        f"image file {path}: unsupported pixel type {image.dtype} (expected 8/16-bit or float)"
    )


def _drop_alpha(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3]
    raise DatasetError(f"image file {path}: unsupported shape {image.shape}")


def read_ir(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an infrared image as ``float32 (H, W)`` in [0, 1].

    8-bit files are divided by 255, 16-bit (radiometric) files by 65535; a colour-coded file is
    converted to grey (BT.601 luma). Raises ``DatasetError`` naming the file when it is missing,
    corrupt or of an unsupported type.
    """
    path = Path(path)
    image = _drop_alpha(_read_unchanged(path), path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(_to_unit_float(image, path))


def read_vi(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a visible image as ``float32 (H, W, 3)`` RGB in [0, 1], or ``(H, W)`` if the file is grey.

    Raises ``DatasetError`` naming the file when it is missing, corrupt or of an unsupported type.
    """
    path = Path(path)
    image = _drop_alpha(_read_unchanged(path), path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(_to_unit_float(image, path))


def read_pair(pair: ImagePair, resize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair as ``(ir (H, W), vi (H, W, 3) or (H, W))``, float32 in [0, 1].

    The two images of a registered pair must have the same size; otherwise ``DatasetError`` names
    both files and sizes, unless ``resize=True``, which resizes the infrared image to the visible
    size (area interpolation when shrinking, bilinear when enlarging).
    """
    ir = read_ir(pair.ir_path)
    vi = read_vi(pair.vi_path)
    if ir.shape[:2] != vi.shape[:2]:
        if not resize:
            raise DatasetError(
                f"pair {pair.name!r}: infrared {pair.ir_path} is {ir.shape[1]}x{ir.shape[0]} but visible "
                f"{pair.vi_path} is {vi.shape[1]}x{vi.shape[0]} (width x height); pass resize=True to "
                "resize the infrared image to the visible size"
            )
        height, width = vi.shape[:2]
        shrinking = ir.shape[0] * ir.shape[1] > height * width
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        ir = np.clip(cv2.resize(ir, (width, height), interpolation=interpolation), 0.0, 1.0)
    return ir, vi


PairSource = str | os.PathLike[str] | PairListing | Sequence[ImagePair]


def as_pairs(root_or_pairs: PairSource) -> tuple[ImagePair, ...]:
    """Pairs from a dataset folder (via ``find_pairs``), a ``PairListing`` or a sequence of pairs."""
    if isinstance(root_or_pairs, (str, os.PathLike)):
        return find_pairs(root_or_pairs).pairs
    pairs = tuple(root_or_pairs)
    if not pairs:
        raise DatasetError("no image pairs given")
    for pair in pairs:
        if not isinstance(pair, ImagePair):
            raise DatasetError(f"expected ImagePair items, got {type(pair).__name__}")
    return pairs


def read_pair_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Pair names (file stems) listed in a text file, one per line; ``#`` starts a comment.

    Used for held-out splits (``config/splits/*.txt``): the same file keeps pairs out of training
    and selects them for evaluation (``mex-fusion eval --pairs``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"pair list {path}: cannot read it ({error})") from None
    names = []
    for line in text.splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    if not names:
        raise DatasetError(f"pair list {path} names no pairs")
    return tuple(names)


def select_pairs(pairs: Sequence[ImagePair], *, keep: Sequence[str] | None = None,
                 drop: Sequence[str] = ()) -> tuple[ImagePair, ...]:
    """The pairs named in ``keep`` (all when None) minus those named in ``drop``, in input order.

    Every name in ``keep`` must exist (a typo in a split file is an error, not an empty split).
    """
    if keep is not None:
        available = {pair.name for pair in pairs}
        unknown = sorted(set(keep) - available)
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise DatasetError(f"pairs not found: {shown}")
        wanted = set(keep)
        pairs = [pair for pair in pairs if pair.name in wanted]
    dropped = set(drop)
    return tuple(pair for pair in pairs if pair.name not in dropped)
