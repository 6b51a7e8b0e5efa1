"""Paired dataset discovery and image reading: layouts, errors naming the file, bit depths."""
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mex_fusion_ros.data.paired import (
    DatasetError,
    ImagePair,
    as_pairs,
    find_pairs,
    read_ir,
    read_pair,
    read_vi,
)


def write_image(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image), path
    return path


def make_dataset(root: Path, names_ir, names_vi, *, ir_dir="ir", vi_dir="vi", size=(12, 16)) -> Path:
    rng = np.random.default_rng(0)
    for name in names_ir:
        write_image(root / ir_dir / name, rng.integers(0, 256, size, dtype=np.uint8))
    for name in names_vi:
        write_image(root / vi_dir / name, rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


def test_pairs_match_on_stem_sorted_with_missing_partners_listed(tmp_path):
    root = make_dataset(
        tmp_path / "set",
        ["b.png", "a.png", "only_ir.png", "c.bmp"],
        ["a.jpg", "c.png", "b.png", "only_vi.png"],
    )
    (root / "ir" / "notes.txt").write_text("not an image")
    (root / "vi" / ".hidden.png").write_bytes(b"")
    listing = find_pairs(root)
    assert [pair.name for pair in listing] == ["a", "b", "c"]
    assert listing.pairs[0] == ImagePair("a", root / "ir" / "a.png", root / "vi" / "a.jpg")
    assert listing.missing_ir == ("only_vi",)
    assert listing.missing_vi == ("only_ir",)
    assert len(listing) == 3 and listing.root == root
    assert as_pairs(root) == listing.pairs == as_pairs(listing)


@pytest.mark.parametrize(
    "ir_dir, vi_dir",
    [("infrared", "visible"), ("Ir", "Vis"), ("ir", "vis"), ("Infrared", "VI")],
)
def test_alternative_folder_names(tmp_path, ir_dir, vi_dir):
    root = make_dataset(tmp_path / "set", ["x.png"], ["x.png"], ir_dir=ir_dir, vi_dir=vi_dir)
    listing = find_pairs(root)
    assert [pair.name for pair in listing] == ["x"]
    assert listing.pairs[0].ir_path.parent.name == ir_dir


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        find_pairs(tmp_path / "nowhere")


def test_folder_without_ir_vi_lists_its_subfolders(tmp_path):
    make_dataset(tmp_path / "train", ["a.png"], ["a.png"])
    with pytest.raises(DatasetError, match=r"no infrared .* and visible .*sub-folders are: train"):
        find_pairs(tmp_path)
    (tmp_path / "only" / "vi").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"only has no infrared \(ir/infrared\) sub-folder"):
        find_pairs(tmp_path / "only")


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    with pytest.raises(DatasetError, match="no image pairs: 0 infrared images"):
        find_pairs(tmp_path)
    make_dataset(tmp_path, ["a.png"], ["b.png"])
    with pytest.raises(DatasetError, match="1 infrared images in ir/, 1 visible images in vi/"):
        find_pairs(tmp_path)


def test_ambiguous_layouts_are_errors(tmp_path):
    root = make_dataset(tmp_path / "dup", ["a.png", "a.jpg"], ["a.png"])
    with pytest.raises(DatasetError, match="two images share the name 'a'"):
        find_pairs(root)
    root = make_dataset(tmp_path / "two_dirs", ["a.png"], ["a.png"])
    make_dataset(root, ["a.png"], [], ir_dir="infrared")
    with pytest.raises(DatasetError, match="more than one infrared folder"):
        find_pairs(root)


