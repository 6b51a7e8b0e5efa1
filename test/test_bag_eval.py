"""Offline bag evaluation: pairs, fuses with the node's pipeline, writes report + bags, survives bad bags."""

import json

import numpy as np
import pytest

from mex_fusion_ros import cli
from mex_fusion_ros.bag import FUSED_TOPIC, RGB_TOPIC, THERMAL_TOPIC
from mex_fusion_ros.bag.evaluate import BagEvalSettings, evaluate_bag
from mex_fusion_ros.bag.make import BagTiming, SceneSource, make_bag
from mex_fusion_ros.bag.reader import BagError, BagReader
from mex_fusion_ros.bag.report import summarise, write_report
from mex_fusion_ros.bag.scene import SceneConfig
from mex_fusion_ros.bag.writer import BagWriter
from mex_fusion_ros.config import default_parameters
from mex_fusion_ros.fusion.registry import create_fuser
from mex_fusion_ros.nodes.pipeline import FusionPipeline

SCENE = SceneConfig(width=96, height=72, num_frames=24, seed=2)


@pytest.fixture(scope="module")
def tiny_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "tiny"
    summary = make_bag(
        SceneSource(SCENE),
        ["clean", "noise25"],
        path,
        timing=BagTiming(jitter_ms=1.0),
        with_clean=True,
        seed=1,
        progress=False,
    )
    return path, summary


@pytest.fixture(scope="module")
def evaluated(tiny_bag, tmp_path_factory):
    bag, summary = tiny_bag
    out = tmp_path_factory.mktemp("eval_out") / "report"
    settings = BagEvalSettings(
        bag=bag,
        methods=("laplacian", "average"),
        out=out,
        node_params=default_parameters("fusion_node"),
        metrics_every=1,
    )
    outcome = evaluate_bag(settings, progress=False)
    return bag, summary, out, outcome, write_report(outcome, out)


def test_every_thermal_frame_is_paired_and_fused_by_each_method(evaluated):
    _, summary, _, outcome, _ = evaluated
    assert outcome.pairs_processed == summary.thermal_frames == outcome.sync["pairs"]
    assert outcome.stopped_early is None and not outcome.problems and not outcome.failures
    assert outcome.sync["rgb"]["dropped"] == {"no_partner": summary.rgb_frames - summary.thermal_frames}
    for method in ("laplacian", "average"):
        records = outcome.records[method]
        assert len(records) == outcome.pairs_processed
        assert all(abs(r.skew_ms) < 50 for r in records)
        assert set(records[0].metrics) == {"EN", "SD", "SF", "AG", "MI", "VIF", "Q_abf", "SCD"}
        assert {"PSNR", "VIF", "Q_abf"} <= set(records[0].reference_metrics)
        assert [r.truth_preset for r in records][0] == "clean" and records[-1].truth_preset == "noise25"


