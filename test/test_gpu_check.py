"""scripts/gpu_check.py on the CPU with tiny sizes: every requested entry is in the JSON and the table,
measured or with the reason why not, and the supervisor survives a crashed worker, a hung item
and a spent budget. (The GPU figures themselves need a lent GPU: docs/deployment.md, "GPU check".)"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "gpu_check.py"
SECTIONS = ("model_forward", "fuser_pipeline", "node_pipeline", "yolov8n", "training")


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


def _run(out: Path, *options: str, timeout: float = 240) -> tuple[dict[str, Any], str, subprocess.CompletedProcess]:
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(out / "yolo_settings"))
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--device", "cpu", "--threads", "1",
                             "--quick", *options], capture_output=True, text=True, timeout=timeout, env=env,
                            cwd=REPO_ROOT)
    assert (out / "gpu_check.json").is_file(), result.stdout + result.stderr
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text(), result


def _check_entry(row: dict[str, Any], numbers: tuple[str, ...]) -> None:
    """Measured entries carry numbers, the others a reason: nothing is silently missing."""
    assert row["status"] in ("ok", "skipped", "failed"), row
    if row["status"] == "ok":
        for key in numbers:
            assert isinstance(row[key], float) and row[key] > 0, (key, row)
    else:
        assert isinstance(row["reason"], str) and row["reason"], row


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gpu_check")
    return _run(out, "--sizes", "64x64", "--models", "nano", "small", "--repeats", "2", "--warmup", "0",
                "--item-seconds", "2",
                "--pipeline-size", "64x64", "--pipeline-precisions", "fp32", "fp16", "--parity-size", "64x48",
                "--yolo-size", "64", "--train-batch", "2", "--train-crop", "64", "--train-steps", "2",
                "--budget-s", "240")


def test_every_requested_entry_is_reported(tiny_run: tuple[dict[str, Any], str, subprocess.CompletedProcess]) -> None:
    report, _, result = tiny_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert report["schema"] == gpu_check.SCHEMA
    grid = {(r["model"], r["size"], r["precision"], r["mode"]) for r in report["model_forward"]}
    assert grid == {(m, "64x64", p, mode) for m in ("nano", "small") for p in ("fp32", "fp16")
                    for mode in ("eager", "cudagraphs", "compile")}
    assert len(report["model_forward"]) == len(grid)
    for row in report["model_forward"]:
        _check_entry(row, ("median_ms", "p95_ms", "min_ms", "fps", "first_call_ms"))
        if row["status"] == "ok":
            assert row["p95_ms"] >= row["median_ms"] >= row["min_ms"] and row["samples"] >= 2
            assert row["peak_gpu_mib"] is None  # a CPU run
    by_key = {(r["model"], r["precision"], r["mode"]): r for r in report["model_forward"]}
    for model in ("nano", "small"):
        assert by_key[(model, "fp32", "eager")]["status"] == "ok"
        assert "CUDA" in by_key[(model, "fp16", "eager")]["reason"]
        assert "CUDA" in by_key[(model, "fp32", "cudagraphs")]["reason"]
        assert "--quick" in by_key[(model, "fp32", "compile")]["reason"]
    for section in ("fuser_pipeline", "node_pipeline"):
        assert {(r["precision"], r["mode"]) for r in report[section]} == {
            (p, m) for p in ("fp32", "fp16") for m in ("eager", "cudagraphs")}
        for row in report[section]:
            _check_entry(row, ("median_ms", "p95_ms", "hz"))
        assert next(r for r in report[section] if (r["precision"], r["mode"]) == ("fp32", "eager"))["status"] == "ok"
    fuser_row = next(r for r in report["fuser_pipeline"] if r["status"] == "ok")
    assert all(fuser_row[f"{stage}_median_ms"] >= 0 for stage in ("preprocess", "forward", "postprocess"))
    assert [r["precision"] for r in report["yolov8n"]] == ["fp32", "fp16"]
    for row in report["yolov8n"]:
        _check_entry(row, ("median_ms", "p95_ms", "fps"))
    yolo = report["yolov8n"][0]
    assert yolo["status"] == "ok" or "ultralytics" in yolo["reason"]
    assert report["parity"]["status"] == "skipped" and "CUDA" in report["parity"]["reason"]
    assert report["training_data"]["status"] == "ok" and report["training_data"]["crops_per_s_per_process"] > 0
    assert {(r["model"], r["stage"]) for r in report["training"]} == {
        (m, s) for m in ("nano", "small") for s in ("restoration", "fusion")}
    for row in report["training"]:
        assert row["status"] == "ok", row
        _check_entry(row, ("steps_per_s", "s_per_step_median", "s_per_step_p95", "crops_per_s"))
        assert row["loss_finite"] is True and row["batch"] == 2 and row["crop"] == 64
    assert [t["name"] for t in report["targets"]][:4] == [
        "nano model-only fp16 640x512", "Fuser pipeline nano fp16 640x512", "node pipeline nano fp16 640x512",
        "fp16 vs fp32 parity (fused image)"]
    assert all(t["met"] is None and t["detail"] == "not measured in this run" for t in report["targets"])
    env = report["environment"]
    assert env["device"] == "cpu" and env["torch"] and env["python"]
    assert report["worker_starts"] == 1


def test_worker_imports_only_what_the_gpu_machine_has(
        tiny_run: tuple[dict[str, Any], str, subprocess.CompletedProcess]) -> None:
    report, _, _ = tiny_run
    modules = set(report["third_party_modules"])
    assert {"torch", "numpy", "cv2"} <= modules  # the record is real
    assert not modules & {"rclpy", "rosbags", "sensor_msgs", "std_msgs", "rosidl_runtime_py", "mex_fusion_msgs"}
    assert report["modules_not_on_gpu_machine"] == []


def test_markdown_has_a_row_per_entry(tiny_run: tuple[dict[str, Any], str, subprocess.CompletedProcess]) -> None:
    report, table, result = tiny_run
    sections = table.split("\n## ")
    titles = ("Model-only", "Fuser pipeline", "Node pipeline", "YOLOv8n", "Training")
    for title, key in zip(titles, SECTIONS):
        body = next(s for s in sections if s.startswith(title))
        rows = [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| model")
                and not line.startswith("| size")]
        assert len(rows) == len(report[key]), (title, rows)
    for row in report["model_forward"]:
        if row["status"] != "ok":
            assert row["reason"] in table
    assert "## Targets" in result.stdout  # the table is printed too (the device tool returns stdout)


def test_supervisor_survives_a_crash_and_a_hang(tmp_path: Path) -> None:
    crash, hang = "forward/nano/64x64/fp32/eager", "pipeline/fuser/64x64/fp32/eager"
    report, _, result = _run(
        tmp_path, "--sizes", "64x64", "--models", "nano", "--precisions", "fp32", "--modes", "eager", "cudagraphs",
        "--skip", "training", "yolo", "parity", "--pipeline-size", "64x64", "--pipeline-precisions", "fp32",
        "--pipeline-modes", "eager", "--repeats", "2", "--item-seconds", "1", "--budget-s", "200",
        "--cpu-allowance-scale", "0.05", "--simulate", f"{crash}=crash", f"{hang}=hang")
    rows = {r["id"]: r for section in SECTIONS for r in report[section]}
    assert rows[hang]["status"] == "failed" and "exceeded its allowance" in rows[hang]["reason"], rows[hang]
    assert rows[crash]["status"] == "failed" and "exit status 70" in rows[crash]["reason"], rows[crash]
    # Measured by the workers started after the hang and after the crash.
    assert rows["pipeline/node/64x64/fp32/eager"]["status"] == "ok"
    assert rows["forward/nano/64x64/fp32/cudagraphs"]["status"] == "skipped"
    assert report["worker_starts"] == 3
    assert result.returncode == 0


def test_sigterm_keeps_what_was_measured_and_ends_the_worker(tmp_path: Path) -> None:
    import signal
    import time

    hang = "pipeline/fuser/64x64/fp32/eager"
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(tmp_path / "yolo_settings"))
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--device", "cpu", "--threads", "1", "--quick",
         "--sizes", "64x64", "--models", "nano", "--skip", "training", "yolo", "parity", "--pipeline-size", "64x64",
         "--pipeline-precisions", "fp32", "--simulate", f"{hang}=hang"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT)
    records = tmp_path / "gpu_check.jsonl"
    deadline = time.monotonic() + 60
    while not (records.is_file() and f'"start", "id": "{hang}"' in records.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, "the hanging item never started"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 130, output
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {r["id"]: r for section in SECTIONS for r in report[section]}
    assert "interrupted (SIGTERM)" in rows[hang]["reason"]
    assert all(r["status"] in ("ok", "skipped", "failed") and (r["status"] == "ok" or r["reason"])
               for r in rows.values())
    worker = report["environment"]["worker_pid"]
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"worker {worker} still runs after the supervisor was stopped")


def test_spent_budget_leaves_every_entry_with_a_reason(tmp_path: Path) -> None:
    report, _, _ = _run(tmp_path, "--sizes", "64x64", "--models", "nano", "--budget-s", "1", timeout=60)
    assert report["wall_s"] < 20
    rows = [r for section in SECTIONS for r in report[section]] + [report["parity"], report["training_data"]]
    # forward 6, fuser and node pipelines 2 each (fp16 by default), YOLO 2, training 4, parity, data
    assert len(report["model_forward"]) == 6 and len(rows) == 6 + 2 + 2 + 2 + 4 + 2
    for row in rows:
        assert row["status"] in ("ok", "skipped", "failed") and (row["status"] == "ok" or row["reason"]), row
    assert any("budget" in (row["reason"] or "") for row in rows)


def test_parity_code_runs_on_a_weights_file(tmp_path: Path) -> None:
    """The parity item in-process on the CPU, where "fp16" falls back to fp32: identical images, same experts.
    (On a GPU the same code compares real fp16, and adds the CUDA-graph variant.)"""
    import time

    from mex_fusion_ros.model import create_model
    from mex_fusion_ros.model.fuser import select_device
    from mex_fusion_ros.model.weights import save_weights

    weights = save_weights(tmp_path / "nano.pt", create_model("nano"))
    args = {"device": "cpu", "threads": 0, "quick": True, "repeats": 2, "warmup": 0, "item_seconds": 1.0,
            "train_steps": 2, "train_batches": 1, "parity_weights": str(weights), "cpu_allowance_scale": 1.0,
            "simulate": {}}
    worker = gpu_check.Worker({"args": args, "deadline": time.time() + 60, "items": []}, tmp_path / "records.jsonl")
    worker.device, worker.cuda = select_device("cpu"), False
    result = worker.run_parity({"model": "nano", "size": "64x48", "frames": 2})
    assert result["status"] == "ok" and result["weights"].endswith("nano.pt")
    assert result["psnr_fused_db"] == gpu_check.PSNR_CAP_DB and result["max_abs_fused"] == 0.0
    frames = result["variants"]["eager fp16"]["frames"]
    assert len(frames) == 2 and all(f["routing_equal"].split("/")[0] == f["routing_equal"].split("/")[1]
                                    for f in frames)


def test_psnr_of_known_images() -> None:
    np = pytest.importorskip("numpy")
    reference = np.zeros((8, 8, 3), np.float32)
    assert gpu_check.psnr_db(reference + 0.1, reference) == pytest.approx(20.0)
    assert gpu_check.psnr_db(reference, reference) == gpu_check.PSNR_CAP_DB
    assert gpu_check.psnr_db(np.full((8, 8), 2.0), np.ones((8, 8))) == gpu_check.PSNR_CAP_DB  # clipped to [0, 1]
    with pytest.raises(ValueError, match="shapes"):
        gpu_check.psnr_db(reference, reference[..., 0])


def test_targets_say_met_missed_or_unmeasured() -> None:
    def forward(fps: float, mode: str, model: str = "nano", precision: str = "fp16") -> dict[str, Any]:
        return {"model": model, "size": "640x512", "precision": precision, "mode": mode, "status": "ok",
                "fps": fps, "median_ms": 1e3 / fps}

    report = {
        "model_forward": [forward(250.0, "eager"), forward(420.0, "cudagraphs"),
                          forward(900.0, "eager", "nano", "fp32"), forward(2.06, "eager", "paper", "fp32")],
        "fuser_pipeline": [{"size": "640x512", "precision": "fp16", "mode": "eager", "status": "ok", "hz": 50.0,
                            "median_ms": 20.0}],
        "node_pipeline": [{"size": "640x512", "precision": "fp16", "mode": "eager", "status": "failed",
                           "reason": "x", "hz": None}],
        "parity": {"status": "ok", "psnr_fused_db": 45.5, "weights": "weights/mex_nano.pt", "frames": 3},
    }
    targets = {t["name"]: t for t in gpu_check.targets(report)}
    nano = targets["nano model-only fp16 640x512"]
    assert (nano["measured"], nano["met"]) == (420.0, True) and "cudagraphs" in nano["detail"]
    assert targets["Fuser pipeline nano fp16 640x512"]["met"] is False
    assert targets["node pipeline nano fp16 640x512"]["met"] is None
    assert targets["fp16 vs fp32 parity (fused image)"]["met"] is True
    paper = targets["paper FPS 640x512 vs TG-ECNet"]
    assert paper["measured"] == 2.06 and paper["met"] is None and paper["detail"].startswith("2.0x")
    assert targets["paper FPS 1280x1024 vs TG-ECNet"]["measured"] is None
