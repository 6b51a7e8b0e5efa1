"""Training crops: shapes, reproducibility by (seed, epoch, index), crop/flip geometry, errors."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mex_fusion_ros.data import DEGRADATION_TYPES, DatasetError, DegradedCropDataset, UnknownPresetError
from mex_fusion_ros.data.paired import find_pairs, read_pair

CROP = 16


def make_dataset(root: Path, count: int = 3, size=(24, 30), grey_visible: bool = False) -> Path:
    rng = np.random.default_rng(1)
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir()
    for index in range(count):
        cv2.imwrite(str(root / "ir" / f"{index:03d}.png"), rng.integers(0, 256, size, dtype=np.uint8))
        shape = size if grey_visible else (*size, 3)
        cv2.imwrite(str(root / "vi" / f"{index:03d}.png"), rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def items_equal(a: dict, b: dict) -> bool:
    return a["preset"] == b["preset"] and all(
        torch.equal(a[key], b[key]) for key in ("ir", "vi", "clean_ir", "clean_vi", "label", "present")
    )


def test_item_shapes_ranges_and_labels(tmp_path):
    dataset = DegradedCropDataset(make_dataset(tmp_path / "set"), crop_size=CROP, seed=0)
    assert len(dataset) == 3
    types = len(DEGRADATION_TYPES)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["ir"].shape == item["clean_ir"].shape == (1, CROP, CROP)
        assert item["vi"].shape == item["clean_vi"].shape == (3, CROP, CROP)
        assert item["label"].shape == item["present"].shape == (types,)
        for key in ("ir", "vi", "clean_ir", "clean_vi", "label", "present"):
            assert item[key].dtype == torch.float32 and item[key].is_contiguous()
        for key in ("ir", "vi", "clean_ir", "clean_vi", "label"):
            assert item[key].min() >= 0.0 and item[key].max() <= 1.0
        assert torch.equal(item["present"], (item["label"] > 0).float())
        assert isinstance(item["preset"], str)
    with pytest.raises(IndexError):
        dataset[3]


def test_reproducible_by_seed_epoch_and_index(tmp_path):
    root = make_dataset(tmp_path / "set")
    first = DegradedCropDataset(root, crop_size=CROP, seed=5)
    second = DegradedCropDataset(find_pairs(root), crop_size=CROP, seed=5)
    assert all(items_equal(first[i], second[i]) for i in range(3))
    assert items_equal(first[1], first[1])
    other_seed = DegradedCropDataset(root, crop_size=CROP, seed=6)
    assert not any(items_equal(first[i], other_seed[i]) for i in range(3))
    epoch0 = [first[i] for i in range(3)]
    first.set_epoch(1)
    assert not any(items_equal(epoch0[i], first[i]) for i in range(3))
    second.set_epoch(1)
    assert all(items_equal(first[i], second[i]) for i in range(3))


def test_crop_and_flips_come_from_the_clean_pair(tmp_path):
    root = make_dataset(tmp_path / "set", count=1, size=(20, 26))
    ir_full, vi_full = read_pair(find_pairs(root).pairs[0])
    dataset = DegradedCropDataset(root, crop_size=CROP, presets=["clean"], seed=0, samples_per_epoch=40)
    flips_seen = set()
    for index in range(len(dataset)):
        item = dataset[index]
        assert torch.equal(item["ir"], item["clean_ir"]) and torch.equal(item["vi"], item["clean_vi"])
        crop_ir = item["clean_ir"][0].numpy()
        crop_vi = item["clean_vi"].numpy().transpose(1, 2, 0)
        found = None
        for flip_h in (False, True):
            for flip_v in (False, True):
                ir_view = ir_full[::-1] if flip_v else ir_full
                ir_view = ir_view[:, ::-1] if flip_h else ir_view
                vi_view = vi_full[::-1] if flip_v else vi_full
                vi_view = vi_view[:, ::-1] if flip_h else vi_view
                for top in range(ir_full.shape[0] - CROP + 1):
                    for left in range(ir_full.shape[1] - CROP + 1):
                        window = (slice(top, top + CROP), slice(left, left + CROP))
                        if np.array_equal(ir_view[window], crop_ir):
                            # Infrared and visible are cropped and flipped together.
                            assert np.array_equal(vi_view[window], crop_vi)
                            found = (flip_h, flip_v)
        assert found is not None, f"item {index} is not a crop of the clean pair"
        flips_seen.add(found)
    assert len(flips_seen) == 4


def test_fixed_presets_degrade_the_crop_and_label_it(tmp_path):
    root = make_dataset(tmp_path / "set")
    dataset = DegradedCropDataset(root, crop_size=CROP, presets=["noise50", "stripe"], samples_per_epoch=12)
    seen = set()
    for index in range(len(dataset)):
        item = dataset[index]
        seen.add(item["preset"])
        assert item["preset"] in ("noise50", "stripe")
        if item["preset"] == "noise50":
            assert item["label"][DEGRADATION_TYPES.index("vi_noise")] == 1.0
            assert not torch.equal(item["vi"], item["clean_vi"]) and torch.equal(item["ir"], item["clean_ir"])
        else:
            assert item["present"].tolist() == [0, 0, 0, 0, 0, 1, 0]
            assert torch.equal(item["vi"], item["clean_vi"]) and not torch.equal(item["ir"], item["clean_ir"])
    assert seen == {"noise50", "stripe"}


def test_random_presets_vary_over_items(tmp_path):
    dataset = DegradedCropDataset(make_dataset(tmp_path / "set"), crop_size=CROP, samples_per_epoch=60)
    presets = {dataset[i]["preset"] for i in range(len(dataset))}
    assert len(presets) > 5 and all(name.startswith("sampled:") for name in presets)


def test_grey_visible_is_replicated_to_three_channels(tmp_path):
    dataset = DegradedCropDataset(make_dataset(tmp_path / "grey", grey_visible=True), crop_size=CROP)
    item = dataset[0]
    for key in ("vi", "clean_vi"):
        assert item[key].shape == (3, CROP, CROP)
        assert torch.equal(item[key][0], item[key][1]) and torch.equal(item[key][0], item[key][2])


def test_constructor_errors(tmp_path):
    root = make_dataset(tmp_path / "set", size=(12, 30))
    with pytest.raises(DatasetError, match=r"000\.png\) is 30x12, smaller than the 16x16 crop"):
        DegradedCropDataset(root, crop_size=CROP)
    with pytest.raises(UnknownPresetError, match="'fog'"):
        DegradedCropDataset(root, crop_size=8, presets=["noise15", "fog"])
    with pytest.raises(TypeError, match="list of preset names"):
        DegradedCropDataset(root, crop_size=8, presets="noise15")
    with pytest.raises(DatasetError, match="does not exist"):
        DegradedCropDataset(tmp_path / "missing")


def test_dataloader_batches(tmp_path):
    dataset = DegradedCropDataset(make_dataset(tmp_path / "set"), crop_size=CROP, samples_per_epoch=8)
    batches = list(DataLoader(dataset, batch_size=4, shuffle=True, num_workers=0))
    assert len(batches) == 2
    batch = batches[0]
    assert batch["ir"].shape == (4, 1, CROP, CROP) and batch["vi"].shape == (4, 3, CROP, CROP)
    assert batch["label"].shape == (4, len(DEGRADATION_TYPES)) and len(batch["preset"]) == 4


def test_data_package_does_not_import_torch():
    code = (
        "import sys, mex_fusion_ros.data as d; d.apply_preset; d.find_pairs; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


@pytest.mark.data
def test_roadscene_crops(roadscene):
    dataset = DegradedCropDataset(roadscene / "val", crop_size=128, seed=0)
    assert len(dataset) == 25
    item = dataset[0]
    assert item["ir"].shape == (1, 128, 128) and item["vi"].shape == (3, 128, 128)
    assert item["clean_vi"].std() > 0.02


def test_extra_in_memory_images_are_sampled_like_file_pairs(tmp_path):
    from mex_fusion_ros.model.training import scene_training_images

    scene = scene_training_images(6)
    assert len(scene) == 6 and scene[0][0].shape == (256, 320) and scene[0][1].shape == (256, 320, 3)
    # Day to dusk within each seed: the visible image darkens.
    assert scene[0][1].mean() > scene[1][1].mean()
    # Only the extra images: every clean crop must come from one of them.
    dataset = DegradedCropDataset([], crop_size=64, samples_per_epoch=8, presets=["clean"], extra_images=scene)
    for index in range(len(dataset)):
        crop = dataset[index]["clean_ir"][0].numpy()
        assert any(_contains(ir, crop) for ir, _ in scene), "a crop that is not from the extra images"
    with pytest.raises(DatasetError, match="extra image pair 0"):
        DegradedCropDataset([], crop_size=64, extra_images=[(np.zeros((32, 32)), np.zeros((32, 32, 3)))])


def _contains(image: np.ndarray, crop: np.ndarray) -> bool:
    """Whether ``crop`` (possibly flipped) is a window of ``image``."""
    for candidate in (crop, crop[:, ::-1], crop[::-1], crop[::-1, ::-1]):
        scores = cv2.matchTemplate(image.astype(np.float32), np.ascontiguousarray(candidate, np.float32),
                                   cv2.TM_SQDIFF)
        if scores.min() < 1e-6 * crop.size:  # matchTemplate sums in float32 (FFT): not exact
            return True
    return False


def test_pair_weights_draw_a_small_folder_as_often_as_a_large_one(tmp_path):
    large = make_dataset(tmp_path / "large", count=6)
    small = make_dataset(tmp_path / "small", count=2, size=(26, 30))  # other pixels than the large set
    pairs = [*find_pairs(large).pairs, *find_pairs(small).pairs]
    dataset = DegradedCropDataset(pairs, crop_size=CROP, samples_per_epoch=400, presets=["clean"],
                                  pair_weights=[1.0] * 6 + [3.0] * 2)
    small_crops = {find_pairs(small).pairs[i].name: read_pair(find_pairs(small).pairs[i])[0] for i in range(2)}
    hits = sum(any(_contains(ir, dataset[i]["clean_ir"][0].numpy()) for ir in small_crops.values())
               for i in range(len(dataset)))
    assert 0.4 < hits / len(dataset) < 0.6  # 2 x 3 of 12 weight units: one half
    with pytest.raises(ValueError, match="pair_weights needs 8"):
        DegradedCropDataset(pairs, crop_size=CROP, samples_per_epoch=4, pair_weights=[1.0])


def test_camera_augmentation_changes_the_clean_target_within_range(tmp_path):
    from mex_fusion_ros.data.degradations import CameraVariation, vary_camera

    root = make_dataset(tmp_path / "data", count=2, size=(64, 64))
    plain = DegradedCropDataset(root, crop_size=CROP, samples_per_epoch=16, presets=["clean"])
    varied = DegradedCropDataset(root, crop_size=CROP, samples_per_epoch=16, presets=["clean"], rescale=(0.5, 1.5),
                                 camera_variation=CameraVariation(p=1.0))
    changed = 0
    for index in range(16):
        item = varied[index]
        assert item["clean_vi"].shape == (3, CROP, CROP) and float(item["clean_vi"].min()) >= 0.0
        assert float(item["clean_vi"].max()) <= 1.0
        # A camera look, not a degradation: the degraded input is the varied clean image.
        assert torch.equal(item["vi"], item["clean_vi"]) and int(item["present"].sum()) == 0
        changed += not torch.equal(item["clean_vi"], plain[index]["clean_vi"])
    assert changed == 16
    image = np.full((32, 32, 3), 0.5, np.float32)
    assert np.array_equal(vary_camera(image, 0, CameraVariation(p=0.0)), image)
    noisy = vary_camera(image, 1, CameraVariation(p=1.0, gamma=(1.0, 1.0), contrast=(1.0, 1.0),
                                                  brightness=(0.0, 0.0), colour_gain=(1.0, 1.0),
                                                  sensor_noise=(2.0, 2.0)))
    assert 1.5 / 255 < float(noisy.std()) < 2.5 / 255  # faint: below the weakest trained noise (sigma 5)


def test_inputs_are_rounded_to_camera_bits_and_targets_are_not(tmp_path):
    root = make_dataset(tmp_path / "data", count=2, size=(64, 64))
    rounded = DegradedCropDataset(root, crop_size=CROP, samples_per_epoch=8, presets=["noise25"], input_bits=8)
    floats = DegradedCropDataset(root, crop_size=CROP, samples_per_epoch=8, presets=["noise25"])
    for index in range(8):
        item, reference = rounded[index], floats[index]
        for key in ("ir", "vi"):
            levels = item[key].numpy() * 255.0
            assert np.allclose(levels, np.rint(levels), atol=1e-3), key
            assert float((item[key] - reference[key]).abs().max()) <= 0.5 / 255 + 1e-6  # only the rounding
        assert torch.equal(item["clean_vi"], reference["clean_vi"])  # targets stay float
    float_levels = floats[0]["vi"].numpy() * 255.0
    assert not np.allclose(float_levels, np.rint(float_levels), atol=1e-3)
    with pytest.raises(ValueError, match="input_bits"):
        DegradedCropDataset(root, crop_size=CROP, samples_per_epoch=4, input_bits=7)
