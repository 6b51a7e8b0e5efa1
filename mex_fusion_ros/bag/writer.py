"""Write rosbag2 bags (MCAP or sqlite3) with ``rosbags``: images, strings and raw CDR messages.

Image messages get their fields from the project codec (``codec.image_codec.encode_image``), so a
bag written here decodes with the same code the nodes use. Each message carries two times, and
both are set: the header stamp (capture time, what synchronisers pair on) and the bag's receive
time (log time, what players replay on); ``write_image`` uses the header stamp for both unless a
separate ``log_time_ns`` is given. MCAP chunks get their CRC-32 on close (``rosbags`` writes none),
so that readers find a damaged chunk instead of decoding it.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np
from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.errors import WriterError

from mex_fusion_ros.bag import IMAGE_MSGTYPE, STRING_MSGTYPE
from mex_fusion_ros.bag.mcap_salvage import write_chunk_crcs
from mex_fusion_ros.bag.typestore import TYPESTORE, BagError, ensure_msgtype
from mex_fusion_ros.codec.image_codec import encode_image

STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_INFINITE = QosTime(sec=0x7FFFFFFF, nsec=0xFFFFFFFF)
#: Offered QoS stored with each topic: reliable, like a camera driver meant to be recorded.
RELIABLE_QOS = Qos(
    history=QosHistory.KEEP_LAST,
    depth=10,
    reliability=QosReliability.RELIABLE,
    durability=QosDurability.VOLATILE,
    deadline=_INFINITE,
    lifespan=_INFINITE,
    liveliness=QosLiveliness.AUTOMATIC,
    liveliness_lease_duration=_INFINITE,
    avoid_ros_namespace_conventions=False,
)


#: ``builtin_interfaces/Time.sec`` is an int32: header stamps end in January 2038.
MAX_STAMP_NS = 2**31 * 1_000_000_000


class BagWriteError(RuntimeError):
    """A bag cannot be written (path exists, unknown storage, bad message); the message says why."""


def stamp_to_time(stamp_ns: int):
    """Nanoseconds since the epoch -> ``builtin_interfaces/Time`` of the typestore."""
    if not 0 <= stamp_ns < MAX_STAMP_NS:
        raise BagWriteError(f"stamps must be in [0, 2^31 s) (builtin_interfaces/Time.sec is int32), got {stamp_ns} ns")
    time_type = TYPESTORE.types["builtin_interfaces/msg/Time"]
    return time_type(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


class BagWriter:
    """Context manager around ``rosbags.rosbag2.Writer``; topics are registered on first write.

    ``path`` is the bag directory (it must not exist yet: rosbag2 bags are never appended to).
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGE_PLUGINS:
            raise BagWriteError(f"unknown bag storage {storage!r}; choose one of {sorted(STORAGE_PLUGINS)}")
        self.path = Path(path)
        if self.path.exists():
            raise BagWriteError(f"{self.path} already exists; rosbag2 bags are written to a new directory")
        self.storage = storage
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGE_PLUGINS[storage])
        self._connections: dict[str, Connection] = {}
        self.message_count = 0

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer.open()

    def close(self) -> None:
        # Always close: an unclosed MCAP file has no summary and an unclosed bag has no metadata.yaml.
        self._writer.close()
        if self.storage == "mcap":
            # rosbags stores no chunk CRCs; with them a damaged chunk is found on reading, not
            # decoded into wrong pixels (mcap_salvage.write_chunk_crcs).
            for file in sorted(self.path.glob("*.mcap")):
                write_chunk_crcs(file)

    def set_custom_data(self, key: str, value: str) -> None:
        """A string stored in ``metadata.yaml``'s ``custom_data`` (bag format version 9)."""
        self._writer.set_custom_data(key, value)

    def connection(self, topic: str, msgtype: str) -> Connection:
        """The connection of ``topic``, created with ``msgtype`` on first use; a second type is an error."""
        existing = self._connections.get(topic)
        if existing is not None:
            if existing.msgtype != msgtype:
                raise BagWriteError(f"topic {topic} already holds {existing.msgtype}, cannot write {msgtype}")
            return existing
        try:
            # Custom types (mex_fusion_msgs, a robot's own packages) from their installed definitions.
            ensure_msgtype(msgtype)
        except BagError as exc:
            raise BagWriteError(
                f"cannot add topic {topic} to {self.path}: {exc}; or use add_raw_connection with its definition"
            ) from exc
        try:
            conn = self._writer.add_connection(
                topic, msgtype, typestore=TYPESTORE, offered_qos_profiles=[RELIABLE_QOS]
            )
        except WriterError as exc:
            raise BagWriteError(f"cannot add topic {topic} ({msgtype}) to {self.path}: {exc}") from exc
        self._connections[topic] = conn
        return conn

    def add_raw_connection(self, topic: str, msgtype: str, msgdef: str, rihs01: str) -> Connection:
        """Register a topic of a type outside the typestore, from its definition text and RIHS01 hash."""
        if topic in self._connections:
            raise BagWriteError(f"topic {topic} is already registered in {self.path}")
        conn = self._writer.add_connection(
            topic, msgtype, msgdef=msgdef, rihs01=rihs01, offered_qos_profiles=[RELIABLE_QOS]
        )
        self._connections[topic] = conn
        return conn

    def write_raw(self, topic: str, msgtype: str, log_time_ns: int, cdr: bytes | memoryview) -> None:
        """Write an already serialised (CDR) message, e.g. one received by ``bag record``."""
        self._writer.write(self.connection(topic, msgtype), int(log_time_ns), cdr)
        self.message_count += 1

    def write_image(
        self,
        topic: str,
        stamp_ns: int,
        image: np.ndarray,
        encoding: str,
        *,
        frame_id: str = "",
        log_time_ns: int | None = None,
    ) -> None:
        """Encode ``image`` (uint8/uint16 array as the encoding requires) as ``sensor_msgs/Image``."""
        raw = encode_image(image, encoding)
        msg_type = TYPESTORE.types[IMAGE_MSGTYPE]
        header_type = TYPESTORE.types["std_msgs/msg/Header"]
        msg = msg_type(
            header=header_type(stamp=stamp_to_time(stamp_ns), frame_id=frame_id),
            height=raw.height,
            width=raw.width,
            encoding=raw.encoding,
            is_bigendian=int(raw.is_bigendian),
            step=raw.step,
            data=np.frombuffer(bytes(raw.data), dtype=np.uint8),
        )
        cdr = TYPESTORE.serialize_cdr(msg, IMAGE_MSGTYPE)
        self.write_raw(topic, IMAGE_MSGTYPE, stamp_ns if log_time_ns is None else log_time_ns, cdr)

    def write_string(self, topic: str, log_time_ns: int, text: str) -> None:
        """One ``std_msgs/String`` message (used for the JSON degradation timeline)."""
        msg = TYPESTORE.types[STRING_MSGTYPE](data=text)
        self.write_raw(topic, STRING_MSGTYPE, log_time_ns, TYPESTORE.serialize_cdr(msg, STRING_MSGTYPE))
