"""``mex-fusion bag record --topics ... --out BAG``: write topics received over DDS into a bag."""

from __future__ import annotations

import argparse
import os
import time

from mex_fusion_ros.bag.writer import STORAGE_PLUGINS


def _type_pair(text: str) -> tuple[str, str]:
    topic, separator, msgtype = text.partition("=")
    if not separator or not topic or not msgtype:
        raise argparse.ArgumentTypeError(f"expected TOPIC=pkg/msg/Type, got {text!r}")
    return topic, msgtype


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topics", nargs="+", required=True, metavar="TOPIC", help="topics to record")
    parser.add_argument(
        "--out", required=True, metavar="BAG", help="bag directory to create (must not exist)"
    )
    parser.add_argument("--storage", choices=sorted(STORAGE_PLUGINS), default="mcap")
    parser.add_argument(
        "--type",
        action="append",
        type=_type_pair,
        default=[],
        metavar="TOPIC=TYPE",
        help="type of a topic that may not be published yet (else learnt from the graph)",
    )
    parser.add_argument(
        "--discovery-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="how long to wait for the topics' publishers to appear",
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: Ctrl-C)"
    )
    parser.add_argument(
        "--max-messages", type=int, default=0, metavar="N", help="stop after N messages (0: no limit)"
    )
    parser.add_argument("--use-sim-time", action="store_true", help="stamp receive times with /clock")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from mex_fusion_ros.bag.live import BagRecorder

    rclpy.init(args=["mex-fusion-bag-record"])
    node = rclpy.create_node(
        "mex_fusion_bag_recorder", parameter_overrides=[Parameter("use_sim_time", value=args.use_sim_time)]
    )
    recorder = BagRecorder(node, args.out, args.topics, storage=args.storage)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        types = recorder.subscribe(args.discovery_timeout, dict(args.type))
        print(f"recording {', '.join(f'{t} ({m})' for t, m in types.items())} to {args.out}")
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while rclpy.ok() and (deadline is None or time.monotonic() < deadline):
            executor.spin_once(timeout_sec=0.1)
            if args.max_messages and sum(recorder.counts.values()) >= args.max_messages:
                break
    except KeyboardInterrupt:
        pass
    finally:
        recorder.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    print(
        f"recorded {sum(recorder.counts.values())} messages: "
        + ", ".join(f"{t} {n}" for t, n in recorder.counts.items())
    )
    return 0
