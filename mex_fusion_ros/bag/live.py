"""Live replay and recording over DDS with rclpy: what ``ros2 bag play`` / ``ros2 bag record`` do,
without needing the rosbag2 C++ packages (the project installs rclpy as wheels).

- ``BagPlayer`` publishes a bag's messages, still serialised (``Publisher.publish(bytes)``), at the
  recorded rate times ``rate``, optionally from ``start_offset`` seconds in, looping, and with
  ``/clock`` (``rosgraph_msgs/Clock``) carrying the bag time so nodes with ``use_sim_time`` follow it.
  It runs in a thread of its own; publishing from a thread is safe in rclpy.
- ``BagRecorder`` subscribes to topics by name with raw (serialised) subscriptions, learning each
  topic's type from the ROS graph, and writes the bytes unchanged into a bag with ``rosbags``.

Both take an existing ``rclpy.node.Node``, so one process can host player, recorder and the fusion
graph on one executor (the replay evaluation does). Only this module and the two commands import
rclpy in ``bag/``; everything else here stays ROS-free.
"""

from __future__ import annotations

import importlib
import queue
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from mex_fusion_ros.bag.reader import BagError, BagReader
from mex_fusion_ros.bag.typestore import TYPESTORE, ensure_msgtype, split_msgtype
from mex_fusion_ros.bag.writer import BagWriter

#: Replay is for evaluation: every recorded frame should arrive (like ``ros2 bag play``'s default).
REPLAY_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
CLOCK_TOPIC = "/clock"
#: How often /clock is published while waiting for the next message (``ros2 bag play`` uses 40 Hz).
CLOCK_RATE_HZ = 50.0


#: Types whose CDR starts with a std_msgs/Header (stamp sec, nanosec right after the 4-byte
#: encapsulation header), so the stamp can be read without deserialising the image.
STAMPED_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def stamp_from_cdr(cdr: bytes) -> int:
    """Header stamp (ns) of a little-endian CDR message that starts with a ``std_msgs/Header``."""
    if len(cdr) < 12 or cdr[1] != 0x01:
        raise BagError("not a little-endian CDR message with a header")
    sec, nanosec = struct.unpack_from("<iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec


def ros_message_class(msgtype: str) -> type:
    """``"sensor_msgs/msg/Image"`` -> the rclpy message class; ``BagError`` when it is not installed."""
    package, name = split_msgtype(msgtype)
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype} is not installed in this Python environment: {exc}") from exc


def publisher_type_hash(node: Node, topic: str) -> str:
    """RIHS01 type hash of the first publisher of ``topic`` on the graph ("" when none reports one)."""
    for info in node.get_publishers_info_by_topic(topic):
        text = str(info.topic_type_hash)
        if text.startswith("RIHS01_"):
            return text
    return ""


@dataclass
class PlayStats:
    published: Counter = field(default_factory=Counter)
    loops: int = 0
    #: Messages published more than 10 ms after their due time (the player could not keep up).
    late: int = 0
    wall_s: float = 0.0


