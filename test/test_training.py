"""Two-stage training: configuration checks, schedule, freezing, a tiny end-to-end run, resume, DDP."""
from __future__ import annotations

import csv
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from mex_fusion_ros.cli import main
from mex_fusion_ros.data.degradations import DEGRADATION_TYPES
from mex_fusion_ros.model import create_model
from mex_fusion_ros.model.fuser import Fuser
from mex_fusion_ros.model.layers import rgb_to_luminance
from mex_fusion_ros.model.losses import LossWeights, fusion_losses, sobel_magnitude, ssim
from mex_fusion_ros.model.training import (
    TRAIN_COLUMNS,
    StageConfig,
    TrainConfigError,
    configure_stage,
    describe_training_data,
    learning_rate,
    load_train_config,
    train,
    train_config_from_dict,
    training_pairs,
)
from mex_fusion_ros.model.weights import load_weights, save_weights

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _write_pairs(root: Path, count: int = 3, size: tuple[int, int] = (48, 64)) -> Path:
    """Synthetic registered pairs: a warm blob in IR, textured colour visible image."""
    rng = np.random.default_rng(0)
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir(parents=True)
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    for index in range(count):
        blob = np.exp(-((yy - rng.integers(height)) ** 2 + (xx - rng.integers(width)) ** 2) / 60.0)
        ir = np.clip(0.2 + 0.7 * blob + 0.05 * rng.random((height, width)), 0, 1)
        vi = np.clip(rng.random((height, width, 3)) * 0.3 + np.linspace(0.2, 0.7, width)[None, :, None], 0, 1)
        cv2.imwrite(str(root / "ir" / f"p{index}.png"), (ir * 255).astype(np.uint8))
        cv2.imwrite(str(root / "vi" / f"p{index}.png"), (vi * 255).astype(np.uint8))
    return root


def _tiny_config(tmp_path: Path, steps: int = 2, **extra: object) -> Path:
    data = _write_pairs(tmp_path / "data") if not (tmp_path / "data").exists() else tmp_path / "data"
    values = {
        "model": "nano", "threads": 1, "log_every": 1, "checkpoint_minutes": 0.0, "device": "cpu",
        "data": {"train": str(data), "val": str(data), "crop_size": 32, "samples_per_epoch": 4, "workers": 0},
        "restoration": {"steps": steps, "batch_size": 2, "warmup_steps": 1},
        "fusion": {"steps": steps, "batch_size": 2, "warmup_steps": 1},
        "validation": {"every": 0, "images": 1, "crop_size": 32, "presets": ["clean", "mixed"]},
        **extra,
    }
    path = tmp_path / f"tiny_{steps}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_shipped_training_config_is_valid() -> None:
    config = load_train_config(REPO / "config" / "train_nano.yaml")
    assert config.model == "nano" and config.data.crop_size == 128
    assert config.restoration.steps > 0 and config.fusion.steps > 0
    assert {"clean", "mixed"} <= set(config.validation.presets)
    # Trained on inputs as cameras deliver them (and as `mex-fusion eval` feeds them).
    assert config.data.input_bits == 8 and "inputs rounded to 8 bits" in describe_training_data(config.data)
    assert config.data.calibration_every >= 1  # the shipped file's presence thresholds are calibrated


