"""``mex-fusion bag play BAG``: publish a bag over DDS at its recorded rate (like ``ros2 bag play``)."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="bag directory (MCAP or sqlite3) or a bare .mcap / .db3 file")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    parser.add_argument(
        "--start-offset", type=float, default=0.0, metavar="S", help="skip the first S seconds of the bag"
    )
    parser.add_argument(
        "--loop",
        action="store_true",
        help="start again at the end (until Ctrl-C); the stamps repeat, and fusion_node restarts its "
        "pairing at each pass",
    )
    parser.add_argument(
        "--clock",
        action="store_true",
        help="publish the bag time on /clock for nodes with use_sim_time:=true",
    )
    parser.add_argument("--topics", nargs="+", default=None, metavar="TOPIC", help="only these topics")
    parser.add_argument(
        "--wait-for-subscribers",
        type=float,
        default=0.0,
        metavar="S",
        help="before playing, wait up to S seconds until every topic has a subscriber",
    )


def run(args: argparse.Namespace) -> int:
    # Before rclpy loads: DDS discovery stays on this machine (see DEVELOPERS.md).
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy

    from mex_fusion_ros.bag.live import BagPlayer

    rclpy.init(args=["mex-fusion-bag-play"])
    node = None
    player = None
    try:
        node = rclpy.create_node("mex_fusion_bag_player")
        player = BagPlayer(
            node,
            args.bag,
            topics=args.topics,
            rate=args.rate,
            start_offset=args.start_offset,
            loop=args.loop,
            clock=args.clock,
        )
        if args.wait_for_subscribers > 0:
            missing = player.wait_for_subscribers(args.wait_for_subscribers)
            if missing:
                print(
                    f"no subscriber after {args.wait_for_subscribers:.1f} s on: {', '.join(missing)}; "
                    "playing anyway"
                )
        print(
            f"playing {args.bag}: {', '.join(player.topics)} at {args.rate}x{' (loop)' if args.loop else ''}"
        )
        try:
            stats = player.play()
        except KeyboardInterrupt:  # the way a --loop ends: still say what was published
            player.stop()
            stats = player.stats
        total = sum(stats.published.values())
        passes = f" over {stats.loops} passes" if args.loop else ""
        print(f"published {total} messages{passes} in {stats.wall_s:.1f} s ({stats.late} more than 10 ms late)")
    except KeyboardInterrupt:
        if player is not None:
            player.stop()
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