class BagPlayer:
    """Publishes the messages of ``bag`` on ``node`` at the recorded pace (see the module docstring)."""

    def __init__(
        self,
        node: Node,
        bag: str | Path,
        *,
        topics: Iterable[str] | None = None,
        rate: float = 1.0,
        start_offset: float = 0.0,
        loop: bool = False,
        clock: bool = False,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if start_offset < 0:
            raise ValueError(f"start_offset must be >= 0 s, got {start_offset}")
        self.node, self.bag = node, Path(bag)
        self.rate, self.start_offset, self.loop, self.clock = rate, start_offset, loop, clock
        with BagReader(self.bag) as reader:
            available = reader.topics
            self.bag_start_ns = reader.start_time_ns
            reader_hashes = {name: reader.type_hash(name) for name in available}
        names = list(available) if topics is None else list(topics)
        for name in names:
            if name not in available:
                raise BagError(f"topic {name} not in bag {self.bag}; it has: {', '.join(sorted(available))}")
        self.topics = {name: available[name].msgtype for name in names}
        self.publishers = {
            name: node.create_publisher(ros_message_class(msgtype), name, REPLAY_QOS)
            for name, msgtype in self.topics.items()
        }
        self._warn_on_changed_types(reader_hashes)
        self._clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self._clock_type = Clock
            self._clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, 10)
        self.stats = PlayStats()
        #: topic -> header stamp -> monotonic time of publication (stamped types only), for latency.
        self.published_at: dict[str, dict[int, float]] = {
            t: {} for t, m in self.topics.items() if m in STAMPED_TYPES
        }
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def _warn_on_changed_types(self, bag_hashes: dict[str, str]) -> None:
        """Warn when the installed type of a topic is not the one the bag was recorded with.

        The player publishes the recorded bytes unchanged, so subscribers would misread them.
        """
        for name in self.publishers:
            recorded = bag_hashes.get(name, "")
            installed = publisher_type_hash(self.node, name)
            if recorded.startswith("RIHS01_") and installed.startswith("RIHS01_") and recorded != installed:
                self.node.get_logger().warning(
                    f"{name}: the bag's {self.topics[name]} has type hash {recorded}, the installed one "
                    f"{installed}; subscribers will misread the replayed messages"
                )

    def wait_for_subscribers(self, timeout: float, topics: Iterable[str] | None = None) -> list[str]:
        """Wait until each publisher (of ``topics``) has a subscriber; returns those still without one."""
        names = list(self.publishers if topics is None else topics)
        deadline = time.monotonic() + timeout
        while True:
            missing = [n for n in names if self.publishers[n].get_subscription_count() == 0]
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.05)

    def _publish_clock(self, bag_time_ns: int) -> None:
        if self._clock_pub is not None:
            msg = self._clock_type()
            msg.clock.sec, msg.clock.nanosec = divmod(int(bag_time_ns), 1_000_000_000)
            self._clock_pub.publish(msg)

    def _sleep_until(self, due: float, bag_time_at) -> None:
        """Sleep until ``due`` (monotonic), publishing /clock at CLOCK_RATE_HZ meanwhile."""
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= due:
                return
            step = min(due - now, 1.0 / CLOCK_RATE_HZ)
            self.stop_event.wait(step)
            if self._clock_pub is not None:
                self._publish_clock(bag_time_at(time.monotonic()))

    def play(self) -> PlayStats:
        """Publish the bag (blocking) until it ends (or, looping, until ``stop()``)."""
        start = time.monotonic()
        try:
            self._play()
        finally:  # also when interrupted (Ctrl-C ends a --loop)
            self.stats.wall_s = time.monotonic() - start
        return self.stats

    def _play(self) -> None:
        first_ns = self.bag_start_ns + round(self.start_offset * 1e9)
        while not self.stop_event.is_set():
            wall_start = time.monotonic()

            def bag_time_at(wall: float, origin: float = wall_start) -> int:
                return first_ns + round((wall - origin) * self.rate * 1e9)

            with BagReader(self.bag) as reader:
                for topic, _, log_time, cdr in reader.iter_raw(self.topics):
                    if self.stop_event.is_set():
                        break
                    if log_time < first_ns:
                        continue
                    due = wall_start + (log_time - first_ns) / 1e9 / self.rate
                    self._sleep_until(due, bag_time_at)
                    if time.monotonic() - due > 0.010:
                        self.stats.late += 1
                    self._publish_clock(log_time)
                    self.publishers[topic].publish(cdr)
                    if topic in self.published_at:
                        self.published_at[topic][stamp_from_cdr(cdr)] = time.monotonic()
                    self.stats.published[topic] += 1
            self.stats.loops += 1
            if not self.loop:
                break

    def start(self) -> None:
        """Play in a background thread (``join()`` waits for the end, ``stop()`` ends it early)."""
        self._thread = threading.Thread(target=self.play, name="bag_player", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background playback; True when it has finished."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        self.stop_event.set()


class BagRecorder:
    """Writes the serialised messages of ``topics`` received on ``node`` into a new bag at ``out``.

    Call ``subscribe()`` (discovers each topic's type on the graph), spin the node, then ``close()``.
    Receive times come from the node's clock, so ``use_sim_time`` records bag time. One writer
    thread owns the bag from open to close: the sqlite3 storage refuses use from any other thread
    than the one that opened it, and the node may be spun in any thread.
    """

    def __init__(self, node: Node, out: str | Path, topics: Iterable[str], *, storage: str = "mcap") -> None:
        self.node = node
        self.topics = list(dict.fromkeys(topics))
        if not self.topics:
            raise ValueError("at least one topic to record is needed")
        self.writer = BagWriter(out, storage=storage)
        self.counts: Counter[str] = Counter()
        #: topic -> header stamp -> monotonic time of arrival (stamped types only), for latency.
        self.received_at: dict[str, dict[int, float]] = {}
        self._lock = threading.Lock()
        self._subscriptions = []
        self._closed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._writer_error: BaseException | None = None

    def discover_types(self, timeout: float, msgtypes: dict[str, str] | None = None) -> dict[str, str]:
        """Each topic's type from the graph (or ``msgtypes``), waiting up to ``timeout`` for publishers."""
        known = dict(msgtypes or {})
        deadline = time.monotonic() + timeout
        while True:
            graph = {name: types for name, types in self.node.get_topic_names_and_types()}
            for topic in self.topics:
                if topic not in known and graph.get(topic):
                    known[topic] = graph[topic][0]
            missing = [t for t in self.topics if t not in known]
            if not missing:
                return known
            if time.monotonic() >= deadline:
                raise BagError(
                    f"no publisher found for {', '.join(missing)} within {timeout:.1f} s; "
                    "give their types with --type TOPIC=pkg/msg/Type to record before they appear"
                )
            time.sleep(0.1)

    def subscribe(self, timeout: float = 5.0, msgtypes: dict[str, str] | None = None) -> dict[str, str]:
        """Create one raw subscription per topic; returns topic -> type."""
        types = self.discover_types(timeout, msgtypes)
        classes = {}
        for topic, msgtype in types.items():  # every type checked before the first subscription
            try:
                # The bag stores the definition and hash of the typestore's type, so it must be known
                # there: custom types come from their installed definitions.
                ensure_msgtype(msgtype)
                classes[topic] = ros_message_class(msgtype)
            except BagError as exc:
                raise BagError(f"cannot record {topic}: {exc}") from exc
            self._warn_on_changed_type(topic, msgtype)
        for topic, msgtype in types.items():
            self._subscriptions.append(
                self.node.create_subscription(
                    classes[topic],
                    topic,
                    lambda data, t=topic, m=msgtype: self._on_message(t, m, data),
                    REPLAY_QOS,
                    raw=True,
                )
            )
        opened = threading.Event()
        self._writer_thread = threading.Thread(target=self._write_loop, args=(opened,), daemon=True,
                                               name="bag_recorder_writer")
        self._writer_thread.start()
        opened.wait()
        if self._writer_error is not None:
            raise self._writer_error
        return types

    def _write_loop(self, opened: threading.Event) -> None:
        try:
            self.writer.open()
        except BaseException as error:  # noqa: BLE001 - handed to subscribe()'s caller
            self._writer_error = error
            opened.set()
            return
        opened.set()
        try:
            while (item := self._queue.get()) is not None:
                self.writer.write_raw(*item)
        except BaseException as error:  # noqa: BLE001 - handed to close()'s caller
            self._writer_error = error
        finally:
            self.writer.close()

    def _warn_on_changed_type(self, topic: str, msgtype: str) -> None:
        """Warn when a publisher's type hash differs from the definition that will be stored."""
        published = publisher_type_hash(self.node, topic)
        stored = TYPESTORE.hash_rihs01(msgtype)
        if published and published != stored:
            self.node.get_logger().warning(
                f"{topic}: the publisher's {msgtype} has type hash {published}, the definition stored in the "
                f"bag has {stored}; the recorded bytes may not match the stored definition"
            )

    def _on_message(self, topic: str, msgtype: str, data: bytes) -> None:
        arrived = time.monotonic()
        stamp = self.node.get_clock().now().nanoseconds
        with self._lock:
            if self._closed:
                return
            self._queue.put((topic, msgtype, stamp, bytes(data)))
            self.counts[topic] += 1
            if msgtype in STAMPED_TYPES:
                self.received_at.setdefault(topic, {})[stamp_from_cdr(data)] = arrived

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for subscription in self._subscriptions:
                self.node.destroy_subscription(subscription)
        if self._writer_thread is not None:
            self._queue.put(None)
            self._writer_thread.join()
            if self._writer_error is not None:
                raise BagError(f"writing {self.writer.path} failed: {self._writer_error}") from self._writer_error