def test_unreadable_image_is_named(tmp_path):
    root = make_dataset(tmp_path / "set", ["a.png"], [])
    (root / "vi").mkdir()
    (root / "vi" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    pair = find_pairs(root).pairs[0]
    with pytest.raises(DatasetError, match=r"vi/a\.png is unreadable"):
        read_pair(pair)
    with pytest.raises(DatasetError, match=r"gone\.png does not exist"):
        read_ir(tmp_path / "gone.png")


def test_size_mismatch_is_an_error_unless_resize(tmp_path):
    root = tmp_path / "set"
    write_image(root / "ir" / "a.png", np.full((10, 20), 128, np.uint8))
    write_image(root / "vi" / "a.png", np.zeros((30, 40, 3), np.uint8))
    pair = find_pairs(root).pairs[0]
    with pytest.raises(DatasetError) as info:
        read_pair(pair)
    message = str(info.value)
    assert "ir/a.png is 20x10" in message and "vi/a.png is 40x30" in message and "resize=True" in message
    ir, vi = read_pair(pair, resize=True)
    assert ir.shape == (30, 40) and vi.shape == (30, 40, 3) and ir.dtype == np.float32
    assert np.allclose(ir, 128 / 255, atol=1e-6)


def test_read_ir_scales_8_and_16_bit_and_greys_colour(tmp_path):
    values8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ir8 = read_ir(write_image(tmp_path / "ir8.png", values8))
    assert ir8.dtype == np.float32 and ir8.shape == (16, 16)
    assert np.array_equal(ir8, values8.astype(np.float32) / 255)
    values16 = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    ir16 = read_ir(write_image(tmp_path / "ir16.png", values16))
    assert np.allclose(ir16, values16 / 65535.0, atol=1e-7) and ir16.max() == 1.0
    colour = np.zeros((4, 5, 3), np.uint8)
    colour[..., 2] = 200  # red in BGR
    grey = read_ir(write_image(tmp_path / "colour.png", colour))
    assert grey.shape == (4, 5)
    assert np.allclose(grey, cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY) / 255.0, atol=1e-7)


def test_read_vi_returns_rgb_and_keeps_grey(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 2] = 255  # pure red stored as BGR
    rgb = read_vi(write_image(tmp_path / "red.png", bgr))
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.float32
    assert np.all(rgb[..., 0] == 1.0) and np.all(rgb[..., 1:] == 0.0)
    bgra = np.dstack([bgr, np.full((4, 5), 7, np.uint8)])
    assert np.array_equal(read_vi(write_image(tmp_path / "alpha.png", bgra)), rgb)
    grey = read_vi(write_image(tmp_path / "grey.png", np.full((4, 5), 51, np.uint8)))
    assert grey.shape == (4, 5) and np.allclose(grey, 0.2)
    vi16 = read_vi(write_image(tmp_path / "vi16.png", np.full((3, 3, 3), 65535, np.uint16)))
    assert vi16.shape == (3, 3, 3) and np.all(vi16 == 1.0)


def test_as_pairs_rejects_wrong_items():
    with pytest.raises(DatasetError, match="no image pairs"):
        as_pairs([])
    with pytest.raises(DatasetError, match="str"):
        as_pairs(["a.png"])


stems = st.text(alphabet="abcdefgh0123_", min_size=1, max_size=6)


@settings(max_examples=25, deadline=None)
@given(
    ir_stems=st.sets(stems, max_size=6),
    vi_stems=st.sets(stems, max_size=6),
    extension=st.sampled_from([".png", ".jpg", ".JPG", ".tif"]),
)
def test_pairing_is_the_intersection_of_stems(ir_stems, vi_stems, extension):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "ir").mkdir()
        (root / "visible").mkdir()
        for stem in ir_stems:
            (root / "ir" / f"{stem}{extension}").touch()
        for stem in vi_stems:
            (root / "visible" / f"{stem}.png").touch()  # listing never opens the files
        common = ir_stems & vi_stems
        if not common:
            with pytest.raises(DatasetError, match="no image pairs"):
                find_pairs(root)
            return
        listing = find_pairs(root)
        assert [pair.name for pair in listing] == sorted(common)
        assert listing.missing_ir == tuple(sorted(vi_stems - ir_stems))
        assert listing.missing_vi == tuple(sorted(ir_stems - vi_stems))
        assert all(pair.ir_path.suffix == extension for pair in listing)


@pytest.mark.data
def test_roadscene_pairs_load(roadscene):
    train, val = find_pairs(roadscene / "train"), find_pairs(roadscene / "val")
    assert (len(train), len(val)) == (166, 25)
    assert train.missing_ir == train.missing_vi == val.missing_ir == val.missing_vi == ()
    for pair in val.pairs[:3]:
        ir, vi = read_pair(pair)
        assert ir.ndim == 2 and vi.shape == (*ir.shape, 3)
        assert ir.dtype == vi.dtype == np.float32
        assert ir.min() >= 0.0 and ir.max() <= 1.0 and vi.min() >= 0.0 and vi.max() <= 1.0
        assert ir.std() > 0.05 and vi.std() > 0.05, f"{pair.name} looks blank"
