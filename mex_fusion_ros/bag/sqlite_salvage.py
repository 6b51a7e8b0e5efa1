"""Read every readable message of a rosbag2 sqlite3 storage file (``.db3``), row by row if need be.

A damaged database page (a bad sector, a copy cut short) makes sqlite raise ``DatabaseError`` in
the middle of a query, and ``rosbags`` stops there. Here the messages are read in batches by row
id; a batch that fails is read again one row at a time, so one damaged page costs the rows on it
only, and each lost row is counted. The ``topics`` table names the topics (without it nothing can
be named, and the file is refused). This also reads a bag whose ``metadata.yaml`` is broken.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from mex_fusion_ros.bag.mcap_salvage import Damage, SalvagedMessage

_BATCH = 128


class SqliteSalvageError(ValueError):
    """Not a readable rosbag2 sqlite3 file at all; the message names the file and why."""


class SqliteFile:
    """One ``.db3`` file opened read-only; ``topics`` maps topic ids to ``(name, type)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.damage: list[Damage] = []
        self.complete = True
        self._reported: set[tuple[int, str]] = set()
        cut = _cut_off(self.path)
        if cut:
            self.complete = False
            self._report(Damage(0, f"cut off: {cut}", unit="row"))
        try:
            # immutable: no locking, no journal recovery; the file is only read.
            self._connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
            rows = self._connection.execute("SELECT id, name, type FROM topics").fetchall()
        except sqlite3.Error as exc:
            state = f"truncated ({cut}) and " if cut else ""
            raise SqliteSalvageError(f"{self.path} is {state}not a readable rosbag2 sqlite3 file ({exc})") from exc
        self.topics: dict[int, tuple[str, str]] = {int(i): (str(name), str(kind)) for i, name, kind in rows}

    def __enter__(self) -> SqliteFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._connection.close()

    def _report(self, damage: Damage) -> None:
        if (damage.offset, damage.what) not in self._reported:
            self._reported.add((damage.offset, damage.what))
            self.damage.append(damage)

    def counts(self) -> Counter[str] | None:
        """Messages per topic name as the table states them (None when the table cannot be counted)."""
        try:
            rows = self._connection.execute("SELECT topic_id, count(*) FROM messages GROUP BY topic_id").fetchall()
        except sqlite3.Error:
            return None
        return Counter({self.topics.get(topic_id, (f"topic {topic_id}", ""))[0]: n for topic_id, n in rows})

    def _row_ids(self) -> list[int]:
        """Every row id, in storage order; past a damaged page of the table, ids up to the largest."""
        ids: list[int] = []
        try:
            for (row_id,) in self._connection.execute("SELECT id FROM messages ORDER BY id"):
                ids.append(row_id)
            return ids
        except sqlite3.Error as exc:
            last = ids[-1] if ids else 0
            self._report(Damage(last, f"the messages table is damaged after this row ({exc}); the rows after it "
                                      "are read one by one", unit="row"))
        try:
            (largest,) = self._connection.execute("SELECT max(id) FROM messages").fetchone()
        except sqlite3.Error:
            largest = None
        if largest is None:
            return ids
        return ids + list(range((ids[-1] if ids else 0) + 1, int(largest) + 1))

    def messages(self, topics: set[str] | None = None) -> Iterator[SalvagedMessage]:
        """Readable messages (of ``topics``) in row order; unreadable rows go to ``damage``."""
        wanted = {i for i, (name, _) in self.topics.items() if topics is None or name in topics}
        ids = self._row_ids()
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            for row in self._rows(batch):
                if row is None:
                    continue
                _, topic_id, timestamp, data = row
                if topic_id not in self.topics:
                    self._report(Damage(row[0], f"names topic id {topic_id}, which the topics table does not "
                                                "hold", 1, unit="row"))
                elif topic_id in wanted:
                    name, kind = self.topics[topic_id]
                    yield SalvagedMessage(name, kind, int(timestamp), bytes(data))

    def _rows(self, batch: list[int]) -> list[tuple | None]:
        query = "SELECT id, topic_id, timestamp, data FROM messages WHERE id IN ({})"
        try:
            rows = self._connection.execute(query.format(",".join("?" * len(batch))), batch).fetchall()
            by_id = {row[0]: row for row in rows}
            return [by_id.get(row_id) for row_id in batch]
        except sqlite3.Error:
            pass
        rows = []
        for row_id in batch:
            try:
                rows.append(self._connection.execute(query.format("?"), (row_id,)).fetchone())
            except sqlite3.Error as exc:
                self._report(Damage(row_id, f"on a damaged page ({exc})", 1, unit="row"))
                rows.append(None)
        return rows


def _cut_off(path: Path) -> str | None:
    """How a sqlite3 file is shorter than its header says (page size x page count), or None."""
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
            size = handle.seek(0, 2)
    except OSError:
        return None
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if pages and size < page_size * pages:
        return f"{size} of the {page_size * pages} bytes its header states"
    return None
