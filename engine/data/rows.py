"""Reading a dataset file (``.jsonl``, ``.json``, ``.csv`` or ``.parquet``) into rows, and rows into records.

Reading is strict by default: training stops at the first bad row, naming its file and line.
The readers also take an ``errors`` list; with one, a bad row adds its one-line message there
and is skipped, so ``tuner inspect`` can report every bad row and still count the good ones.

``pyarrow`` is imported only when a Parquet file is read: it takes long to import, and most
datasets are local JSONL.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

from engine.data.records import Features, Record, parse_rows
from engine.errors import DataError, first_line
from engine.files import not_a_regular_file

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def _reject(message: str, errors: list[str] | None) -> None:
    """Raise ``message`` when reading strictly; otherwise note it so the row can be skipped."""
    if errors is None:
        raise DataError(message) from None
    errors.append(message)


def _not_utf8(path: Path, line: int, byte: int) -> str:
    return f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8"


def _open(path: Path):
    """The file for reading, if it is a regular one: a FIFO would block ``open`` for ever and
    ``/dev/zero`` would fill the memory, so they are refused before opening."""
    if problem := not_a_regular_file(path):
        raise DataError(f"{path}: cannot read: {problem}")
    try:
        return open(path, "rb")
    except OSError as e:  # no permission, ...
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _lone_surrogate(row: Any) -> str | None:
    """The first text in a JSON row holding half of a surrogate pair (``"\\ud800"`` alone), which
    is no character and no tokenizer takes; None when there is none."""
    texts = [row]
    while texts:
        item = texts.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                return f"\\u{ord(item[e.start]):04x}"
        elif isinstance(item, dict):
            texts.extend(item.keys())
            texts.extend(item.values())
        elif isinstance(item, list):
            texts.extend(item)
    return None


def _surrogate_message(where: str, escape: str) -> str:
    return (f"{where}: the text holds {escape}, half of a UTF-16 surrogate pair with no other half, "
            "which is not a character; remove it or write the whole character")


def _read_text(path: Path) -> str:
    """The file as text, without a byte-order mark; a DataError names the line of a bad byte."""
    with _open(path) as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(_not_utf8(path, data.count(b"\n", 0, e.start) + 1, data[e.start])) from None


def _jsonl_rows(path: Path, errors: list[str] | None) -> Iterator[tuple[Any, str]]:
    with _open(path) as f:
        for n, raw in enumerate(f, 1):
            try:  # line by line, so that one bad byte costs one row
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                _reject(_not_utf8(path, n, raw[e.start]), errors)
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                _reject(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})", errors)
                continue
            except RecursionError:
                _reject(f"{path}:{n}: JSON nested too deeply to read", errors)
                continue
            if "\\u" in line and (escape := _lone_surrogate(row)):  # only escapes can make one
                _reject(_surrogate_message(f"{path}:{n}", escape), errors)
                continue
            yield row, f"{path}:{n}"


def _json_rows(path: Path, errors: list[str] | None) -> Iterator[tuple[Any, str]]:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to read") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: a .json dataset must hold a list of records")
    escapes = "\\u" in text  # only a \u escape can write a lone surrogate
    for i, row in enumerate(data):
        if escapes and (escape := _lone_surrogate(row)):
            _reject(_surrogate_message(f"{path}#{i}", escape), errors)
            continue
        yield row, f"{path}#{i}"


def _csv_rows(path: Path, errors: list[str] | None) -> Iterator[tuple[Any, str]]:
    csv.field_size_limit(2**31 - 1)  # a long document is one field; the default stops at 128 KiB
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    try:
        rows = [(row, reader.line_num) for row in reader]
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    for row, n in rows:
        yield row, f"{path}:{n}"


def _parquet_rows(path: Path, errors: list[str] | None) -> Iterator[tuple[Any, str]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read as Parquet ({first_line(e)})") from None
    for i, row in enumerate(rows):
        yield row, f"{path}#{i}"


READERS = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}


def read_rows(path: Path, errors: list[str] | None = None) -> Iterator[tuple[Any, str]]:
    """Yield (row, origin) from a JSONL, JSON, CSV or Parquet file (see ``errors`` above)."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type (use {', '.join(FILE_SUFFIXES)})")
    return reader(path, errors)


def read_records(path: Path, features: Features, errors: list[str] | None = None) -> list[Record]:
    """The file's rows as records; a bad row raises, or is noted in ``errors`` and skipped."""
    return parse_rows(read_rows(path, errors), features, errors)

