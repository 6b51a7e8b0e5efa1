"""``mex-fusion bag info BAG``: topics, types, counts and rates of a bag (MCAP or sqlite3)."""

from __future__ import annotations

import argparse
import json

from mex_fusion_ros.bag import TIMELINE_SIDECAR
from mex_fusion_ros.bag.reader import BagReader, format_info, read_json_sidecar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="bag directory (or a bare .mcap / .db3 file)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--check", action="store_true",
                        help="read every message from the storage (chunk CRCs, damaged pages) and report damage")


def run(args: argparse.Namespace) -> int:
    with BagReader(args.bag) as reader:
        if args.check:
            for _ in reader.iter_raw():
                pass
        info = reader.info()
        info["problem"] = reader.salvaged
    timeline = read_json_sidecar(args.bag, TIMELINE_SIDECAR)
    if timeline is not None:
        info["degradation_timeline"] = [segment["preset"] for segment in timeline.get("segments", [])]
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(format_info(info))
        if info["problem"]:
            print(f"problem:   {info['problem']}")
        elif args.check:
            print("check:     every message read, no damage found")
        if timeline is not None:
            print(f"degradation timeline ({TIMELINE_SIDECAR}): {' -> '.join(info['degradation_timeline'])}")
    return 0