def test_report_files_state_the_pair_count(evaluated):
    _, _, out, outcome, paths = evaluated
    document = json.loads(paths["json"].read_text())
    assert document["pairs_processed"] == outcome.pairs_processed
    assert document["summary"]["laplacian"]["pairs"] == outcome.pairs_processed
    assert document["summary"]["laplacian"]["timing_ms"]["total"]["p50"] > 0
    text = paths["html"].read_text()
    assert f"{outcome.pairs_processed} pairs processed" in text
    for figure in ("metrics_over_time.png", "reference_metrics_over_time.png", "latency_histogram.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    assert len(outcome.samples) == 2  # one per timeline segment
    assert (out / "side_by_side.mp4").stat().st_size > 1000


def test_noise_lowers_the_reference_quality(evaluated):
    _, _, _, outcome, _ = evaluated
    by_preset = summarise(outcome)["laplacian"]["reference_metrics_by_preset"]
    assert by_preset["noise25"]["PSNR"] < by_preset["clean"]["PSNR"]


def test_output_bag_holds_what_the_node_pipeline_produces(evaluated):
    bag, _, _, outcome, _ = evaluated
    with BagReader(bag) as reader:
        frames = {(m.topic, m.stamp_ns): m.image for m in reader.iter_images([THERMAL_TOPIC, RGB_TOPIC])}
    params = default_parameters("fusion_node")
    pipeline = FusionPipeline(create_fuser("laplacian"), homography=params["registration.homography"])
    with BagReader(outcome.bags["laplacian"]) as reader:
        fused = list(reader.iter_images([FUSED_TOPIC]))
    assert len(fused) == outcome.pairs_processed
    for message, record in zip(fused, outcome.records["laplacian"]):
        assert message.stamp_ns == record.stamp_ns  # stamped with the RGB frame, like the node
        expected = pipeline.process(
            frames[(THERMAL_TOPIC, record.thermal_stamp_ns)], frames[(RGB_TOPIC, record.stamp_ns)]
        )
        np.testing.assert_array_equal(message.image, expected.fused)


def test_limit_and_sparse_metrics(tiny_bag, tmp_path):
    bag, _ = tiny_bag
    settings = BagEvalSettings(
        bag=bag,
        methods=("laplacian",),
        out=tmp_path / "o",
        metrics_every=2,
        limit=3,
        write_video=False,
        write_bags=False,
    )
    outcome = evaluate_bag(settings, progress=False)
    assert outcome.pairs_processed == 3
    assert [bool(r.metrics) for r in outcome.records["laplacian"]] == [True, False, True]


def test_missing_camera_topic_is_a_clear_error(tmp_path):
    with BagWriter(tmp_path / "rgb_only") as writer:
        writer.write_image(RGB_TOPIC, 1, np.zeros((8, 8, 3), np.uint8), "rgb8")
    settings = BagEvalSettings(bag=tmp_path / "rgb_only", methods=("laplacian",), out=tmp_path / "o")
    with pytest.raises(BagError, match=f"topic {THERMAL_TOPIC} not in bag"):
        evaluate_bag(settings, progress=False)


def test_truncated_bag_is_evaluated_up_to_the_cut(tmp_path):
    bag = tmp_path / "bag"
    config = SceneConfig(width=160, height=128, num_frames=30, seed=0)  # several 1 MiB MCAP chunks
    summary = make_bag(SceneSource(config), ["clean"], bag, with_clean=True, progress=False)
    (mcap,) = bag.glob("*.mcap")
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 2 // 3])
    settings = BagEvalSettings(bag=bag, methods=("laplacian",), out=tmp_path / "o", write_video=False)
    outcome = evaluate_bag(settings, progress=False)
    assert outcome.stopped_early is not None and "truncated" in outcome.stopped_early
    assert 0 < outcome.pairs_processed < summary.thermal_frames
    paths = write_report(outcome, tmp_path / "o")
    assert "The bag ended early" in paths["html"].read_text()


def test_unknown_method_is_refused_before_reading(tiny_bag, tmp_path):
    bag, _ = tiny_bag
    with pytest.raises(ValueError, match="unknown fuser 'no_such_method'"):
        evaluate_bag(BagEvalSettings(bag=bag, methods=("no_such_method",), out=tmp_path / "o"), progress=False)


def test_cli_bag_eval(tiny_bag, tmp_path, capsys):
    bag, summary = tiny_bag
    out = tmp_path / "cli"
    assert cli.main(["bag", "eval", str(bag), "--method", "laplacian", "--out", str(out), "--no-video"]) == 0
    printed = capsys.readouterr().out
    assert f"{summary.thermal_frames} pairs processed" in printed and "report:" in printed
    assert (out / "report.html").is_file()
    assert cli.main(["bag", "eval", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_compare_finds_identical_and_differing_frames(evaluated, capsys):
    from mex_fusion_ros.bag.compare_command import compare_bags

    _, _, _, outcome, _ = evaluated
    same = compare_bags(outcome.bags["laplacian"], outcome.bags["laplacian"])
    assert same.common == same.identical == outcome.pairs_processed and same.max_abs_diff == 0
    other = compare_bags(outcome.bags["laplacian"], outcome.bags["average"])
    assert other.common == outcome.pairs_processed and other.identical < other.common
    assert other.max_abs_diff > 0
    assert cli.main(["bag", "compare", outcome.bags["laplacian"], outcome.bags["laplacian"]]) == 0
    assert cli.main(["bag", "compare", outcome.bags["laplacian"], outcome.bags["average"]]) == 1
    assert f"{outcome.pairs_processed} with the same stamp" in capsys.readouterr().out


def test_report_scores_degradation_estimates_and_plots_routing(evaluated, tmp_path):
    import copy

    from mex_fusion_ros.data.degradations import DEGRADATION_TYPES

    _, _, _, outcome, _ = evaluated
    network = copy.deepcopy(outcome)
    truth = {segment["preset"]: segment["severity"] for segment in network.timeline}
    records = network.records.pop("laplacian")
    del network.records["average"]
    for record in records:  # an estimator that is right about everything but ir_noise
        severity = truth[record.truth_preset]
        probabilities = {t: float(severity[t] > 0) for t in DEGRADATION_TYPES}
        probabilities["ir_noise"] = 1.0
        record.degradation = {"probabilities": probabilities, "severities": dict(severity)}
        record.routing = [{"gate": "vi_gate", "experts": [0, 2], "weights": [0.75, 0.25]}]
    network.records["fake_network"] = records
    paths = write_report(network, tmp_path)
    summary = json.loads(paths["json"].read_text())["summary"]["fake_network"]
    assert summary["degradation"]["types"]["vi_noise"]["accuracy"] == 1.0
    assert summary["degradation"]["types"]["ir_noise"]["accuracy"] == 0.0
    assert summary["expert_usage"] == {"vi_gate": {"expert_0": 0.75, "expert_2": 0.25}}
    assert (tmp_path / "figures" / "degradation_0.png").is_file() and (tmp_path / "figures" / "experts_0.png").is_file()


@pytest.mark.ros
def test_live_replay_through_the_fusion_node_matches_offline(evaluated, tmp_path):
    from mex_fusion_ros.bag.compare_command import compare_bags
    from mex_fusion_ros.bag.replay import live_replay

    bag, summary, _, outcome, _ = evaluated
    live = live_replay(
        bag,
        tmp_path / "live",
        arguments={"method": "laplacian", "reliable": "true"},
        fusion_overrides={"sync.mode": "approximate"},
        with_detector=False,
        rate=2.0,
        discovery_timeout=20.0,
        settle_s=2.0,
    )
    assert live.published == {THERMAL_TOPIC: summary.thermal_frames, RGB_TOPIC: summary.rgb_frames}
    # The node may drop a pair when its worker is busy and never decides the very last one.
    assert summary.thermal_frames - 3 <= live.fused_frames <= summary.thermal_frames
    assert live.latency_ms["count"] == live.fused_frames and live.latency_ms["p50"] > 0
    comparison = compare_bags(outcome.bags["laplacian"], tmp_path / "live")
    assert comparison.common == live.fused_frames and comparison.identical == comparison.common


def test_stamps_out_of_order_are_reported_and_the_rest_is_evaluated(tmp_path):
    rng = np.random.default_rng(0)
    t0 = 1_000_000_000
    rgb_stamps = [t0 + i * 100_000_000 for i in range(8)]
    rgb_stamps[5] = rgb_stamps[2] - 1  # a camera driver glitch: one stamp jumps back
    with BagWriter(tmp_path / "glitch") as writer:
        for i, stamp in enumerate(rgb_stamps):
            log_time = t0 + i * 100_000_000
            writer.write_image(
                THERMAL_TOPIC,
                t0 + i * 100_000_000 + 1,
                rng.integers(0, 256, (40, 48), np.uint8),
                "mono8",
                log_time_ns=log_time,
            )
            writer.write_image(
                RGB_TOPIC,
                stamp,
                rng.integers(0, 256, (40, 48, 3), np.uint8),
                "rgb8",
                log_time_ns=log_time + 1,
            )
    settings = BagEvalSettings(bag=tmp_path / "glitch", methods=("laplacian",), out=tmp_path / "o", write_video=False)
    outcome = evaluate_bag(settings, progress=False)
    assert outcome.problems == {f"stamps out of order on {RGB_TOPIC}": 1}
    assert outcome.pairs_processed == 7  # the glitched frame cannot pair; the other seven do
    assert outcome.sync["thermal"]["dropped"] == {"no_partner": 1}


# ------------------------------------------------------------------------------------ detection scoring
def _boxes(*items):
    from mex_fusion_ros.eval.detection_metrics import LabeledBox

    return [LabeledBox(label, box) for label, box in items]


def test_average_precision_on_known_cases():
    from mex_fusion_ros.eval.detection_metrics import PERFECT_AP, ScoredBox, mean_average_precision

    truths = {1: _boxes(("car", (0, 0, 10, 10))), 2: _boxes(("car", (20, 20, 30, 30)), ("person", (0, 0, 4, 8)))}
    perfect = [
        ScoredBox(1, "car", 0.9, (0, 0, 10, 10)),
        ScoredBox(2, "car", 0.8, (20, 20, 30, 30)),
        ScoredBox(2, "person", 0.7, (0, 0, 4, 8)),
    ]
    assert mean_average_precision(perfect, truths)["mAP50-95"] == pytest.approx(PERFECT_AP)
    # One car of two found: precision 1 at the recall samples 0 .. 0.49, and the curve drops to 0 at
    # recall 0.5 (ultralytics' AP: trapezoids over the 101 samples): 0.49 + 0.01 * (1 + 0) / 2.
    half = mean_average_precision(perfect[:1], truths, classes=["car"])
    assert half["per_class"]["car"]["AP50"] == pytest.approx(0.49 + 0.005)
    # A false positive ranked between two hits: precision 1 up to recall 0.49, 2/3 from 0.5 to 0.99,
    # 0 at recall 1 (nothing beyond the last hit), integrated by trapezoids; a detection on an
    # unlabelled frame is ignored.
    ranked = [
        ScoredBox(1, "car", 0.95, (0, 0, 10, 10)),
        ScoredBox(1, "car", 0.9, (50, 50, 60, 60)),
        ScoredBox(2, "car", 0.8, (20, 20, 30, 30)),
        ScoredBox(99, "car", 0.99, (0, 0, 1, 1)),
    ]
    trapezoids = 0.49 + 0.01 * (1 + 2 / 3) / 2 + 0.49 * 2 / 3 + 0.01 * (2 / 3) / 2
    assert mean_average_precision(ranked, truths, classes=["car"])["mAP50"] == pytest.approx(trapezoids)
    # IoU 0.6 counts at thresholds 0.50, 0.55, 0.60 only.
    loose = [ScoredBox(1, "car", 0.9, (0, 0, 10, 6))]
    single = mean_average_precision(loose, {1: truths[1]})
    assert single["mAP50"] == pytest.approx(PERFECT_AP) and single["mAP50-95"] == pytest.approx(0.3 * PERFECT_AP)


def test_bad_labels_file_is_named(tmp_path):
    from mex_fusion_ros.bag.detection import LabelError, load_labels

    (tmp_path / "labels.json").write_text('{"frames": {"12": [["car", 1, 2]]}}')
    with pytest.raises(LabelError, match="labels.json is malformed"):
        load_labels(tmp_path / "labels.json")


def test_detector_counts_every_source_and_scores_the_scene_labels(tiny_bag, tmp_path):
    bag, _ = tiny_bag
    settings = BagEvalSettings(
        bag=bag,
        methods=("laplacian",),
        out=tmp_path / "o",
        limit=3,
        write_video=False,
        write_bags=False,
        detector="yolov8n.yaml",
        detector_conf=0.5,
    )
    outcome = evaluate_bag(settings, progress=False)
    detection = outcome.detection
    assert set(detection["counts"]) == {"thermal only", "RGB only", "laplacian"}
    assert all(len(rows) == 3 for rows in detection["counts"].values())
    assert detection["labels"].endswith("scene_objects.json")
    for result in detection["map"].values():  # an untrained network: scores exist, their value is not the point
        assert 0.0 <= result["mAP50"] <= 1.0 and result["frames"] == 3
    assert outcome.records["laplacian"][0].detections is not None
    assert "mAP50" in write_report(outcome, tmp_path / "o")["html"].read_text()
