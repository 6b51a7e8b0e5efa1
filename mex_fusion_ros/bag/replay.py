"""Live replay evaluation: bag player -> fusion node (-> detector node) -> recorder, as a real ROS graph.

Everything runs in this process, each node on its own executor thread (``nodes.spinning``), over
DDS on loopback: the nodes
are the real ``FusionNode``/``DetectorNode`` classes built from the launch arguments exactly as
``mex-fusion run`` builds them (``nodes.graph.resolve_graph`` + ``nodes.run_command.build_nodes``).
The player publishes the bag's camera topics at the recorded pace; the recorder writes what the
fusion node publishes on ``/fused/image`` into a bag. Measured:

- latency per fused frame: from the publication of its RGB frame (the pair's stamp) to the
  arrival of the fused frame at the recorder, monotonic clock of this process; it includes DDS
  both ways, decoding, waiting for the synchroniser's decision, fusion and encoding;
- drops: camera frames published vs fused frames received (``bag compare`` against the offline
  evaluation's output bag tells which pairs and whether the frames are bit-identical).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mex_fusion_ros.bag import FUSED_TOPIC, IMAGE_MSGTYPE, RGB_TOPIC, THERMAL_TOPIC
from mex_fusion_ros.bag.evaluate import percentiles
from mex_fusion_ros.bag.reader import BagError


@dataclass
class LiveReplayOutcome:
    bag: str
    recorded_bag: str
    nodes: list[str]
    published: dict[str, int]
    fused_frames: int
    #: Latency percentiles (ms) of the fused frames whose RGB frame's publication was seen.
    latency_ms: dict[str, float] = field(default_factory=dict)
    late_publications: int = 0
    wall_s: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def live_replay(
    bag: str | Path,
    recorded_bag: str | Path,
    *,
    arguments: Mapping[str, str] | None = None,
    fusion_overrides: Mapping[str, Any] | None = None,
    with_detector: bool = True,
    rate: float = 1.0,
    discovery_timeout: float = 30.0,
    settle_s: float = 3.0,
) -> LiveReplayOutcome:
    """Replay ``bag`` through the fusion graph and record ``/fused/image`` into ``recorded_bag``.

    ``arguments``: launch arguments as for ``mex-fusion run`` (method, config, reliable, ...);
    ``fusion_overrides``: fusion_node parameters to set on top (e.g. ``{"sync.mode": "approximate"}``
    to pair like the offline evaluation). The graph runs in the root namespace.
    """
    # Before rclpy loads: DDS discovery stays on this machine.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy

    from mex_fusion_ros.bag.live import BagPlayer, BagRecorder
    from mex_fusion_ros.nodes.graph import resolve_graph
    from mex_fusion_ros.nodes.run_command import build_nodes
    from mex_fusion_ros.nodes.spinning import IsolatedExecutors

    arguments = dict(arguments or {})
    if arguments.get("namespace", "").strip("/"):
        raise ValueError("live_replay runs the graph in the root namespace; leave `namespace` empty")
    resolved = []
    for entry in resolve_graph(arguments):
        if entry.name == "fusion_node":
            entry = replace(entry, parameters={**entry.parameters, **dict(fusion_overrides or {})})
        elif not with_detector:
            continue
        resolved.append(entry)

    context = rclpy.Context()
    rclpy.init(context=context, args=["mex-fusion-live-replay"])
    nodes: list = []
    recorder = None
    executors = None
    start = time.monotonic()
    try:
        nodes = build_nodes(resolved, context=context)
        helper = rclpy.create_node("mex_fusion_replay", context=context)
        nodes.append(helper)
        player = BagPlayer(helper, bag, topics=[THERMAL_TOPIC, RGB_TOPIC], rate=rate)
        recorder = BagRecorder(helper, recorded_bag, [FUSED_TOPIC])
        recorder.subscribe(timeout=0.0, msgtypes={FUSED_TOPIC: IMAGE_MSGTYPE})
        executors = IsolatedExecutors(nodes, context=context, poll_s=0.05).start()
        missing = player.wait_for_subscribers(discovery_timeout)
        deadline = time.monotonic() + discovery_timeout
        while helper.count_publishers(FUSED_TOPIC) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if missing or helper.count_publishers(FUSED_TOPIC) == 0:
            raise BagError(
                f"the fusion graph did not connect within {discovery_timeout:.0f} s "
                f"(no subscriber on {', '.join(missing) or '-'}, or no publisher of {FUSED_TOPIC})"
            )
        stats = player.play()
        # Let the last pairs come through: wait until no fused frame arrived for settle_s.
        last_count, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < settle_s:
            count = recorder.counts[FUSED_TOPIC]
            if count != last_count:
                last_count, quiet_since = count, time.monotonic()
            time.sleep(0.05)
        if executors.error is not None:
            raise executors.error
    finally:
        if executors is not None:
            executors.stop()
        if recorder is not None:
            recorder.close()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=context)

    arrivals = recorder.received_at.get(FUSED_TOPIC, {})
    sent = player.published_at.get(RGB_TOPIC, {})
    latencies = [(arrivals[stamp] - sent[stamp]) * 1e3 for stamp in arrivals if stamp in sent]
    return LiveReplayOutcome(
        bag=str(bag),
        recorded_bag=str(recorded_bag),
        nodes=[entry.name for entry in resolved],
        published=dict(stats.published),
        fused_frames=recorder.counts[FUSED_TOPIC],
        latency_ms=percentiles(latencies),
        late_publications=stats.late,
        wall_s=time.monotonic() - start,
    )
