"""``liveprofile import FILE``: CSV and NDJSON files (gzip too) into the buffer.

Contract
--------
* Formats: CSV (``.csv``, ``.tsv`` is tab-separated) through a mapping (:mod:`.mapping`: a preset
  or a file), and NDJSON (``.ndjson``, ``.jsonl``, ``.json``): one Segment event per line, as
  ``liveprofile replay``, or, with a mapping, one flat object of columns per line. Gzip is
  recognised by its magic bytes (whatever the suffix; ``.gz`` is dropped before looking at the
  format). The file is streamed: memory stays constant in the file's size (for orders, plus an 8-byte
  digest per order key, about 100 bytes each in Python, see :mod:`.mapping`).
* Every event goes through the collector's envelope checks
  (:func:`liveprofile.buffer.ingest.prepare`), appended in batches through
  :func:`liveprofile.buffer.writers.appends_writer` (Redis Streams or Kafka).
* A bad row never stops the import: it becomes a dead letter with stage ``import``, source
  ``import:FILE:LINE`` (the file's name and the row's first line) and its reason.
* NDJSON events without a ``messageId`` get one derived from their content, so a re-import
  makes the same events; CSV events get theirs from the mapping (:func:`.mapping.message_id`).
  Events keep their own ``receivedAt`` (NDJSON); the others are stamped with the import time.
* Request-level problems (an unreadable file, a bad mapping, a CSV without a mapping, a header
  without the mapping's identity columns) raise :class:`ImportError_` before anything is written.
* The result is a summary: ``rows``, ``events`` (made), ``accepted``, ``dead_letters``.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson
import redis

from liveprofile.admin.mapping import ImportMapping, Output, RowMapper
from liveprofile.buffer.ingest import lenient_loads, prepare
from liveprofile.buffer.writers import appends_writer
from liveprofile.settings import Settings
from liveprofile.store.connection import connect
from liveprofile.store.deadletter import Stage, dead_letter_fields
from liveprofile.store.keys import Keys
from operators.events import Reason, Rejected
from operators.timeutil import iso

__all__ = ["ImportError_", "import_file", "open_text", "file_format"]

_GZIP_MAGIC = b"\x1f\x8b"
csv.field_size_limit(1 << 20)


class ImportError_(Exception):  # noqa: N801 - not the builtin ImportError
    """A request-level problem: nothing was imported."""


def file_format(path: str) -> str:
    """``csv``, ``tsv`` or ``ndjson`` by the name (a ``.gz`` suffix is looked through).

    >>> file_format("orders_export.csv.gz"), file_format("events.jsonl"), file_format("x.TSV")
    ('csv', 'ndjson', 'tsv')
    """
    name = path.lower().removesuffix(".gz").removesuffix(".gzip")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith((".ndjson", ".jsonl", ".json")):
        return "ndjson"
    msg = f"cannot tell the format of {Path(path).name}: name it .csv, .tsv, .ndjson or .jsonl (optionally .gz)"
    raise ImportError_(msg)


def open_text(path: str) -> tuple[IO[bytes], IO[bytes]]:
    """(the raw file, the decompressed byte stream): gzip by magic bytes."""
    try:
        raw = Path(path).open("rb")  # noqa: SIM115 - closed by import_file
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror}"
        raise ImportError_(msg) from None
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head == _GZIP_MAGIC:
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw, raw


def _csv_rows(stream: IO[bytes], delimiter: str) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return [], iter(())
    except (csv.Error, OSError, EOFError) as exc:
        msg = f"cannot read the header: {exc}"
        raise ImportError_(msg) from None
    header = [h.strip() for h in header]

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        start = reader.line_num + 1
        for rec in reader:
            if any(c.strip() for c in rec):
                yield start, dict(zip(header, rec, strict=False))
            start = reader.line_num + 1

    return header, rows()


def _ndjson_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for n, line in enumerate(stream, 1):
        line = line.strip()
        if line:
            yield n, line


def _content_id(ev: Mapping[str, Any]) -> str:
    body = orjson.dumps({k: v for k, v in ev.items() if k not in ("receivedAt", "sentAt")}, option=orjson.OPT_SORT_KEYS)
    return "imp-" + hashlib.blake2b(body, digest_size=16).hexdigest()


class _Importer:
    """Batches outputs into prepared appends and writes them (see the module doc)."""

    def __init__(self, settings: Settings, client: redis.Redis, name: str, batch: int, keep_received: bool) -> None:
        self.settings, self.keys = settings, Keys.of(settings)
        self.append = appends_writer(settings, client)
        self.name, self.batch, self.keep_received = name, batch, keep_received
        self.stats = {"rows": 0, "events": 0, "accepted": 0, "dead_letters": 0}
        self.pending: list[Any] = []
        self.pending_events = 0

    def add(self, out: Output) -> None:
        source = f"import:{self.name}:{out.line}"
        if out.rejected is not None:
            rej = Rejected(out.rejected.reason, out.rejected.message, out.rejected.raw[: self.settings.limits.max_event_bytes])
            self.pending.append((self.keys.dead_letter, dead_letter_fields(rej, Stage.IMPORT, source)))
            self.stats["dead_letters"] += 1
        else:
            received = iso(int(time.time() * 1000))
            prep = prepare(
                out.events, keys=self.keys, shards=self.settings.shards, limits=self.settings.limits,
                received_at=received, source=source, stage=Stage.IMPORT, keep_received=self.keep_received,
            )  # fmt: skip
            self.pending.extend(prep.appends)
            self.stats["events"] += len(out.events)
            self.stats["accepted"] += prep.accepted
            self.stats["dead_letters"] += len(prep.rejected)
            self.pending_events += len(out.events)
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.append(self.pending)
        self.pending = []


def import_file(
    settings: Settings, path: str, mapping: ImportMapping | None, *, batch: int = 1000, progress: bool | None = None,
    client: redis.Redis | None = None,
) -> dict[str, int]:  # fmt: skip
    """Import one file (see the module doc); ``progress=None``: a bar when stderr is a terminal."""
    fmt = file_format(path)
    if fmt in ("csv", "tsv") and mapping is None:
        msg = "a CSV import needs a mapping: --preset NAME or --mapping FILE"
        raise ImportError_(msg)
    raw, stream = open_text(path)
    show = sys.stderr.isatty() if progress is None else progress
    total = Path(path).stat().st_size
    own = client is None
    r = client or connect(settings.redis_url, settings.redis_cluster)
    try:
        imp = _Importer(settings, r, Path(path).name, batch, keep_received=mapping is None)
        t0 = time.monotonic()
        last = [0.0]

        def tick(final: bool = False) -> None:
            now = time.monotonic()
            if show and (final or now - last[0] > 0.2):
                last[0] = now
                _progress(imp.stats, raw.tell(), total, t0)

        if fmt == "ndjson" and mapping is None:
            _import_events(imp, _ndjson_lines(stream), tick)
        else:
            mapper = RowMapper(mapping)  # type: ignore[arg-type]
            rows = _ndjson_rows(imp, stream) if fmt == "ndjson" else _checked_csv(stream, "\t" if fmt == "tsv" else ",", mapping)
            chunk: list[tuple[int, Mapping[str, Any]]] = []
            for n, row in rows:
                imp.stats["rows"] += 1
                chunk.append((n, row))
                if len(chunk) >= batch:
                    for out in mapper.feed(chunk):
                        imp.add(out)
                    chunk = []
                    tick()
            for out in [*mapper.feed(chunk), *mapper.finish()]:
                imp.add(out)
        imp.flush()
        tick(final=True)
        if show:
            print(file=sys.stderr)
        return imp.stats
    except (OSError, EOFError, gzip.BadGzipFile, csv.Error) as exc:
        msg = f"cannot read {path}: {exc}"
        raise ImportError_(msg) from None
    finally:
        raw.close()
        if own:
            r.close()


def _checked_csv(stream: IO[bytes], delimiter: str, mapping: ImportMapping | None) -> Iterator[tuple[int, dict[str, str]]]:
    header, rows = _csv_rows(stream, delimiter)
    assert mapping is not None
    need = mapping.identity_columns()
    if header and not need & set(header):
        msg = f"the header has none of the identity columns {sorted(need)} of mapping {mapping.id!r}"
        raise ImportError_(msg)
    return rows


def _ndjson_rows(imp: _Importer, stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Flat objects for a mapping; a line that is not an object is dead-lettered here."""
    for n, line in _ndjson_lines(stream):
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            doc = exc
        if isinstance(doc, dict):
            yield n, doc
            continue
        imp.stats["rows"] += 1
        reason = Reason.MALFORMED_JSON if isinstance(doc, Exception) else Reason.NOT_OBJECT
        imp.add(Output(n, rejected=Rejected(reason, f"line {n}: not a JSON object", line)))


