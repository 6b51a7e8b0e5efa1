"""``mex-fusion bag compare A B``: are the image frames of two bags the same, stamp by stamp?

Made for the replay acceptance check: the fused output of the offline evaluation
(``<report>/bags/<method>``) against a recording of the live fusion node's ``/fused/image`` on the
same input bag. Frames are matched by header stamp (the node and the offline path both stamp the
fused frame with its RGB frame's stamp); the report says how many frames each bag saw, how many
both saw, and how many of those are bit-identical.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mex_fusion_ros.bag import FUSED_TOPIC
from mex_fusion_ros.bag.reader import BagReader


@dataclass
class FrameComparison:
    frames_a: int
    frames_b: int
    common: int
    identical: int
    #: Largest absolute pixel difference over the common frames (0 when all are identical).
    max_abs_diff: int
    #: Stamps (ns) of common frames that differ, at most 20.
    differing_stamps: list[int]


def compare_bags(
    bag_a: str | Path, bag_b: str | Path, topic_a: str = FUSED_TOPIC, topic_b: str | None = None
) -> FrameComparison:
    """Compare the frames of ``topic_a`` in ``bag_a`` with ``topic_b`` (default: the same) in ``bag_b``."""
    with BagReader(bag_a) as reader:
        frames_a = {m.stamp_ns: m.image for m in reader.iter_images([topic_a])}
    identical, max_diff, differing, common, frames_b = 0, 0, [], 0, 0
    with BagReader(bag_b) as reader:
        for message in reader.iter_images([topic_b or topic_a]):
            frames_b += 1
            other = frames_a.get(message.stamp_ns)
            if other is None:
                continue
            common += 1
            if other.shape == message.image.shape and np.array_equal(other, message.image):
                identical += 1
                continue
            if other.shape == message.image.shape:
                diff = np.abs(other.astype(np.int32) - message.image.astype(np.int32)).max()
                max_diff = max(max_diff, int(diff))
            else:
                max_diff = max(max_diff, 255)
            if len(differing) < 20:
                differing.append(message.stamp_ns)
    return FrameComparison(len(frames_a), frames_b, common, identical, max_diff, differing)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag_a")
    parser.add_argument("bag_b")
    parser.add_argument("--topic-a", default=FUSED_TOPIC)
    parser.add_argument("--topic-b", default=None, help="topic in bag_b (default: the same as --topic-a)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def run(args: argparse.Namespace) -> int:
    result = compare_bags(args.bag_a, args.bag_b, args.topic_a, args.topic_b)
    if args.json:
        print(json.dumps(asdict(result), indent=1))
    else:
        print(
            f"{args.bag_a}: {result.frames_a} frames; {args.bag_b}: {result.frames_b} frames; "
            f"{result.common} with the same stamp, {result.identical} of them bit-identical"
            + (f", max |difference| {result.max_abs_diff}" if result.identical < result.common else "")
        )
    return 0 if result.common and result.identical == result.common else 1
