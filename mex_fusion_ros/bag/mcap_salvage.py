"""Read what is left of a truncated MCAP file, record by record from the start.

A recorder that crashes or loses power leaves an MCAP file without its summary and footer (and a
bag directory without ``metadata.yaml``). ``rosbags`` reads MCAP through the summary at the end of
the file, so it refuses such a file. The records before the cut are intact, though: this module
walks them in file order (MCAP spec: magic, then ``opcode u8 | length u64 | content`` records;
messages either top-level or inside chunks, uncompressed, lz4 or zstd) and stops at the first
record that is incomplete or malformed, saying where and why.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lz4.frame

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

MAGIC = b"\x89MCAP0\r\n"
OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END, OP_FOOTER = 0x03, 0x04, 0x05, 0x06, 0x0F, 0x02


class McapSalvageError(ValueError):
    """Not an MCAP file at all (bad magic); the message names the file."""


@dataclass(frozen=True)
class SalvagedMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


@dataclass
class SalvageReport:
    """Where reading stopped: ``complete`` when the file ended properly (data end or footer)."""

    path: Path
    bytes_read: int = 0
    file_size: int = 0
    messages: int = 0
    complete: bool = False
    reason: str = ""


def _string(buffer: memoryview, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", buffer, offset)
    end = offset + 4 + length
    if end > len(buffer):
        raise ValueError("string runs past the record")
    return bytes(buffer[offset + 4 : end]).decode("utf-8"), end


class McapSalvager:
    """Iterate the intact messages of one MCAP file; ``report`` says how far it got."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.report = SalvageReport(self.path)
        self._schemas: dict[int, str] = {}
        self._channels: dict[int, tuple[str, int]] = {}

    def _records(
        self, buffer: memoryview, offset: int, end: int, in_chunk: bool
    ) -> Iterator[SalvagedMessage]:
        while offset < end:
            if end - offset < 9:
                raise ValueError(f"record header cut off at byte {offset}")
            opcode = buffer[offset]
            (length,) = struct.unpack_from("<Q", buffer, offset + 1)
            start, stop = offset + 9, offset + 9 + length
            if stop > end:
                raise ValueError(f"record (opcode 0x{opcode:02x}) at byte {offset} is cut off")
            body = buffer[start:stop]
            if opcode == OP_SCHEMA:
                (schema_id,) = struct.unpack_from("<H", body, 0)
                name, _ = _string(body, 2)
                self._schemas[schema_id] = name
            elif opcode == OP_CHANNEL:
                channel_id, schema_id = struct.unpack_from("<HH", body, 0)
                topic, _ = _string(body, 4)
                self._channels[channel_id] = (topic, schema_id)
            elif opcode == OP_MESSAGE:
                channel_id, _sequence, log_time, _publish_time = struct.unpack_from("<HIQQ", body, 0)
                if channel_id not in self._channels:
                    raise ValueError(f"message at byte {offset} refers to unknown channel {channel_id}")
                topic, schema_id = self._channels[channel_id]
                yield SalvagedMessage(topic, self._schemas.get(schema_id, ""), log_time, bytes(body[22:]))
            elif opcode == OP_CHUNK:
                _start_time, _end_time, uncompressed_size, _crc = struct.unpack_from("<QQQI", body, 0)
                compression, position = _string(body, 28)
                (size,) = struct.unpack_from("<Q", body, position)
                data = bytes(body[position + 8 : position + 8 + size])
                if compression == "":
                    raw = data
                elif compression == "lz4":
                    raw = lz4.frame.decompress(data)
                elif compression == "zstd":
                    raw = zstd.decompress(data)
                else:
                    raise ValueError(f"chunk at byte {offset} uses unsupported compression {compression!r}")
                if len(raw) != uncompressed_size:
                    raise ValueError(
                        f"chunk at byte {offset} decompresses to {len(raw)} bytes, not {uncompressed_size}"
                    )
                inner = memoryview(raw)
                yield from self._records(inner, 0, len(inner), in_chunk=True)
            elif opcode in (OP_DATA_END, OP_FOOTER) and not in_chunk:
                self.report.complete = True
                self.report.bytes_read = stop
                return
            offset = stop
            if not in_chunk:
                self.report.bytes_read = offset

    def messages(self) -> Iterator[SalvagedMessage]:
        """Every intact message in file order; stops quietly at the cut (see ``report``)."""
        data = self.path.read_bytes()
        self.report = SalvageReport(self.path, file_size=len(data))
        if not data.startswith(MAGIC):
            raise McapSalvageError(f"{self.path} is not an MCAP file (bad magic bytes)")
        buffer = memoryview(data)
        try:
            for message in self._records(buffer, len(MAGIC), len(buffer), in_chunk=False):
                self.report.messages += 1
                yield message
        except (ValueError, struct.error, RuntimeError, zstd.ZstdError) as exc:
            self.report.reason = str(exc)
            return
        if not self.report.complete:
            self.report.reason = f"file ends after {self.report.bytes_read} bytes without a footer"
