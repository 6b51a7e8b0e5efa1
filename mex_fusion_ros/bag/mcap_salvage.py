"""Read every intact message of an MCAP file, whatever else in it is damaged; write chunk CRCs.

``rosbags`` reads MCAP through the summary at the end of the file and stops (or raises) at the
first damaged record. A recording can be damaged in many ways — cut off by a crash or power
loss, a flipped bit on an SD card, a bad sector — and each damaged chunk should cost its own
messages only. This module reads MCAP itself (spec: https://mcap.dev/spec; magic, then
``opcode u8 | length u64 | content`` records; messages top-level or inside chunks, uncompressed,
lz4 or zstd):

1. ``McapFile.scan`` walks the data section record by record (headers only: cheap), noting the
   chunks, the message counts their Message Index records give, and the Schema and Channel
   records (also from the summary section, which repeats them, so a lost first chunk does not
   orphan every later message). A record whose length runs past the end of the file, or whose
   opcode is not one of the spec's, is damage: reading resumes at the next intact Chunk record
   (found by its exact structure: a known compression and lengths that add up), or stops at the
   cut when there is none.
2. ``McapFile.messages`` decodes the chunks lazily in log-time order (as rosbags does). A chunk
   that does not decompress, has the wrong size, or fails its CRC (``uncompressed_crc``, when the
   writer stored one: rosbag2 does, and ``write_chunk_crcs`` adds them to the files ``rosbags``
   writes) is damage: its messages are counted as lost, never decoded into wrong pixels.

Every damage is a ``Damage`` (where, what, how many messages it cost when the indexes say).
"""

from __future__ import annotations

import heapq
import mmap
import struct
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lz4.frame

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_MESSAGE_INDEX, OP_CHUNK_INDEX, OP_ATTACHMENT, OP_ATTACHMENT_INDEX = 0x07, 0x08, 0x09, 0x0A
OP_STATISTICS, OP_METADATA, OP_METADATA_INDEX, OP_SUMMARY_OFFSET, OP_DATA_END = 0x0B, 0x0C, 0x0D, 0x0E, 0x0F
DATA_OPCODES = {OP_HEADER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_MESSAGE_INDEX, OP_ATTACHMENT,
                OP_METADATA, OP_DATA_END}
SUMMARY_OPCODES = {OP_SCHEMA, OP_CHANNEL, OP_CHUNK_INDEX, OP_ATTACHMENT_INDEX, OP_STATISTICS,
                   OP_METADATA_INDEX, OP_SUMMARY_OFFSET}
COMPRESSIONS = ("", "lz4", "zstd")
#: Chunks are ~1 MiB (rosbags, rosbag2: 768 KiB by default); a declared size beyond this is damage,
#: and never allocated.
MAX_CHUNK_BYTES = 1 << 30
_CHUNK_FIXED = 8 + 8 + 8 + 4  # start, end, uncompressed size, crc
_MESSAGE_FIXED = 2 + 4 + 8 + 8  # channel, sequence, log time, publish time
_FOOTER_LENGTH = 8 + 8 + 4


class McapSalvageError(ValueError):
    """Not an MCAP file at all (bad magic, unreadable); the message names the file."""


class _RecordError(ValueError):
    """A record whose content does not parse (internal: becomes a ``Damage``)."""


@dataclass(frozen=True)
class SalvagedMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


@dataclass(frozen=True)
class Damage:
    """Damage found in a file: ``offset`` (byte), what it is, and the messages it cost.

    ``lost``: the number of messages lost with it, or None when no index says (a damaged span
    between two chunks, a chunk without Message Index records).
    """

    offset: int
    what: str
    lost: int | None = None
    #: What ``offset`` counts: a byte of an MCAP file, a row of a sqlite3 table.
    unit: str = "byte"

    def __str__(self) -> str:
        cost = "" if self.lost is None else f" ({self.lost} message{'s' if self.lost != 1 else ''} lost)"
        return f"{self.unit} {self.offset}: {self.what}{cost}"