@pytest.mark.parametrize(
    "values,message",
    [
        ({"modle": "nano"}, "unknown keys \\['modle'\\]"),
        ({"data": {"crop": 64}}, "data: unknown keys \\['crop'\\]"),
        ({"restoration": {"steps": "many"}}, "restoration.steps: expected a number"),
        ({"fusion": {"steps": 1.5}}, "fusion.steps: expected an integer"),
        ({"validation": {"presets": "clean"}}, "validation.presets: expected a list"),
        ({"model_overrides": [1]}, "model_overrides: expected a mapping"),
        ({"fusion": {"batch_size": 0}}, "batch_size >= 1"),
        ({"data": {"input_bits": 12}}, "data.input_bits: expected 8, 16 or 0"),
    ],
)
def test_bad_training_config_names_the_key(values: dict, message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        train_config_from_dict(values)


def test_learning_rate_schedule() -> None:
    stage = StageConfig(steps=100, lr=1e-3, min_lr_ratio=0.1, warmup_steps=10)
    assert learning_rate(stage, 0) == pytest.approx(1e-4)
    assert learning_rate(stage, 9) == pytest.approx(1e-3)
    assert learning_rate(stage, 10) == pytest.approx(1e-3)
    assert learning_rate(stage, 100) == pytest.approx(1e-4)
    values = [learning_rate(stage, step) for step in range(10, 101)]
    assert values == sorted(values, reverse=True)


def test_stage_two_freezes_stage_one() -> None:
    model = create_model("nano")
    trainable = configure_stage(model, "fusion")
    trainable_ids = {id(p) for p in trainable}
    for module in model.stage_modules("restoration"):
        assert not module.training
        assert all(not p.requires_grad and id(p) not in trainable_ids for p in module.parameters())
    assert {id(p) for p in model.fusion_head.parameters()} <= trainable_ids
    assert {id(p) for p in model.alpha} <= trainable_ids
    configure_stage(model, "restoration")
    assert model.encoder.training and all(p.requires_grad for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.fusion_decoder.parameters())


def test_fusion_losses_prefer_a_good_fusion() -> None:
    torch.manual_seed(0)
    ir, vi = torch.rand(2, 1, 24, 24), torch.rand(2, 3, 24, 24)
    luminance = 0.299 * vi[:, :1] + 0.587 * vi[:, 1:2] + 0.114 * vi[:, 2:]
    good = fusion_losses(0.5 * (ir + luminance), ir, vi)
    bad = fusion_losses(torch.rand(2, 1, 24, 24), ir, vi)
    for key in ("ssim", "fidelity_l1", "fidelity_l2", "correlation"):
        assert good[key] < bad[key]
    assert float(ssim(ir, ir)) == pytest.approx(1.0, abs=1e-5)
    flat = torch.full((1, 1, 8, 8), 0.3)
    assert float(sobel_magnitude(flat).abs().max()) == 0.0


def test_fusion_overshoot_counts_only_edges_above_both_sources() -> None:
    torch.manual_seed(0)
    ir, vi = torch.rand(2, 1, 24, 24), torch.rand(2, 3, 24, 24)
    luminance = rgb_to_luminance(vi)
    # |Sobel of a mean| <= mean of |Sobel|s <= the larger one: averaging never overshoots.
    assert float(fusion_losses(0.5 * (ir + luminance), ir, vi)["overshoot"]) < 1e-6
    assert float(fusion_losses(0.2 * ir, ir, vi)["overshoot"]) == 0.0  # weaker edges: gradient term only
    sharpened = ir + 2.0 * (ir - torch.nn.functional.avg_pool2d(ir, 3, 1, 1, count_include_pad=False))
    assert float(fusion_losses(sharpened, ir, vi)["overshoot"]) > 0.1
    for name in fusion_losses(ir, ir, vi):
        assert hasattr(LossWeights(), f"fusion_{name}")  # every term has a weight in the training config
        assert name in TRAIN_COLUMNS  # and a train.csv column (CsvLog drops keys it has no column for)


def test_image_correlation_is_the_evaluations_cc() -> None:
    import numpy as np

    from mex_fusion_ros.model.losses import image_correlation

    torch.manual_seed(1)
    x, y = torch.rand(3, 1, 16, 20), torch.rand(3, 1, 16, 20)
    y[1] = 0.7 * x[1] + 0.1 * y[1]  # strongly correlated pair
    expected = [np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1] for a, b in zip(x, y)]
    assert image_correlation(x, y).tolist() == pytest.approx(expected, abs=1e-5)
    # Brightness and contrast changes do not matter; a flat image gives 0, not NaN.
    assert image_correlation(3 * x + 1, x).tolist() == pytest.approx([1.0] * 3, abs=1e-5)
    assert image_correlation(torch.full((1, 1, 8, 8), 0.4), x[:1, :, :8, :8]).item() == pytest.approx(0.0, abs=1e-6)