def _import_events(imp: _Importer, lines: Iterator[tuple[int, bytes]], tick: Any) -> None:
    for n, line in lines:
        imp.stats["rows"] += 1
        try:
            ev = lenient_loads(line)
        except (ValueError, RecursionError) as exc:
            imp.add(Output(n, rejected=Rejected(Reason.MALFORMED_JSON, f"line {n}: invalid JSON: {exc}", line)))
            continue
        if isinstance(ev, dict) and not ev.get("messageId"):
            with contextlib.suppress(orjson.JSONEncodeError):  # prepare() dead-letters what cannot be serialized
                ev["messageId"] = _content_id(ev)
        imp.add(Output(n, [ev]))  # type: ignore[list-item]
        if imp.stats["rows"] % imp.batch == 0:
            tick()


def _progress(stats: dict[str, int], done: int, total: int, t0: float) -> None:
    rate = stats["rows"] / max(time.monotonic() - t0, 1e-9)
    frac = min(done / total, 1.0) if total else 1.0
    bar = "#" * int(frac * 30)
    print(
        f"\r[{bar:<30}] {frac:6.1%} {stats['rows']:>9} rows {stats['accepted']:>9} events "
        f"{stats['dead_letters']:>7} dead letters {rate:9.0f} rows/s",
        end="", file=sys.stderr, flush=True,
    )  # fmt: skip
