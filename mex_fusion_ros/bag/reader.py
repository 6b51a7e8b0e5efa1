"""Read image topics out of rosbag2 bags (MCAP or sqlite3), decoded by the codec, past any damage.

Every way a bag can be unusable ends in one ``BagError`` whose message names the bag and the
problem: not a bag, storage with no intact message, a topic that is missing, of the wrong type or
empty. Damage in the storage does not stop a read: a damaged MCAP chunk or sqlite3 page costs its
own messages, which are counted (``BagReader.lost_messages``, ``problems``), and everything before
and after it is read (``mcap_salvage``, ``sqlite_salvage``); ``BagReader.salvaged`` says what was
wrong. Problems with single messages do not stop it either: header stamps going backwards are
counted and warned about once per topic, undecodable messages are counted and skipped, so an
evaluation can report what it could process.
"""

from __future__ import annotations

import json
import logging
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from rosbags.rosbag2 import Reader
from rosbags.serde import SerdeError

from mex_fusion_ros.bag import COMPRESSED_IMAGE_MSGTYPE, IMAGE_MSGTYPE, STRING_MSGTYPE
from mex_fusion_ros.bag.mcap_salvage import McapFile, McapSalvageError
from mex_fusion_ros.bag.sqlite_salvage import SqliteFile, SqliteSalvageError
from mex_fusion_ros.bag.typestore import TYPESTORE, BagError, ensure_msgtype, register_definition
from mex_fusion_ros.codec.image_codec import ImageCodecError, decode_compressed, decode_image, to_rgb

LOG = logging.getLogger(__name__)
IMAGE_TYPES = (IMAGE_MSGTYPE, COMPRESSED_IMAGE_MSGTYPE)
#: What deserialising and decoding damaged bytes raises (rosbags' CDR reader and numpy as much as
#: the codec): the message is counted and skipped, never the end of the read.
UNDECODABLE = (SerdeError, ImageCodecError, ValueError, TypeError, IndexError, KeyError, AssertionError,
               struct.error, OverflowError, MemoryError)