#: What the per-chunk sources yield for merging: (log time, position in the chunk, message).
_Item = tuple[int, int, "SalvagedMessage | None"]


@dataclass
class _Chunk:
    offset: int
    end: int  # end of the record
    start_time: int
    #: Messages per channel from the Message Index records after the chunk (None: no index read).
    indexed: Counter[int] | None = None
    #: Why the chunk cannot be read at all (a damaged header), found by the scan.
    broken: str | None = None

    @property
    def lost(self) -> int | None:
        return sum(self.indexed.values()) if self.indexed is not None else None


class McapFile:
    """One MCAP file opened for salvage reading (``scan()`` runs on open); close it, or use ``with``.

    The file is memory-mapped and sliced into ``bytes`` (no views into the map outlive a call), so
    a file of any size is read a chunk at a time.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # Channel and Schema records by id: from the data section (inside CRC-checked chunks), and
        # from the summary, which only fills in what the data section no longer has.
        self._channels: dict[int, tuple[str, int]] = {}  # id -> (topic, schema id)
        self._schemas: dict[int, str] = {}  # id -> message type name
        self._summary_channels: dict[int, tuple[str, int]] = {}
        self._summary_schemas: dict[int, str] = {}
        self.damage: list[Damage] = []
        #: The data section ended properly (Data End record); False: the file is cut off.
        self.complete = False
        #: Byte where the readable data ends (the cut, for a cut-off file).
        self.readable_bytes = 0
        #: Message counts per channel stated by the summary's Statistics record (None: no summary).
        self.summary_counts: dict[int, int] | None = None
        self._chunks: list[_Chunk] = []
        self._top_level: list[int] = []  # offsets of Message records outside chunks
        self._reported: set[tuple[int, str]] = set()
        self._data: mmap.mmap | bytes = b""
        try:
            with self.path.open("rb") as handle:
                if handle.seek(0, 2):
                    self._data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise McapSalvageError(f"{self.path} cannot be read: {exc.strerror or exc}") from exc
        self._size = len(self._data)
        if self._data[: len(MAGIC)] != MAGIC:
            self.close()
            raise McapSalvageError(f"{self.path} is not an MCAP file (bad magic bytes)")
        self.scan()

    def __enter__(self) -> McapFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if isinstance(self._data, mmap.mmap):
            self._data.close()
        self._data = b""

    @property
    def channels(self) -> dict[int, tuple[str, int]]:
        """Channel id -> (topic, schema id)."""
        return {**self._summary_channels, **self._channels}

    @property
    def schemas(self) -> dict[int, str]:
        """Schema id -> message type name."""
        return {**self._summary_schemas, **self._schemas}

    def _report(self, damage: Damage) -> None:
        """Record ``damage`` once (a bag read twice finds it twice)."""
        if (damage.offset, damage.what) not in self._reported:
            self._reported.add((damage.offset, damage.what))
            self.damage.append(damage)

    # ------------------------------------------------------------------------------ pass 1
    def _header(self, offset: int) -> tuple[int, int, int]:
        """``(opcode, content start, record end)`` of the record at ``offset`` (end may lie past EOF)."""
        opcode = self._data[offset]
        (length,) = struct.unpack_from("<Q", self._data, offset + 1)
        return opcode, offset + 9, offset + 9 + length

    def scan(self) -> None:
        """Walk the data section: chunks, Message Index counts, schemas, channels, damage, the cut."""
        self._read_summary()
        data, offset, size = self._data, len(MAGIC), self._size
        current: _Chunk | None = None
        while offset < size:
            if size - offset < 9:
                self._cut(offset, "the file ends inside a record header")
                return
            opcode, start, end = self._header(offset)
            if end > size or opcode == 0 or 0x10 <= opcode < 0x80:
                what = (f"the record (opcode 0x{opcode:02x}) runs past the end of the file" if end > size
                        else f"no MCAP record here (opcode 0x{opcode:02x})")
                resume = self._next_chunk(offset + 1)
                if resume is None:
                    self._cut(offset, what)
                    return
                self._report(Damage(offset, f"{what}; bytes {offset}..{resume} skipped, reading resumed at "
                                            "the next intact chunk"))
                offset, current = resume, None
                continue
            if opcode in (OP_DATA_END, OP_FOOTER) or opcode in SUMMARY_OPCODES - DATA_OPCODES:
                # The summary follows Data End; a summary record here means Data End is missing.
                self.complete, self.readable_bytes = True, offset
                return
            try:
                if opcode == OP_CHUNK:
                    current = _Chunk(offset, end, 0)
                    self._chunks.append(current)
                    current.start_time = _chunk_header(data, start, end)[0]
                elif opcode == OP_MESSAGE_INDEX:
                    channel_id, count = _message_index(data, start, end)
                    if current is None:
                        raise _RecordError("it follows no chunk")
                    current.indexed = current.indexed if current.indexed is not None else Counter()
                    current.indexed[channel_id] += count
                elif opcode == OP_SCHEMA:
                    self._schema(data[start:end], self._schemas)
                elif opcode == OP_CHANNEL:
                    self._channel(data[start:end], self._channels)
                elif opcode == OP_MESSAGE:
                    _message_header(data, start, end)
                    self._top_level.append(offset)
            except (_RecordError, struct.error) as exc:
                if opcode == OP_CHUNK and current is not None:
                    current.broken = f"a damaged chunk ({exc})"
                else:
                    self._report(Damage(offset, f"a damaged {_RECORD_NAMES.get(opcode, 'record')} record ({exc})"))
            if opcode not in (OP_CHUNK, OP_MESSAGE_INDEX):
                current = None  # Message Index records belong to the chunk right before them
            offset = end
        self._cut(offset, "the file ends without a Data End record")

    def _cut(self, offset: int, what: str) -> None:
        self.complete, self.readable_bytes = False, offset
        self._report(Damage(offset, f"cut off: {what} ({self._size} bytes in all)"))

    def _next_chunk(self, offset: int) -> int | None:
        """The offset of the next intact-looking Chunk record at or after ``offset``, or None.

        A Chunk record is recognised by its structure, not the opcode byte alone (pixels hold
        0x06 bytes too): a known compression and a records length that fills the record exactly.
        """
        data, size, position = self._data, self._size, offset
        while True:
            position = data.find(bytes((OP_CHUNK,)), position)
            if position < 0 or size - position < 9 + _CHUNK_FIXED + 4 + 8:
                return None
            (length,) = struct.unpack_from("<Q", data, position + 1)
            if position + 9 + length <= size:
                try:
                    _chunk_header(data, position + 9, position + 9 + length)
                    return position
                except (_RecordError, struct.error):
                    pass
            position += 1

    def _read_summary(self) -> None:
        """Schemas, channels and statistics from the summary section, when the footer leads to one."""
        data, size = self._data, self._size
        footer = size - len(MAGIC) - 9 - _FOOTER_LENGTH
        if footer < len(MAGIC) or data[size - len(MAGIC):] != MAGIC:
            return
        try:
            opcode, start, end = self._header(footer)
            if opcode != OP_FOOTER or end != size - len(MAGIC):
                return
            summary_start, _, crc = struct.unpack_from("<QQI", data, start)
            if not len(MAGIC) < summary_start < footer:
                return
            if crc and zlib.crc32(data[summary_start : start + 16]) != crc:
                self._report(Damage(summary_start, "the summary section fails its CRC check; it is not used"))
                return
            channels: dict[int, tuple[str, int]] = {}
            schemas: dict[int, str] = {}
            counts = None
            offset = summary_start
            while offset < footer:
                opcode, start, end = self._header(offset)
                if end > footer or opcode not in SUMMARY_OPCODES:
                    return
                if opcode == OP_SCHEMA:
                    self._schema(data[start:end], schemas)
                elif opcode == OP_CHANNEL:
                    self._channel(data[start:end], channels)
                elif opcode == OP_STATISTICS:
                    counts = _statistics(data[start:end])
                offset = end
        except (_RecordError, struct.error):
            return  # a damaged summary: the data section is read without it
        self._summary_channels, self._summary_schemas, self.summary_counts = channels, schemas, counts

    @staticmethod
    def _schema(body: bytes, into: dict[int, str]) -> None:
        (schema_id,) = struct.unpack_from("<H", body, 0)
        name, _ = _string(body, 2)
        into[schema_id] = name

    @staticmethod
    def _channel(body: bytes, into: dict[int, tuple[str, int]]) -> None:
        channel_id, schema_id = struct.unpack_from("<HH", body, 0)
        topic, _ = _string(body, 4)
        into[channel_id] = (topic, schema_id)

    # ------------------------------------------------------------------------------ pass 2
    def indexed_counts(self) -> Counter[str] | None:
        """Messages per topic that the Message Index records state; None when a chunk has none."""
        if not self._chunks or any(chunk.indexed is None for chunk in self._chunks):
            return None
        counts: Counter[str] = Counter()
        for chunk in self._chunks:
            for channel_id, count in (chunk.indexed or {}).items():
                counts[self.channels.get(channel_id, (f"channel {channel_id}", 0))[0]] += count
        return counts

    def messages(self, topics: set[str] | None = None) -> Iterator[SalvagedMessage]:
        """Intact messages (of ``topics``), in log-time order; what is damaged goes to ``damage``."""
        sources = [self._chunk_source(chunk, topics) for chunk in self._chunks]
        if self._top_level:
            sources.append(self._top_level_source(topics))
        for _, _, message in heapq.merge(*sources, key=lambda item: (item[0], item[1])):
            if message is not None:
                yield message

    def _top_level_source(self, topics: set[str] | None) -> Iterator[_Item]:
        messages = []
        for offset in self._top_level:
            _, start, end = self._header(offset)
            message = self._message(self._data[start:end], offset, topics)
            if message is not None:
                messages.append((message.log_time_ns, len(messages), message))
        yield from sorted(messages, key=lambda item: item[:2])

    def _chunk_source(self, chunk: _Chunk, topics: set[str] | None) -> Iterator[_Item]:
        # The chunk's start time first, so that merging decompresses a chunk only when its turn comes.
        yield chunk.start_time, -1, None
        if chunk.broken:
            self._report(Damage(chunk.offset, chunk.broken, chunk.lost))
            return
        messages, problem = self._decode_chunk(chunk, topics)
        if problem is not None:
            self._report(problem)
        yield from sorted(messages, key=lambda item: item[:2])

    def _decode_chunk(self, chunk: _Chunk, topics: set[str] | None) -> tuple[list, Damage | None]:
        body = self._data[chunk.offset + 9 : chunk.end]
        try:
            _, _, size, crc, compression, (first, last) = _chunk_header(body, 0, len(body))
            raw = _decompress(memoryview(body)[first:last], compression, size)
        except (_RecordError, struct.error, RuntimeError, zstd.ZstdError, EOFError) as exc:
            return [], Damage(chunk.offset, f"a damaged chunk ({exc})", chunk.lost)
        if crc and zlib.crc32(raw) != crc:
            return [], Damage(chunk.offset, "a damaged chunk: it fails its CRC check", chunk.lost)
        messages: list[tuple[int, int, SalvagedMessage]] = []
        offset, read = 0, 0
        try:
            while offset < len(raw):
                if len(raw) - offset < 9:
                    raise _RecordError(f"a record header is cut off at chunk byte {offset}")
                opcode = raw[offset]
                (length,) = struct.unpack_from("<Q", raw, offset + 1)
                end = offset + 9 + length
                if end > len(raw):
                    raise _RecordError(f"the record at chunk byte {offset} runs past the chunk")
                if opcode == OP_SCHEMA:
                    self._schema(bytes(raw[offset + 9 : end]), self._schemas)
                elif opcode == OP_CHANNEL:
                    self._channel(bytes(raw[offset + 9 : end]), self._channels)
                elif opcode == OP_MESSAGE:
                    read += 1
                    message = self._message(bytes(raw[offset + 9 : end]), chunk.offset, topics)
                    if message is not None:
                        messages.append((message.log_time_ns, len(messages), message))
                elif opcode not in DATA_OPCODES and opcode < 0x80:
                    raise _RecordError(f"no MCAP record at chunk byte {offset} (opcode 0x{opcode:02x})")
                offset = end
        except (_RecordError, struct.error) as exc:
            remaining = None if chunk.lost is None else max(chunk.lost - read, 0)
            return messages, Damage(chunk.offset, f"a damaged chunk without a CRC ({exc}); the messages "
                                                  "before the damage were read", remaining)
        return messages, None

    def _message(self, record: bytes, where: int, topics: set[str] | None) -> SalvagedMessage | None:
        channel_id, _, log_time, _ = _message_header(record, 0, len(record))
        channel = self._channels.get(channel_id) or self._summary_channels.get(channel_id)
        if channel is None:
            self._report(Damage(where, f"a message on channel {channel_id}, which no Channel record defines", 1))
            return None
        topic, schema_id = channel
        if topics is not None and topic not in topics:
            return None
        msgtype = self._schemas.get(schema_id) or self._summary_schemas.get(schema_id, "")
        return SalvagedMessage(topic, msgtype, log_time, record[_MESSAGE_FIXED:])


_RECORD_NAMES = {OP_HEADER: "Header", OP_SCHEMA: "Schema", OP_CHANNEL: "Channel", OP_MESSAGE: "Message",
                 OP_CHUNK: "Chunk", OP_MESSAGE_INDEX: "Message Index", OP_ATTACHMENT: "Attachment",
                 OP_METADATA: "Metadata", OP_DATA_END: "Data End"}


def _string(buffer: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", buffer, offset)
    end = offset + 4 + length
    if end > len(buffer):
        raise _RecordError("a string runs past its record")
    try:
        return bytes(buffer[offset + 4 : end]).decode("utf-8"), end
    except UnicodeDecodeError:
        raise _RecordError("a string is not UTF-8") from None


def _chunk_header(data: bytes | mmap.mmap, start: int, end: int) -> tuple[int, int, int, int, str, tuple[int, int]]:
    """``(start time, end time, uncompressed size, crc, compression, (records start, end))`` of the
    Chunk record whose content is ``data[start:end]``; ``_RecordError`` when it does not add up."""
    start_time, end_time, size, crc = struct.unpack_from("<QQQI", data, start)
    (name_length,) = struct.unpack_from("<I", data, start + _CHUNK_FIXED)
    if name_length > 16:
        raise _RecordError("its compression name is not one")
    position = start + _CHUNK_FIXED + 4 + name_length
    if position + 8 > end:
        raise _RecordError("its header runs past the record")
    compression = bytes(data[start + _CHUNK_FIXED + 4 : position]).decode("ascii", "replace")
    (length,) = struct.unpack_from("<Q", data, position)
    if position + 8 + length != end:
        raise _RecordError(f"its records ({length} bytes) do not fill the record ({end - start} bytes)")
    if compression not in COMPRESSIONS:
        raise _RecordError(f"unknown compression {compression!r}")
    if start_time > end_time:
        raise _RecordError("its start time is after its end time")
    if size > MAX_CHUNK_BYTES or (compression == "" and size != length):
        raise _RecordError(f"it declares {size} uncompressed bytes for {length} stored")
    return start_time, end_time, size, crc, compression, (position + 8, end)


def _decompress(records: memoryview, compression: str, size: int) -> bytes | memoryview:
    """The chunk's records, never more than ``size`` bytes; ``_RecordError`` when they do not fill it."""
    if compression == "":
        raw: bytes | memoryview = records
    elif compression == "lz4":
        raw = lz4.frame.LZ4FrameDecompressor().decompress(records, max_length=size + 1)
    else:
        raw = zstd.ZstdDecompressor().decompress(records, max_length=size + 1)
    if len(raw) != size:
        raise _RecordError(f"it decompresses to {'more than ' if len(raw) > size else ''}{len(raw)} bytes, "
                           f"not {size}")
    return raw


