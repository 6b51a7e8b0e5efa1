"""``mex-fusion demo`` (what ``make demo`` runs): the whole offline path in one command, no data needed.

1. synthesise the demo scene (``bag.scene``: warm pedestrians and vehicles, day -> dusk, degradations
   clean -> haze -> noise -> stripe -> mixed), or with ``--data DIR`` take a real paired dataset;
2. write it as a rosbag2 bag with realistic camera rates, jitter and the clean reference frames;
3. replay the bag offline through the node's synchroniser and fusion pipeline
   (``bag.evaluate``) with the shipped network (``nano``) and a classical baseline to compare;
4. write the report (HTML + JSON, figures, sample frames, side-by-side MP4) and print where it is;
5. with ``--live``: replay the bag through the real ROS graph too (``bag.replay.live_replay``:
   player -> fusion node [-> detector node] -> recorder over DDS), measure latency and drops,
   check the live fused frames against the offline ones, and add that to the report.

Detection: on the synthetic scene the demo runs the shipped demo-scene detector
(``weights/demo_scene_yolo.pt``, a YOLOv8n trained on frames of this scene with other seeds; see
weights/README.md) unless ``--detector-model`` names another or ``--no-detector`` is given: after
step 3, ``detect eval --bag-eval`` (``detect.bag_frames``) runs it on every processed pair's
thermal-only, RGB-only and fused frames (the fused frames the offline run wrote), scores them
against the scene's labels per degradation segment of the timeline and writes
``report/detection/`` (tables, bar plots, frames with the boxes drawn). With ``--live`` the detector
node runs in the live graph too, at the image size the model was trained at.

Without shipped weights (``weights/mex_nano.pt``) the demo says so and uses the classical
restore-then-fuse baseline (``cascade``) in the network's place, so it still runs end to end.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from datetime import datetime
from pathlib import Path

from mex_fusion_ros.bag.timeline import DEMO_PRESETS

NETWORK = "nano"
BASELINE = "laplacian"
#: Used instead of the network when its weights are not installed: it also restores before fusing.
FALLBACK = "cascade"
#: The shipped detector of the synthetic scene (weights/README.md); not a detector for real cameras.
DEMO_DETECTOR_FILE = "demo_scene_yolo.pt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="paired dataset (ir/ + vi/ folders) to use instead of the synthetic scene",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default: outputs/demo/<date-time>, git-ignored); the bag and report go inside",
    )
    parser.add_argument("--frames", type=int, default=300, help="RGB frames of the synthetic scene (30 Hz)")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("W", "H"),
        help="frame size (default 320 256 for the scene, 640 512 for --data)",
    )
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N dataset pairs")
    parser.add_argument(
        "--method",
        action="append",
        default=None,
        metavar="M",
        help=f"fusers to compare (default: {NETWORK} and {BASELINE})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--live",
        action="store_true",
        help="also replay the bag through the fusion node over DDS and compare with offline",
    )
    parser.add_argument(
        "--detector-model",
        default=None,
        metavar="MODEL",
        help="count detections (and score mAP against the scene's labels) with this ultralytics model "
        f"(.pt/.onnx/.yaml; default on the synthetic scene: the shipped weights/{DEMO_DETECTOR_FILE}); "
        "with --live the detector node runs too",
    )
    parser.add_argument("--no-detector", action="store_true", help="run no detector")


def demo_detector_path() -> Path | None:
    """The shipped demo-scene detector: installed ``share/mex_fusion_ros/weights``, then the checkout's."""
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        with contextlib.suppress(PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset
            candidates.append(Path(get_package_share_directory("mex_fusion_ros")) / "weights" / DEMO_DETECTOR_FILE)
    except ImportError:
        pass
    candidates.append(Path(__file__).resolve().parents[1] / "weights" / DEMO_DETECTOR_FILE)
    return next((path for path in candidates if path.is_file()), None)


def choose_detector(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The detector model to run and a notice when the default one is missing."""
    if args.no_detector:
        return None, None
    if args.detector_model:
        return args.detector_model, None
    if args.data:  # the demo detector knows the synthetic scene only
        return None, None
    path = demo_detector_path()
    if path is None:
        return None, f"NOTICE: weights/{DEMO_DETECTOR_FILE} is not installed; the demo runs without a detector."
    return str(path), None


def network_available(spec: str = NETWORK) -> tuple[bool, str]:
    """Whether ``create_fuser(spec)`` works here, and why not (missing weights, missing module)."""
    from mex_fusion_ros.fusion.registry import create_fuser

    try:
        create_fuser(spec, device="cpu")
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def choose_methods(requested: list[str] | None) -> tuple[list[str], str | None]:
    """The methods to run and a notice when the network had to be replaced by ``FALLBACK``."""
    methods = list(requested or (NETWORK, BASELINE))
    if NETWORK not in methods:
        return methods, None
    ok, reason = network_available(NETWORK)
    if ok:
        return methods, None
    replaced = [FALLBACK if m == NETWORK else m for m in methods]
    notice = (
        f"NOTICE: the shipped network weights for '{NETWORK}' are not available ({reason}). "
        f"The demo runs the classical restore-then-fuse baseline '{FALLBACK}' in its place; "
        f"install weights/mex_{NETWORK}.pt to see the network."
    )
    return list(dict.fromkeys(replaced)), notice


def make_demo_bag(args: argparse.Namespace, bag: Path):
    """Step 1-2: the scene (or dataset) as a bag with reference topics; returns ``make_bag``'s summary."""
    from mex_fusion_ros.bag.make import BagTiming, DatasetSource, SceneSource, make_bag
    from mex_fusion_ros.bag.scene import SceneConfig

    timing = BagTiming(fps_thermal=9.0, fps_rgb=30.0, jitter_ms=2.0, offset_ms=0.0)
    if args.data:
        source = DatasetSource(
            args.data,
            tuple(args.size or (640, 512)),
            hold=math.ceil(timing.fps_rgb / timing.fps_thermal),
            limit=args.limit,
        )
    else:
        width, height = args.size or (320, 256)
        source = SceneSource(
            SceneConfig(width=width, height=height, num_frames=args.frames, fps=timing.fps_rgb, seed=args.seed)
        )
    return make_bag(source, DEMO_PRESETS, bag, timing=timing, with_clean=True, seed=args.seed)


def evaluate_demo_bag(bag: Path, methods: list[str], report_dir: Path, report: bool = True):
    """Step 3-4: offline replay through the node's synchroniser and pipeline, then the report
    (without ``report``: only its ``bag_eval.json``, and no paths)."""
    from mex_fusion_ros.bag.evaluate import BagEvalSettings, evaluate_bag, save_outcome_json
    from mex_fusion_ros.bag.report import summarise, write_report
    from mex_fusion_ros.config import load_config

    settings = BagEvalSettings(
        bag=bag,
        methods=tuple(methods),
        out=report_dir,
        node_params=dict(load_config()["fusion_node"]),
        sync_mode="approximate",
        device="cpu",
    )
    outcome = evaluate_bag(settings)
    if not report:
        save_outcome_json(outcome, report_dir / "bag_eval.json")
        return outcome, summarise(outcome), None
    return outcome, summarise(outcome), write_report(outcome, report_dir)


def detect_eval_on_bag(report_dir: Path, detector: str):
    """Detection step: ``detect eval --bag-eval`` on the offline run just written (ir, vi, each method)."""
    from mex_fusion_ros.detect.bag_frames import run_bag_detection_eval
    from mex_fusion_ros.detect.evaluate import DetectEvalSettings
    from mex_fusion_ros.detect.report import write_report

    command = f"mex-fusion detect eval --bag-eval {report_dir} --detector {detector} --device cpu"
    settings = DetectEvalSettings(data=None, detector=detector, device="cpu", command=command)
    outcome = run_bag_detection_eval(report_dir, settings, grid_images=1)
    return outcome, write_report(outcome, report_dir / "detection")


def detector_config(model: str, path: Path) -> Path:
    """The default parameters file with the detector node's ``image_size`` set to the size ``model``
    was trained at (as ``detect eval`` runs it), written to ``path``."""
    import yaml
    from ultralytics import YOLO

    from mex_fusion_ros.config import default_config_path
    from mex_fusion_ros.detect.evaluate import model_image_size

    document = yaml.safe_load(default_config_path().read_text())
    size = model_image_size(YOLO(model, task="detect"))
    if size:
        document["detector_node"]["ros__parameters"]["image_size"] = size
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def replay_live(bag: Path, method: str, offline_bag: str | None, recorded: Path, detector_model: str | None) -> dict:
    """Step 5: the live graph on the same bag, paired like the offline run; returns the report's ``live``."""
    from dataclasses import asdict

    from mex_fusion_ros.bag.compare_command import compare_bags
    from mex_fusion_ros.bag.replay import live_replay

    name, _, weights = method.partition(":")
    arguments = {"method": name, "reliable": "true"}
    if weights:
        arguments["weights"] = weights
    if detector_model:
        arguments["model"] = detector_model
        arguments["config"] = str(detector_config(detector_model, recorded.parent / "live_config.yaml"))
    outcome = live_replay(
        bag,
        recorded,
        arguments=arguments,
        fusion_overrides={"sync.mode": "approximate"},
        with_detector=detector_model is not None,
    )
    live = outcome.to_json()
    if offline_bag is not None:
        live["comparison"] = asdict(compare_bags(offline_bag, recorded))
    return live


def run(args: argparse.Namespace) -> int:
    from mex_fusion_ros.bag.eval_command import print_outcome

    start = time.perf_counter()
    out = Path(args.out) if args.out else Path("outputs") / "demo" / datetime.now().strftime("%Y%m%d-%H%M%S")
    bag, report_dir = out / "bag", out / "report"
    if bag.exists() or report_dir.exists():
        raise SystemExit(f"{out} already holds a demo run (bag/ or report/); choose another --out")
    methods, notice = choose_methods(args.method)
    if notice:
        print(notice)
    detector, detector_notice = choose_detector(args)
    if detector_notice:
        print(detector_notice)
    what = f"dataset {args.data}" if args.data else "synthetic scene"
    steps = 3 if detector else 2
    print(f"[1/{steps}] writing a bag from the {what} with the degradation timeline {' -> '.join(DEMO_PRESETS)}")
    summary = make_demo_bag(args, bag)
    print(
        f"      {bag}: {summary.rgb_frames} RGB + {summary.thermal_frames} thermal frames, {summary.duration_s:.1f} s"
    )
    print(f"[2/{steps}] replaying it offline through the node's synchroniser and pipeline: {', '.join(methods)}")
    # The detector runs in step 3, not inside bag eval: bag eval runs it at the node's default
    # image_size (640), and the demo detector was trained at 320 px.
    outcome, method_summary, paths = evaluate_demo_bag(bag, methods, report_dir, report=not detector)
    print_outcome(outcome, method_summary)
    detection_paths = None
    if detector:
        print(f"[3/3] detect eval on the replayed frames: thermal only (ir), RGB only (vi), {', '.join(methods)}; "
              f"detector {detector}")
        from mex_fusion_ros.detect.report import markdown_table

        detection, detection_paths = detect_eval_on_bag(report_dir, detector)
        print("      mAP50 per degradation segment (rows) and detector input (columns):")
        print("\n".join("      " + line for line in markdown_table(detection.results, "mAP50").splitlines()))
        # The bag report's detection section (counts over time, mAP per input) from the same run.
        from mex_fusion_ros.bag.report import write_report as write_bag_report
        from mex_fusion_ros.detect.bag_frames import bag_eval_detection

        outcome.detection = bag_eval_detection(detection)
        paths = write_bag_report(outcome, report_dir)
    if args.live:
        print(f"[live] replaying the bag through the fusion node over DDS ({methods[0]}, sync approximate)")
        live = replay_live(bag, methods[0], outcome.bags.get(methods[0]), out / "live_fused", detector)
        from mex_fusion_ros.bag.report import write_report

        paths = write_report(outcome, report_dir, live=live)
        comparison = live.get("comparison", {})
        print(
            f"      live: {live['fused_frames']} fused frames, latency p50 "
            f"{live['latency_ms'].get('p50', float('nan')):.0f} ms; {comparison.get('identical', 0)} of "
            f"{comparison.get('common', 0)} pairs seen by both are bit-identical to the offline run"
        )
    if notice:
        print(notice)
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    print(f"report: {paths['html'].resolve()}")
    if detection_paths:
        print(f"detection report: {detection_paths['html'].resolve()}")
    return 0 if outcome.pairs_processed else 1