#: Keys rosbag2's metadata.yaml must hold for the bag to be read from it.
METADATA_KEYS = ("version", "storage_identifier", "relative_file_paths", "duration", "starting_time",
                 "message_count", "topics_with_message_count")


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
    """An open bag. Use as a context manager; iterating twice reads the bag twice.

    Metadata (topics, counts, times, stored definitions) comes from ``rosbags`` when it can read
    the bag. Messages are always read by the project's own storage readers (``mcap_salvage``,
    ``sqlite_salvage``), which go on past damage: a damaged chunk or page costs its own messages,
    counted, and every readable message before and after it is read. When ``rosbags`` cannot
    open the bag (no or a broken ``metadata.yaml``, a cut-off recording), the storage files are
    read through once to index them. ``salvaged`` says what was wrong and what was read anyway.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        self.problems: Counter[str] = Counter()
        self._reader: Reader | None = None
        self._files: list[McapFile | SqliteFile] = []
        #: What is wrong with metadata.yaml (None: nothing, or a bare storage file).
        self._metadata_problem: str | None = None
        #: Messages read per topic by the last complete pass over it.
        self._read: Counter[str] = Counter()
        self._index: dict[str, TopicSummary] = {}
        self._index_times = (0, 0, 0)
        cause: Exception | None = None
        try:
            reader = Reader(self.path)
            reader.open()
            self._reader = reader
            # Kept for after close(): what was lost is still known once the bag is closed.
            self._index = {name: TopicSummary(name, info.msgtype or "(several types)", info.msgcount)
                           for name, info in reader.topics.items()}
        except Exception as exc:  # noqa: BLE001 - rosbags parses untrusted files: any error means "cannot read"
            cause = exc
        try:
            self._open_storage(cause)
            if self._reader is None:
                self._index_storage(cause)
                self._metadata_problem = self._metadata_status(cause)
                LOG.warning("%s", self.salvaged)
        except BaseException:
            self.close()
            raise

    def _storage_files(self) -> list[Path]:
        """The bag's storage files: those metadata.yaml lists when it can say, else those present."""
        if not self.path.is_dir():
            return [self.path] if self.path.suffix in (".mcap", ".db3") else []
        listed = _metadata_document(self.path).get("relative_file_paths") if self._reader is not None else None
        if isinstance(listed, list) and listed:
            files = [self.path / Path(str(name)).name for name in listed]
            if all(file.is_file() for file in files):
                return files
        return sorted(p for p in self.path.iterdir() if p.suffix in (".mcap", ".db3") and p.is_file())

    def _open_storage(self, cause: Exception | None) -> None:
        files = self._storage_files()
        if not files:
            what = "holds no .mcap or .db3 storage file" if self.path.is_dir() else "is not a .mcap or .db3 file"
            raise BagError(f"{self.path} is not a readable rosbag2 bag: it {what}")
        for file in files:
            try:
                self._files.append(McapFile(file) if file.suffix == ".mcap" else SqliteFile(file))
            except (McapSalvageError, SqliteSalvageError) as exc:
                because = f" (rosbags: {cause})" if cause is not None else ""
                raise BagError(f"{self.path} is not a readable rosbag2 bag: {exc}{because}") from exc

    def _metadata_status(self, cause: Exception | None) -> str | None:
        """What is wrong with ``metadata.yaml``, for a bag ``rosbags`` could not open."""
        if not self.path.is_dir():
            return None if self.damage or cause is None else f"cannot be read by rosbags ({_one_line(cause)})"
        metadata = self.path / "metadata.yaml"
        if not metadata.exists():
            return "has no metadata.yaml"
        problem = _metadata_problem(metadata)
        if problem is not None:
            return f"has a broken metadata.yaml ({problem})"
        if self.damage or cause is None:  # the storage's damage is why rosbags failed; it is reported
            return None
        return f"cannot be read by rosbags ({_one_line(cause)})"

    def _index_storage(self, cause: Exception | None) -> None:
        """Without usable metadata: read the storage through once for its topics, counts and times."""
        counts: Counter[tuple[str, str]] = Counter()
        first, last, total = None, None, 0
        for storage in self._files:
            for message in storage.messages():
                counts[(message.topic, message.msgtype)] += 1
                total += 1
                first = message.log_time_ns if first is None else min(first, message.log_time_ns)
                last = message.log_time_ns if last is None else max(last, message.log_time_ns)
        if not total:
            damage = "; ".join(str(d) for storage in self._files for d in storage.damage)
            reason = damage or (_one_line(cause) if cause is not None else "no messages")
            raise BagError(f"{self.path} is truncated or corrupt and holds no intact message ({reason})")
        self._index = {topic: TopicSummary(topic, msgtype, n) for (topic, msgtype), n in counts.items()}
        self._index_times = (first or 0, last or 0, total)
        for (topic, _), n in counts.items():
            self._read[topic] = n

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None and self._reader.is_open:
            self._reader.close()
        for storage in self._files:
            storage.close()

    # ------------------------------------------------------------------ what is wrong
    @property
    def damage(self) -> list[str]:
        """Every damage found in the storage files so far, one line each (file, where, what, cost)."""
        return [f"{storage.path.name} {d}" for storage in self._files for d in storage.damage]

    @property
    def truncated(self) -> bool:
        return any(not storage.complete for storage in self._files)

    def _expected(self, topic: str) -> int | None:
        """The message count of ``topic`` the bag's own records state (None when none does)."""
        if self._reader is not None:
            return self.topics.get(topic, TopicSummary(topic, "", 0)).count
        if self.path.is_dir() and _metadata_problem(self.path / "metadata.yaml") is None:
            # metadata.yaml is whole (the storage is what is damaged): it states the counts.
            for entry in _metadata_document(self.path).get("topics_with_message_count") or []:
                try:
                    if entry["topic_metadata"]["name"] == topic:
                        return int(entry["message_count"])
                except (KeyError, TypeError, ValueError):
                    break
        stated: Counter[str] = Counter()
        for storage in self._files:
            counts = storage.indexed_counts() if isinstance(storage, McapFile) else storage.counts()
            if counts is None:
                return None
            stated.update(counts)
        return stated[topic]

    def lost_messages(self) -> dict[str, int]:
        """Per topic read through: messages the bag's records state minus those read (when > 0)."""
        lost = {}
        for topic, read in self._read.items():
            expected = self._expected(topic)
            if expected is not None and expected > read:
                lost[topic] = expected - read
        return lost

    @property
    def salvaged(self) -> str | None:
        """One line on what is wrong with the bag and what was read anyway; None when nothing is."""
        damage, lost = self.damage, self.lost_messages()
        if self._metadata_problem is None and not damage and not lost:
            return None
        what = []
        if self._metadata_problem:
            what.append(self._metadata_problem)
        if self.truncated:
            what.append("is truncated")
        if any(not line.split(": ", 1)[1].startswith("cut off") for line in damage) or (lost and not damage):
            what.append("is damaged")
        text = f"{self.path} {' and '.join(what)}"
        if damage:
            text += f" ({'; '.join(damage)})"
        read = sum(self._read.values())
        storage = ", ".join(storage.path.name for storage in self._files)
        if self.truncated:
            text += f"; read the {read} intact messages before the cut"
        elif damage or lost:
            text += f"; read {read} messages, every intact one"
        else:
            text += f"; {read} messages were read from {storage}, which shows no damage"
        if lost:
            per_topic = ", ".join(f"{n} on {topic}" for topic, n in sorted(lost.items()))
            text += f"; {sum(lost.values())} lost ({per_topic})"
        return text

    # ------------------------------------------------------------------ metadata
    @property
    def topics(self) -> dict[str, TopicSummary]:
        """Topic name -> type and message count as the bag's index states them."""
        return dict(self._index)

    @property
    def message_count(self) -> int:
        return self._index_times[2] if self._reader is None else self._reader.message_count

    @property
    def start_time_ns(self) -> int:
        if self._reader is None:
            return self._index_times[0]
        return self._reader.start_time if self._reader.message_count else 0

    @property
    def duration_ns(self) -> int:
        if self._reader is None:
            return self._index_times[1] - self._index_times[0]
        return self._reader.duration

    @property
    def storage(self) -> str:
        return "mcap" if all(isinstance(storage, McapFile) for storage in self._files) else "sqlite3"

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
        """``(topic, msgtype, log_time_ns, cdr)`` of ``topics``, each storage file in log-time order.

        Damage in the storage never stops the read (see the class docstring); once a pass over
        ``topics`` is complete, the messages it lost are counted in ``problems``.
        """
        wanted = set(topics)
        stated_types = {name: summary.msgtype for name, summary in self.topics.items()}
        read: Counter[str] = Counter()
        for storage in self._files:
            for message in storage.messages(wanted):
                read[message.topic] += 1
                msgtype = stated_types.get(message.topic) or message.msgtype
                yield message.topic, msgtype, message.log_time_ns, message.data
        for topic in wanted:
            self._read[topic] = read[topic]
        for topic, lost in self.lost_messages().items():
            if topic in wanted:
                self.problems[f"messages lost on {topic} (damaged storage)"] = lost

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
            except UNDECODABLE as exc:
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
            try:
                text = TYPESTORE.deserialize_cdr(raw, STRING_MSGTYPE).data
            except UNDECODABLE as exc:
                self._skip_undecodable(topic, STRING_MSGTYPE, log_time, exc)
                continue
            yield StringMessage(topic, int(log_time), text)

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
        if self._reader is None:  # indexed from the storage: no stored definitions read, use the installed ones
            for topic in topics:
                ensure_msgtype(self._index[topic].msgtype)
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
            except UNDECODABLE as exc:
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


def _one_line(error: BaseException | None) -> str:
    text = " ".join(str(error).split()) if error is not None else ""
    return f"{type(error).__name__}: {text}" if error is not None and text else type(error).__name__


def _metadata_document(bag: Path) -> dict:
    """``rosbag2_bagfile_information`` of ``bag/metadata.yaml``, or {} when it cannot be read."""
    try:
        document = yaml.safe_load((bag / "metadata.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    info = document.get("rosbag2_bagfile_information") if isinstance(document, dict) else None
    return info if isinstance(info, dict) else {}


def _metadata_problem(metadata: Path) -> str | None:
    """Why ``metadata`` (a rosbag2 ``metadata.yaml``) is unusable, in a few words; None if it looks whole."""
    try:
        document = yaml.safe_load(metadata.read_text())
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text at byte {exc.start}"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return f"not valid YAML{where}: {getattr(exc, 'problem', None) or _one_line(exc)}"
    info = document.get("rosbag2_bagfile_information") if isinstance(document, dict) else None
    if not isinstance(info, dict):
        return "no rosbag2_bagfile_information mapping"
    missing = [key for key in METADATA_KEYS if key not in info]
    if missing:
        return f"missing {', '.join(missing)}"
    return None