def _message_header(data: bytes | mmap.mmap, start: int, end: int) -> tuple[int, int, int, int]:
    if end - start < _MESSAGE_FIXED:
        raise _RecordError("a Message record shorter than its header")
    return struct.unpack_from("<HIQQ", data, start)


def _message_index(data: bytes | mmap.mmap, start: int, end: int) -> tuple[int, int]:
    channel_id, length = struct.unpack_from("<HI", data, start)
    if length % 16 or 6 + length != end - start:
        raise _RecordError("its entries do not fill it")
    return channel_id, length // 16


def _statistics(body: bytes) -> dict[int, int]:
    # message_count u64, schema_count u16, channel_count u32, attachment, metadata and chunk
    # counts u32, start and end times u64, then map<u16 channel, u64 count> with a u32 byte length.
    counts_at = 8 + 2 + 4 * 4 + 16
    (length,) = struct.unpack_from("<I", body, counts_at)
    start = counts_at + 4
    if length % 10 or start + length > len(body):
        raise _RecordError("its channel counts do not fit")
    return dict(struct.iter_unpack("<HQ", body[start : start + length]))


# ---------------------------------------------------------------------------------- writing
def write_chunk_crcs(path: str | Path) -> int:
    """Store the CRC-32 of each chunk's uncompressed records in its ``uncompressed_crc`` field, and
    that of the summary section in the footer's ``summary_crc``.

    ``rosbags`` writes 0 there ("not computed"), so a flipped bit in a recorded image would go
    unnoticed; readers (rosbags, the mcap tools, ``McapFile``) check the CRC when it is not 0.
    Patches the file in place (4 bytes per chunk); returns the number of chunks. The file must be
    an intact MCAP file (just written).
    """
    path = Path(path)
    patched = 0
    with path.open("r+b") as handle, mmap.mmap(handle.fileno(), 0) as data:
        if data[: len(MAGIC)] != MAGIC:
            raise McapSalvageError(f"{path} is not an MCAP file (bad magic bytes)")
        offset = len(MAGIC)
        while offset + 9 <= len(data):
            opcode = data[offset]
            (length,) = struct.unpack_from("<Q", data, offset + 1)
            end = offset + 9 + length
            if opcode == OP_DATA_END or end > len(data):
                break
            if opcode == OP_CHUNK:
                _, _, size, crc, compression, (first, last) = _chunk_header(data, offset + 9, end)
                if not crc:
                    raw = _decompress(memoryview(data[first:last]), compression, size)
                    struct.pack_into("<I", data, offset + 9 + 24, zlib.crc32(raw))
                    patched += 1
            offset = end
        _write_summary_crc(data)
        data.flush()
    return patched


def _write_summary_crc(data: mmap.mmap) -> None:
    """The footer's ``summary_crc``: CRC-32 from the summary's start to the footer's second field."""
    footer = len(data) - len(MAGIC) - 9 - _FOOTER_LENGTH
    if footer < len(MAGIC) or data[footer] != OP_FOOTER:
        return
    summary_start, _, crc = struct.unpack_from("<QQI", data, footer + 9)
    if summary_start and not crc and len(MAGIC) < summary_start < footer:
        struct.pack_into("<I", data, footer + 9 + 16, zlib.crc32(data[summary_start : footer + 9 + 16]))
