"""Read image topics out of rosbag2 bags (MCAP or sqlite3) with ``rosbags``, decoded by the codec.

Every way a bag can be unusable ends in one ``BagError`` whose message names the bag and the
problem: not a bag, truncated or corrupt storage, a topic that is missing, of the wrong type or
empty. Problems with single messages do not stop a read: header stamps going backwards are
counted and warned about once per topic, undecodable messages are counted and skipped
(``BagReader.problems`` holds the counts), so an evaluation can report what it could process.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError
from rosbags.serde import SerdeError

from mex_fusion_ros.bag import COMPRESSED_IMAGE_MSGTYPE, IMAGE_MSGTYPE, STRING_MSGTYPE
from mex_fusion_ros.bag.mcap_salvage import McapSalvageError, McapSalvager
from mex_fusion_ros.bag.typestore import TYPESTORE, BagError, ensure_msgtype, register_definition
from mex_fusion_ros.codec.image_codec import ImageCodecError, decode_compressed, decode_image, to_rgb

LOG = logging.getLogger(__name__)
IMAGE_TYPES = (IMAGE_MSGTYPE, COMPRESSED_IMAGE_MSGTYPE)


@dataclass(frozen=True)
class TopicSummary:
    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class ImageMessage:
    """One decoded image message: ``image`` uint8/uint16, ``(H, W)`` grey or ``(H, W, 3)`` RGB order."""

    topic: str
    #: Receive time stored in the bag (ns).
    log_time_ns: int
    #: ``header.stamp`` (ns): capture time, what synchronisers pair on.
    stamp_ns: int
    frame_id: str
    encoding: str
    image: np.ndarray


@dataclass(frozen=True)
class StringMessage:
    topic: str
    log_time_ns: int
    data: str


@dataclass(frozen=True)
class BagMessage:
    """One message of any type, deserialised with the typestore (``rosbags`` message dataclass)."""

    topic: str
    msgtype: str
    log_time_ns: int
    msg: object


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class BagReader:
    """An open bag. Use as a context manager; iterating twice reads the bag twice."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        self.problems: Counter[str] = Counter()
        #: Set when the bag is a truncated MCAP recording read record by record (see ``mcap_salvage``).
        self.salvaged: str | None = None
        self._reader: Reader | None = None
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except (ReaderError, FileNotFoundError, OSError, sqlite3.DatabaseError, KeyError, ValueError) as exc:
            self._reader = None
            mcap_files = self._mcap_files()
            if not mcap_files:
                raise BagError(
                    f"{self.path} is not a readable rosbag2 bag (truncated, corrupt or not a bag): {exc}"
                ) from exc
            self._salvage(mcap_files, exc)

    def _mcap_files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(self.path.glob("*.mcap"))
        return [self.path] if self.path.suffix == ".mcap" else []

    def _salvage(self, files: list[Path], cause: Exception) -> None:
        """Index a truncated MCAP recording by reading it through once, record by record."""
        counts: Counter[tuple[str, str]] = Counter()
        times: list[int] = []
        reasons = []
        for file in files:
            salvager = McapSalvager(file)
            try:
                for message in salvager.messages():
                    counts[(message.topic, message.msgtype)] += 1
                    times.append(message.log_time_ns)
            except McapSalvageError as exc:
                raise BagError(
                    f"{self.path} is not a readable rosbag2 bag (truncated, corrupt or not a bag): "
                    f"{cause}; {exc}"
                ) from exc
            if salvager.report.reason:
                reasons.append(f"{file.name}: {salvager.report.reason}")
        if not counts:
            raise BagError(f"{self.path} is truncated or corrupt and holds no intact message ({cause})")
        self._salvage_files = files
        self._salvage_topics = {
            topic: TopicSummary(topic, msgtype, n) for (topic, msgtype), n in counts.items()
        }
        self._salvage_times = (min(times), max(times), len(times))
        self.salvaged = (
            f"{self.path} is truncated ({'; '.join(reasons) or cause}); "
            f"read the {len(times)} intact messages before the cut"
        )
        self.problems["bag truncated: read up to the cut"] += 1
        LOG.warning("%s", self.salvaged)

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None and self._reader.is_open:
            self._reader.close()

    # ------------------------------------------------------------------ metadata
    @property
    def topics(self) -> dict[str, TopicSummary]:
        """Topic name -> type and message count as the bag's index states them."""
        if self._reader is None:
            return dict(self._salvage_topics)
        return {
            name: TopicSummary(name, info.msgtype or "(several types)", info.msgcount)
            for name, info in self._reader.topics.items()
        }

    @property
    def message_count(self) -> int:
        return self._salvage_times[2] if self._reader is None else self._reader.message_count

    @property
    def start_time_ns(self) -> int:
        if self._reader is None:
            return self._salvage_times[0]
        return self._reader.start_time if self._reader.message_count else 0

    @property
    def duration_ns(self) -> int:
        if self._reader is None:
            return self._salvage_times[1] - self._salvage_times[0]
        return self._reader.duration

    @property
    def storage(self) -> str:
        if self._reader is None:
            return "mcap"
        if self.path.is_dir():
            metadata = self.path / "metadata.yaml"
            text = metadata.read_text() if metadata.exists() else ""
            return "mcap" if "storage_identifier: mcap" in text else "sqlite3"
        return "mcap" if self.path.suffix == ".mcap" else "sqlite3"

    @property
    def custom_data(self) -> dict[str, str]:
        if self._reader is None:
            return {}
        return dict(self._reader.storage.metadata.custom or {})

    def _require_topics(self, names: Iterable[str]) -> None:
        """``BagError`` naming the first of ``names`` the bag does not hold, and the topics it does."""
        available = self.topics
        for topic in names:
            if topic not in available:
                raise BagError(
                    f"topic {topic} not in bag {self.path}; it has: {', '.join(sorted(available)) or 'none'}"
                )

    def _skip_undecodable(self, topic: str, msgtype: str, log_time: int, exc: Exception) -> None:
        """Count a message that does not decode; warn on the first of each topic."""
        key = f"undecodable message on {topic}"
        self.problems[key] += 1
        if self.problems[key] == 1:
            LOG.warning("%s: skipping undecodable %s on %s at %d ns: %s", self.path, msgtype, topic, log_time, exc)

    def check_topic(self, topic: str, allowed_types: Iterable[str] = IMAGE_TYPES) -> TopicSummary:
        """The topic's summary, or ``BagError`` if it is missing, of another type or empty."""
        allowed = tuple(allowed_types)
        self._require_topics([topic])
        summary = self.topics[topic]
        if summary.msgtype not in allowed:
            raise BagError(
                f"topic {topic} in {self.path} holds {summary.msgtype}, expected {' or '.join(allowed)}"
            )
        if summary.count == 0:
            raise BagError(f"topic {topic} in {self.path} has no messages")
        return summary

    # ------------------------------------------------------------------ messages
    def _raw_messages(self, topics: Iterable[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """``(topic, msgtype, log_time_ns, cdr)`` of ``topics`` in storage order."""
        wanted = set(topics)
        if self._reader is None:
            for file in self._salvage_files:
                for message in McapSalvager(file).messages():
                    if message.topic in wanted:
                        yield message.topic, message.msgtype, message.log_time_ns, message.data
            return
        connections = [c for c in self._reader.connections if c.topic in wanted]
        if not connections:
            return
        iterator = self._reader.messages(connections=connections)
        read = 0
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except (
                ReaderError,
                sqlite3.DatabaseError,
                OSError,
                EOFError,
                ValueError,
                KeyError,
                IndexError,
                AssertionError,
            ) as exc:
                # Storage-level damage: nothing after this point can be trusted.
                raise BagError(
                    f"{self.path} is truncated or corrupt after {read} messages: {type(exc).__name__}: {exc}"
                ) from exc
            read += 1
            connection, log_time, raw = item
            yield connection.topic, connection.msgtype, log_time, raw

    def iter_images(self, topics: Iterable[str]) -> Iterator[ImageMessage]:
        """Image messages of ``topics`` in bag (log time) order, decoded by the codec.

        Every topic is checked first (``check_topic``). A message that does not decode is counted
        in ``problems`` and skipped; a header stamp older than the topic's previous one is counted,
        warned about once per topic, and the message is still yielded (the synchroniser copes).
        """
        topics = list(dict.fromkeys(topics))
        types = {topic: self.check_topic(topic).msgtype for topic in topics}
        last_stamp: dict[str, int] = {}
        for topic, _, log_time, raw in self._raw_messages(topics):
            try:
                msg = TYPESTORE.deserialize_cdr(raw, types[topic])
                if types[topic] == IMAGE_MSGTYPE:
                    image = decode_image(
                        msg.height, msg.width, msg.encoding, bool(msg.is_bigendian), msg.step, msg.data
                    )
                    encoding = msg.encoding
                    if image.ndim == 3:  # bgr8, rgba8, ... -> RGB order, as the nodes hand frames on
                        image = to_rgb(image, encoding)
                else:
                    image = decode_compressed(msg.format, msg.data)
                    encoding = (
                        "rgb8" if image.ndim == 3 else ("mono16" if image.dtype == np.uint16 else "mono8")
                    )
            except (ImageCodecError, ValueError, TypeError, IndexError, AssertionError) as exc:
                self._skip_undecodable(topic, types[topic], log_time, exc)
                continue
            stamp = _stamp_ns(msg.header)
            previous = last_stamp.get(topic)
            if previous is not None and stamp < previous:
                key = f"stamps out of order on {topic}"
                self.problems[key] += 1
                if self.problems[key] == 1:
                    LOG.warning(
                        "%s: header stamps go backwards on %s (%d ns after %d ns); continuing",
                        self.path,
                        topic,
                        stamp,
                        previous,
                    )
            last_stamp[topic] = stamp if previous is None else max(stamp, previous)
            yield ImageMessage(topic, int(log_time), stamp, msg.header.frame_id, encoding, image)

    def iter_strings(self, topic: str) -> Iterator[StringMessage]:
        """``std_msgs/String`` messages of ``topic`` (the topic must exist and have that type)."""
        summary = self.topics.get(topic)
        if summary is None:
            raise BagError(f"topic {topic} not in bag {self.path}")
        if summary.msgtype != STRING_MSGTYPE:
            raise BagError(f"topic {topic} in {self.path} holds {summary.msgtype}, expected {STRING_MSGTYPE}")
        for _, _, log_time, raw in self._raw_messages([topic]):
            yield StringMessage(topic, int(log_time), TYPESTORE.deserialize_cdr(raw, STRING_MSGTYPE).data)

    def type_hash(self, topic: str) -> str:
        """The RIHS01 type hash the bag stores for ``topic`` ("" when it stores none, e.g. Humble bags)."""
        if self._reader is None:
            return ""
        return next((c.digest for c in self._reader.connections if c.topic == topic and c.digest), "")

    def _ensure_types(self, topics: list[str]) -> None:
        """Make the types of ``topics`` known to the typestore, preferring the bag's stored definitions.

        A stored RIHS01 hash that differs from the registered type's is a ``BagError``: deserialising
        with that definition would misread the bytes.
        """
        if self._reader is None:  # salvaged MCAP: no stored definitions read, use the installed ones
            for topic in topics:
                ensure_msgtype(self._salvage_topics[topic].msgtype)
            return
        for connection in self._reader.connections:
            if connection.topic not in topics:
                continue
            msgtype = connection.msgtype
            if not register_definition(msgtype, connection.msgdef, origin=str(self.path)):
                ensure_msgtype(msgtype)
            if connection.digest.startswith("RIHS01_"):
                registered = TYPESTORE.hash_rihs01(msgtype)
                if registered != connection.digest:
                    raise BagError(
                        f"topic {connection.topic} in {self.path} holds {msgtype} with type hash "
                        f"{connection.digest}, but the registered {msgtype} has {registered}: "
                        "its definition changed since the bag was recorded"
                    )

    def iter_messages(self, topics: Iterable[str]) -> Iterator[BagMessage]:
        """Messages of ``topics`` of any type, deserialised, in storage order.

        Types outside the Kilted typestore (``mex_fusion_msgs``, a robot's own packages) are
        registered from the definition stored in the bag, else from the installed one. A message
        that does not deserialise is counted in ``problems`` and skipped.
        """
        names = list(dict.fromkeys(topics))
        self._require_topics(names)
        self._ensure_types(names)
        for topic, msgtype, log_time, raw in self._raw_messages(names):
            try:
                msg = TYPESTORE.deserialize_cdr(raw, msgtype)
            except (SerdeError, ValueError, TypeError, IndexError, AssertionError, struct.error) as exc:
                self._skip_undecodable(topic, msgtype, log_time, exc)
                continue
            yield BagMessage(topic, msgtype, int(log_time), msg)

    def iter_raw(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """``(topic, msgtype, log_time_ns, cdr)`` of every message (of ``topics``), in log-time order."""
        names = list(self.topics) if topics is None else list(topics)
        for topic in names:
            if topic not in self.topics:
                raise BagError(f"topic {topic} not in bag {self.path}")
        for topic, msgtype, log_time, raw in self._raw_messages(names):
            yield topic, msgtype, int(log_time), bytes(raw)

    def info(self) -> dict:
        """A JSON-able summary: storage, duration, and per topic type, count and rate."""
        duration_s = self.duration_ns / 1e9 if self.message_count else 0.0
        return {
            "path": str(self.path),
            "storage": self.storage,
            "messages": self.message_count,
            "start_time_ns": self.start_time_ns,
            "duration_s": duration_s,
            "topics": {
                name: {
                    "type": s.msgtype,
                    "count": s.count,
                    "rate_hz": (s.count - 1) / duration_s if duration_s > 0 and s.count > 1 else 0.0,
                }
                for name, s in sorted(self.topics.items())
            },
            "custom_data": self.custom_data,
        }


def format_info(info: dict) -> str:
    """``BagReader.info()`` as the lines ``mex-fusion bag info`` prints."""
    lines = [
        f"bag:       {info['path']} ({info['storage']})",
        f"messages:  {info['messages']}",
        f"duration:  {info['duration_s']:.3f} s",
    ]
    if info["messages"]:
        lines.append(f"start:     {info['start_time_ns'] / 1e9:.9f} s")
    lines.append("topics:")
    width = max((len(name) for name in info["topics"]), default=0)
    for name, topic in info["topics"].items():
        lines.append(
            f"  {name:<{width}}  {topic['count']:>6} msgs  {topic['rate_hz']:6.2f} Hz  {topic['type']}"
        )
    for key, value in info.get("custom_data", {}).items():
        shown = value if len(value) <= 120 else value[:117] + "..."
        lines.append(f"custom_data[{key}]: {shown}")
    return "\n".join(lines)


def read_json_sidecar(bag_path: str | Path, name: str) -> dict | None:
    """A JSON file stored inside a bag directory, or None when absent (a bare storage file has none)."""
    path = Path(bag_path)
    sidecar = (path if path.is_dir() else path.parent) / name
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise BagError(f"{sidecar} is not valid JSON: {exc}") from exc