def test_two_step_training_run_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = _tiny_config(tmp_path, steps=2)
    assert main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    rows = _rows(out / "train.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["stage"] for r in rows] == ["restoration"] * 2 + ["fusion"] * 2
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert len(_rows(out / "val.csv")) == 2
    model, metadata = load_weights(out / "mex_nano.pt", expected="nano")
    assert metadata["steps"] == {"restoration": 2, "fusion": 2} and "validation" in metadata
    # Stage 2 left the stage-1 modules untouched.
    stage1, _ = load_weights(out / "stage1.pt")
    for name, tensor in stage1.encoder.state_dict().items():
        assert torch.equal(tensor, model.encoder.state_dict()[name]), name
    assert not torch.equal(stage1.output_heads()[-1].weight, model.output_heads()[-1].weight)
    Fuser.from_weights(out / "mex_nano.pt", device="cpu")
    # A second run into the same folder must not overwrite it...
    assert main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 2
    # ...but --resume continues it with a longer schedule, from step 4.
    longer = _tiny_config(tmp_path, steps=3)
    assert main(["train", "--config", str(longer), "--out", str(out), "--resume", "--no-progress"]) == 0
    steps = [int(r["step"]) for r in _rows(out / "train.csv")]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert main(["train", "--config", str(longer), "--out", str(tmp_path / "fresh"), "--resume"]) == 2


def test_from_stage1_trains_only_the_fusion_stage(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, steps=2)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "full"), "--no-progress"]) == 0
    stage1_file = tmp_path / "full" / "stage1.pt"
    out = tmp_path / "retuned"
    assert main(["train", "--config", str(config), "--out", str(out), "--from-stage1", str(stage1_file),
                 "--no-progress"]) == 0
    rows = _rows(out / "train.csv")
    assert [(r["step"], r["stage"]) for r in rows] == [("3", "fusion"), ("4", "fusion")]
    stage1, _ = load_weights(stage1_file)
    model, metadata = load_weights(out / "mex_nano.pt", expected="nano")
    for name, tensor in stage1.state_dict().items():
        if not name.startswith(("fusion", "alpha", "beta")):
            assert torch.equal(tensor, model.state_dict()[name]), name
    assert metadata["from_stage1"] == str(stage1_file)
    # A finished network serves too (stage 2 left its restoration modules as stage 1 made them), also
    # one with another fusion design; other restoration modules are refused, and --from-stage1 does
    # not mix with --resume.
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "from_final"), "--from-stage1",
                 str(tmp_path / "full" / "mex_nano.pt"), "--no-progress"]) == 0
    blend = save_weights(tmp_path / "blend.pt", create_model("nano", fusion_output="blend"), {})
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "from_blend"), "--from-stage1",
                 str(blend), "--no-progress"]) == 0
    other = save_weights(tmp_path / "other.pt", create_model("nano", widths=[16, 40, 64, 96]), {})
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "wrong"), "--from-stage1",
                 str(other), "--no-progress"]) == 2
    assert main(["train", "--config", str(config), "--out", str(out), "--resume", "--from-stage1",
                 str(stage1_file), "--no-progress"]) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_code_path_with_one_gloo_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)
    config = load_train_config(_tiny_config(tmp_path, steps=1))
    final = train(config, tmp_path / "ddp", progress=False)
    assert not torch.distributed.is_initialized()
    _, metadata = load_weights(final)
    assert metadata["world_size"] == 1 and metadata["distributed"] is True


