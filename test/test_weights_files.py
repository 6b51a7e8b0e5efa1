"""Unusable weights files are refused with one line naming the file and what is wrong with it.

Each file here was accepted, or refused with torch's many-line message, before: a NaN-filled
file loaded and the node published black frames; random bytes and pickled code ended in torch's
advice to load with ``weights_only=False`` (unsafe); an empty file gave an empty reason.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mex_fusion_ros.cli import main
from mex_fusion_ros.model import create_model
from mex_fusion_ros.model.weights import WeightsError, load_weights, save_weights

REPO_ROOT = Path(__file__).resolve().parent.parent


def _assert_one_clear_line(message: str, path: Path) -> None:
    assert "\n" not in message, message
    assert str(path) in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "trusted source" not in message


def _last_parameter_name() -> str:
    """The network's last parameter (looked up: the architecture may rename its layers)."""
    return list(create_model("nano").named_parameters())[-1][0]


@pytest.fixture(scope="module")
def nan_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = create_model("nano")
    with torch.no_grad():
        model.get_parameter(_last_parameter_name()).fill_(float("nan"))
    return save_weights(tmp_path_factory.mktemp("weights") / "nan.pt", model)


def test_non_finite_weights_are_refused_naming_the_first_bad_tensor(nan_weights: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as caught:
        load_weights(nan_weights)
    message = str(caught.value)
    _assert_one_clear_line(message, nan_weights)
    assert f"'{_last_parameter_name()}'" in message and "non-finite" in message
    # One infinite value among finite ones is found too.
    model = create_model("nano")
    first_name, first = next(iter(model.named_parameters()))
    with torch.no_grad():
        first.view(-1)[0] = float("inf")
    one_inf = save_weights(tmp_path / "inf.pt", model)
    with pytest.raises(WeightsError) as caught:
        load_weights(one_inf)
    assert f"'{first_name}' holds 1 non-finite (NaN/inf) value of" in str(caught.value)


def test_random_bytes_are_one_line_without_torchs_unsafe_advice(tmp_path: Path) -> None:
    garbage = tmp_path / "random.pt"
    garbage.write_bytes(bytes(range(7, 256)) * 20)
    with pytest.raises(WeightsError) as caught:
        load_weights(garbage)
    _assert_one_clear_line(str(caught.value), garbage)
    assert "not a mex_fusion_ros weights file" in str(caught.value)


class _RunsCode:
    """Pickles to a call of ``os.system``: code that a weights-only load must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    payload = tmp_path / "payload.pt"
    torch.save({"format": "mex_fusion_ros.weights", "version": 1, "config": _RunsCode(marker)}, payload)
    with pytest.raises(WeightsError) as caught:
        load_weights(payload)
    message = str(caught.value)
    _assert_one_clear_line(message, payload)
    assert "refused: the file contains pickled code" in message and "system" in message
    assert not marker.exists()


def test_empty_file_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty\.pt is an empty file \(0 bytes\)$"):
        load_weights(empty)


def test_directory_and_damaged_archive_are_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="is a directory"):
        load_weights(tmp_path)
    good = save_weights(tmp_path / "good.pt", create_model("nano"))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(WeightsError) as caught:
        load_weights(cut)
    _assert_one_clear_line(str(caught.value), cut)
    assert "truncated or damaged" in str(caught.value)


def test_fuse_command_prints_the_one_line(nan_weights: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pairs").mkdir()
    assert main(["fuse", "--data", str(tmp_path / "pairs"), "--out", str(tmp_path / "out"),
                 "--weights", str(nan_weights), "--no-progress"]) != 0
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "non-finite" in error and str(nan_weights) in error


@pytest.mark.ros
def test_fusion_node_refuses_nan_weights_with_one_line_and_exit_1(nan_weights: Path) -> None:
    environment = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOCALHOST_ONLY="1")
    result = subprocess.run(
        [sys.executable, "-m", "mex_fusion_ros.nodes.fusion_node", "--ros-args",
         "-p", "method:=nano", "-p", "device:=cpu", "-p", f"weights:={nan_weights}"],
        capture_output=True, text=True, timeout=120, env=environment, cwd=REPO_ROOT)
    assert result.returncode == 1, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("fusion_node: ") and f"'{_last_parameter_name()}'" in lines[0]