def test_csv_log_keeps_old_rows_when_the_columns_change(tmp_path: Path) -> None:
    from mex_fusion_ros.model.training import CsvLog

    path = tmp_path / "train.csv"
    CsvLog(path, ["step", "loss", "old_term"]).write({"step": 1, "loss": 0.5, "old_term": 0.25})
    log = CsvLog(path, ["step", "loss", "new_term"])  # a resumed run after an upgrade
    log.write({"step": 2, "loss": 0.4, "new_term": 0.125})
    rows = _rows(path)
    assert list(rows[0]) == ["step", "loss", "new_term", "old_term"]
    assert rows[0] == {"step": "1", "loss": "0.5", "new_term": "", "old_term": "0.25"}
    assert rows[1] == {"step": "2", "loss": "0.4", "new_term": "0.125", "old_term": ""}


def test_two_folders_a_held_out_split_and_folder_weights(tmp_path: Path) -> None:
    first = _write_pairs(tmp_path / "first", count=3)
    second = tmp_path / "second"
    (second / "ir").mkdir(parents=True)
    (second / "vi").mkdir(parents=True)
    for name in ("q0", "q1", "q2"):
        for modality in ("ir", "vi"):
            cv2.imwrite(str(second / modality / f"{name}.png"), cv2.imread(str(first / modality / "p0.png")))
    split = tmp_path / "split.txt"
    split.write_text("q2  # validation\n")
    config = train_config_from_dict({"data": {"train": [str(first), str(second)], "holdout": str(split),
                                              "train_weights": [1.0, 2.0]}})
    pairs, weights = training_pairs(config.data)
    assert [p.name for p in pairs] == ["p0", "p1", "p2", "q0", "q1"] and weights == (1, 1, 1, 2, 2)
    assert "without the pairs of" in describe_training_data(config.data)
    assert train_config_from_dict({"data": {"train": str(first)}}).data.train == (str(first),)
    split.write_text("nowhere\n")
    with pytest.raises(TrainConfigError, match="none of the pairs"):
        training_pairs(config.data)
    with pytest.raises(TrainConfigError, match="one non-negative weight per train folder"):
        train_config_from_dict({"data": {"train": [str(first)], "train_weights": [1.0, 2.0]}})
    with pytest.raises(TrainConfigError, match="rescale"):
        train_config_from_dict({"data": {"rescale": [1.5]}})


def test_init_starts_both_stages_from_a_weights_file(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, steps=1)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "first"), "--no-progress"]) == 0
    first = tmp_path / "first" / "mex_nano.pt"
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "tuned"), "--init", str(first),
                 "--no-progress"]) == 0
    start, _ = load_weights(first)
    tuned, metadata = load_weights(tmp_path / "tuned" / "mex_nano.pt")
    assert metadata["init"] == str(first)
    # One step of each stage from the same start: close to it, but trained.
    head_start, head_tuned = start.output_heads()[1].weight, tuned.output_heads()[1].weight
    assert not torch.equal(head_start, head_tuned) and (head_start - head_tuned).abs().max() < 0.05
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "both"), "--init", str(first),
                 "--from-stage1", str(first), "--no-progress"]) == 2


def test_training_ends_by_calibrating_the_presence_thresholds(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    data = _write_pairs(tmp_path / "data", count=3)
    split = tmp_path / "split.txt"
    split.write_text("p2\n")
    config = _tiny_config(tmp_path, steps=1, data={"train": str(data), "val": str(data), "crop_size": 32,
                                                   "samples_per_epoch": 4, "workers": 0, "holdout": str(split),
                                                   "calibration_every": 1})
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "presence thresholds calibrated on the training pairs: vi_noise" in capsys.readouterr().out
    _, metadata = load_weights(tmp_path / "run" / "mex_nano.pt")
    assert set(metadata["presence_thresholds"]) == set(DEGRADATION_TYPES)
    # The held-out pair is not calibrated on: two pairs x eight presets.
    assert metadata["calibration"]["data"] == {str(data): 2} and metadata["calibration"]["estimates"] == 16
    with pytest.raises(TrainConfigError, match="data.calibration_every"):
        train_config_from_dict({"data": {"calibration_every": -1}})
