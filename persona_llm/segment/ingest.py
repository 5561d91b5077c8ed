"""Read customer texts from CSV / TSV / JSONL / JSON / Parquet files (gzip too) into a texts frame.

Every value is read as a string (ids keep their leading zeros) and a missing value (None) stays
distinct from an empty string. File-level problems raise `InputError` with one line that names the
file (and the column); a bad row never raises: it goes to the rejects frame with its reason, so
`rows_read == len(texts) + len(rejects)` always holds.

Binary data, one rule wherever it is: a file that is not UTF-8 text (or is a ZIP, or UTF-16) is refused,
and called binary when it holds NUL bytes; in a text file, a row holding a NUL byte is rejected, at any
offset. Only a NUL in a CSV header refuses a text file, as the header names every column.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from persona_llm.errors import ConfigError, InputError
from persona_llm.schema.columns import ColumnMap
from persona_llm.schema.frames import INTERNAL_COLUMNS, REJECT_COLUMNS, SOURCE_ROW, TEXT, TEXT_ID, USER_ID, make_rejects
from persona_llm.segment.base import BaseIngester, IngestResult

__all__ = ["FORMATS", "ColumnMap", "IngestResult", "TableIngester", "TextRow", "read_texts", "texts_from_frame"]

FORMATS = ("csv", "tsv", "jsonl", "json", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_FORMAT_ALIASES = {"ndjson": "jsonl", "pq": "parquet"}
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_NAMES_SHOWN = 30


# --------------------------------------------------------------------------- column mapping


# --------------------------------------------------------------------------- row validation


def _source_column(info: ValidationInfo) -> str:
    """The note " (column 'author')" when the validation context names the input column of this field."""
    column = ((info.context or {}).get("columns") or {}).get(info.field_name)
    return f" (column {column!r})" if column else ""


def _required(what: str) -> Any:
    def check(value: Any, info: ValidationInfo) -> str:
        if value is None:
            raise PydanticCustomError("missing_value", f"missing {what}")
        if isinstance(value, dict | list | tuple):
            # Stringified, {"nested": "1"} would become a user id that no one ever typed.
            kind = "object" if isinstance(value, dict) else "list"
            raise PydanticCustomError("nested_value", f"{what}{_source_column(info)} is a JSON {kind}, not a string")
        if not isinstance(value, str):
            value = str(value)
        if "\x00" in value:
            raise PydanticCustomError("nul_byte", f"{what}{_source_column(info)} holds a NUL byte (binary data?)")
        if not value.strip():
            raise PydanticCustomError("empty_value", f"empty {what}")
        return value

    return BeforeValidator(check)


class TextRow(BaseModel):
    """One input row: a non-empty user id, a non-empty text and a text id unique in the file.

    Validate with `context={"seen": {text_id: row}}` to catch duplicate ids; add
    `"columns": {field: source column}` to name the input column in the reasons.
    """

    model_config = ConfigDict(frozen=True)

    text_id: Annotated[str, _required("text id")]
    user_id: Annotated[str, _required("user id")]
    text: Annotated[str, _required("text")]
    source_row: int = Field(ge=1)

    @field_validator("text_id", "user_id")
    @classmethod
    def _strip_ids(cls, value: str) -> str:
        return value.strip()

    @field_validator("text_id")
    @classmethod
    def _unique(cls, value: str, info: ValidationInfo) -> str:
        seen = (info.context or {}).get("seen")
        if seen is not None and value in seen:
            raise PydanticCustomError("duplicate_id", f"duplicate text id {value!r} (first seen at row {seen[value]})")
        return value


# --------------------------------------------------------------------------- result


# --------------------------------------------------------------------------- helpers


def _one_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _names(columns: Sequence[str]) -> str:
    shown = [repr(c) for c in columns[:_MAX_NAMES_SHOWN]]
    if len(columns) > _MAX_NAMES_SHOWN:
        shown.append(f"... ({len(columns) - _MAX_NAMES_SHOWN} more)")
    return ", ".join(shown) if shown else "(none)"


def _decode(data: bytes, path: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError("UTF-16 text; re-save as UTF-8", path=path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start]
        nul = data.find(b"\x00")
        if nul >= 0:
            raise InputError(
                f"binary data, not text (NUL byte at offset {nul}, and byte 0x{bad:02x} at offset {exc.start} is "
                "not UTF-8); use CSV, TSV, JSONL, JSON or Parquet",
                path=path,
            ) from None
        raise InputError(
            f"not UTF-8 text (byte 0x{bad:02x} at offset {exc.start}, line {line}); re-save as UTF-8", path=path
        ) from None


def _sniff_format(data: bytes, path: str) -> str:
    if data.startswith(_PARQUET_MAGIC):
        return "parquet"
    if data.startswith(_ZIP_MAGIC):
        raise InputError("a ZIP archive (an Excel .xlsx file?), not CSV, JSONL or Parquet; export it as CSV", path=path)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError("UTF-16 text; re-save as UTF-8", path=path)
    head = data[:65536].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return "jsonl"
    if head.startswith(b"["):
        return "json"
    first_line = head.split(b"\n", 1)[0]
    if b"\t" in first_line and b"," not in first_line:
        return "tsv"
    return "csv"


def _normalise_format(fmt: str, path: str) -> str:
    name = fmt.strip().lower().lstrip(".")
    name = name.removesuffix(".gz").removesuffix(".gzip")
    name = _FORMAT_ALIASES.get(name, name)
    if name not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", path=path)
    return name


def _format_from_name(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".gzip"):
        suffixes = suffixes[:-1]
    return _EXTENSIONS.get(suffixes[-1]) if suffixes else None


# --------------------------------------------------------------------------- parsers
# Each returns (column names, rows of values, {row index: problem}). A value is a str or None, or, from
# JSON, Parquet and DataFrames, a nested dict or list: the user id, text and text id reject those, and
# attributes keep them as JSON (`_build`).


@dataclass(frozen=True)
class RowProblem:
    """Why a row the parser could not read (or read only in part) is rejected."""

    reason: str
    #: The row as written when no field could be read from it (a malformed JSON line): it goes to the
    #: rejects' text column, so the rejects hold every input row.
    raw: str | None = None


Parsed = tuple[list[str], list[list[Any]], dict[int, RowProblem]]


def _header_names(raw: Sequence[Any], path: str) -> list[str]:
    names: list[str] = []
    for i, name in enumerate(raw):
        clean = str(name).strip() if name is not None else ""
        names.append(clean or f"column_{i + 1}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"duplicate column name(s) in the header: {_names(dupes)}", path=path)
    return names


def _parse_csv(text: str, path: str, delimiter: str | None, max_rows: int | None) -> Parsed:
    if delimiter is None:
        first = text.split("\n", 1)[0]
        counts = {d: first.count(d) for d in (",", "\t", ";", "|")}
        delimiter = "," if counts[","] else max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","
    if csv.field_size_limit() < (1 << 30):
        csv.field_size_limit(1 << 30)  # long texts (a 160k-character post) are fine
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    record_start = 1
    try:
        header_row = next(reader, None)
        if header_row is None:
            raise InputError("no data rows (the file is blank)", path=path)
        if any("\x00" in name for name in header_row):
            raise InputError(
                "NUL bytes in the header line: UTF-16 text without a byte-order mark, or binary data? "
                "re-save as UTF-8",
                path=path,
            )
        header = _header_names(header_row, path)
        width = len(header)
        rows: list[list[Any]] = []
        problems: dict[int, RowProblem] = {}
        record_start = reader.line_num + 1
        for row in reader:
            if not row:  # blank line
                record_start = reader.line_num + 1
                continue
            if max_rows is not None and len(rows) >= max_rows:
                break
            if len(row) > width:
                extra = row[width:]
                if any(field.strip() for field in extra):
                    problems[len(rows)] = RowProblem(
                        f"row has {len(row)} fields but the header has {width} "
                        f"(an unquoted {delimiter!r} in a field?)"
                    )
                row = row[:width]
            values: list[str | None] = list(row)
            if len(values) < width:
                values.extend([None] * (width - len(values)))  # fields missing at the end of the row
            rows.append(values)
            record_start = reader.line_num + 1
    except csv.Error as exc:
        msg = _one_line(exc)
        if "unexpected end of data" in msg:
            msg = "a quoted field is never closed"
        elif "expected after" in msg:
            msg += ' (a quote inside a quoted field must be doubled: "")'
        raise InputError(f"malformed CSV in the record starting at line {record_start}: {msg}", path=path) from None
    return header, rows, problems


def _json_value(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _nested_or_string(value: Any) -> Any:
    """A nested dict or list as is (the row check needs to see it), anything else as a string or None."""
    return value if isinstance(value, dict | list) else _json_value(value)


def _rows_from_objects(
    objects: Iterable[tuple[int, Any | RowProblem, str]], path: str, what: str, max_rows: int | None
) -> Parsed:
    """Rows from (line or item number, parsed value or RowProblem, the text as written).

    A value that is not a JSON object is a bad row (rejected with its reason); a file in which no value
    is an object is not JSON Lines at all, and raises with the first problem.
    """
    columns: dict[str, None] = {}
    records: list[dict[str, Any]] = []
    problems: dict[int, RowProblem] = {}
    for where, obj, raw in objects:
        if max_rows is not None and len(records) >= max_rows:
            break
        if not isinstance(obj, dict):
            if not isinstance(obj, RowProblem):
                obj = RowProblem(f"{what} {where} is a JSON {type(obj).__name__}, not an object", raw=raw)
            problems[len(records)] = obj
            records.append({})
            continue
        for key in obj:
            columns.setdefault(str(key), None)
        records.append(obj)
    if problems and len(problems) == len(records):
        raise InputError(problems[0].reason, path=path)
    header = _header_names(list(columns), path)
    rows = [[_nested_or_string(rec.get(name)) for name in header] for rec in records]
    return header, rows, problems


def _parse_jsonl(text: str, path: str, max_rows: int | None) -> Parsed:
    def objects() -> Iterable[tuple[int, Any | RowProblem, str]]:
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            line = line.removesuffix("\r")
            try:
                # numbers keep their exact spelling: ids like 007 or 1e3 stay as written
                yield lineno, json.loads(line, parse_int=str, parse_float=str, parse_constant=str), line
            except json.JSONDecodeError as exc:
                yield lineno, RowProblem(f"malformed JSON on line {lineno}: {exc.msg} (column {exc.colno})", raw=line), line

    return _rows_from_objects(objects(), path, "line", max_rows)


def _parse_json(text: str, path: str, max_rows: int | None) -> Parsed:
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return _parse_jsonl(text, path, max_rows)
    try:
        doc = json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON on line {exc.lineno}: {exc.msg} (column {exc.colno})", path=path) from None
    if not isinstance(doc, list):
        raise InputError("a JSON file must hold an array of objects (or use JSON Lines: one object per line)", path=path)
    items = ((n, item, json.dumps(item, ensure_ascii=False)) for n, item in enumerate(doc, 1))
    return _rows_from_objects(items, path, "item", max_rows)


def _parse_parquet(data: bytes, path: str, max_rows: int | None) -> Parsed:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"not a readable Parquet file: {_one_line(exc)}", path=path) from None
    if max_rows is not None:
        table = table.slice(0, max_rows)
    header = _header_names(table.column_names, path)
    columns: list[list[Any]] = []
    for column in table.columns:
        try:
            values = pc.cast(column, pa.string()).to_pylist()
        except (pa.ArrowException, TypeError):
            values = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else _nested_or_string(v) for v in column.to_pylist()
            ]
        columns.append(values)
    rows = [list(r) for r in zip(*columns, strict=True)] if columns else []
    return header, rows, {}


# --------------------------------------------------------------------------- building the frame


def _resolve_columns(columns: ColumnMap, header: Sequence[str], path: str) -> tuple[list[str], list[str]]:
    """(required source columns [user, text, id?], attribute columns); InputError if any is missing."""
    present = set(header)
    wanted = [columns.user_column, columns.text_column]
    if columns.id_column:
        wanted.append(columns.id_column)
    if columns.attribute_columns is not None:
        wanted.extend(columns.attribute_columns)
    for name in wanted:
        if name not in present:
            hint = next((h for h in header if h.lower() == name.lower()), None)
            did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
            raise InputError(
                f"no such column{did_you_mean}; the file has columns: {_names(list(header))}", path=path, column=name
            )
    used = {columns.user_column, columns.text_column, columns.id_column}
    if columns.attribute_columns is None:
        attributes = [h for h in header if h not in used]
    else:
        attributes = list(columns.attribute_columns)
    for name in attributes:
        if name in INTERNAL_COLUMNS:
            raise InputError(
                f"attribute column clashes with a reserved name ({', '.join(sorted(INTERNAL_COLUMNS))}); "
                "rename it or list the attribute columns to keep",
                path=path,
                column=name,
            )
    return wanted, attributes


def _build(
    header: list[str],
    rows: list[list[Any]],
    problems: Mapping[int, RowProblem],
    columns: ColumnMap,
    path: str,
    sha256: str,
    fmt: str,
) -> IngestResult:
    if not rows:
        raise InputError("no data rows", path=path)
    _, attributes = _resolve_columns(columns, header, path)
    index = {name: i for i, name in enumerate(header)}
    ui, ti = index[columns.user_column], index[columns.text_column]
    ii = index[columns.id_column] if columns.id_column else None
    ai = [index[name] for name in attributes]

    seen: dict[str, int] = {}
    source_columns = {USER_ID: columns.user_column, TEXT: columns.text_column, TEXT_ID: columns.id_column}
    kept: list[tuple[TextRow, list[str | None]]] = []
    rejected: list[tuple[str, str, int, str | None, str | None, str | None]] = []  # field, reason, row, ...
    for pos, values in enumerate(rows):
        source_row = pos + 1
        raw_id = values[ii] if ii is not None else f"r{source_row}"
        raw_user, raw_text = values[ui], values[ti]
        # as read, for the rejects (a nested value in JSON)
        read_user, read_id, read_text = _json_value(raw_user), _json_value(raw_id), _json_value(raw_text)
        problem = problems.get(pos)
        if problem is not None:
            text_as_written = read_text if problem.raw is None else problem.raw
            rejected.append(("", problem.reason, source_row, read_user, read_id, text_as_written))
            continue
        try:
            row = TextRow.model_validate(
                {"text_id": raw_id, "user_id": raw_user, "text": raw_text, "source_row": source_row},
                context={"seen": seen, "columns": source_columns},
            )
        except ValidationError as exc:
            errors = exc.errors()
            field = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else ""
            reason = "; ".join(str(e["msg"]) for e in errors)
            rejected.append((field, reason, source_row, read_user, read_id, read_text))
            continue
        attribute_values = [_json_value(values[i]) for i in ai]
        with_nul = next((name for name, v in zip(attributes, attribute_values, strict=True) if v and "\x00" in v), None)
        if with_nul is not None:
            reason = f"attribute (column {with_nul!r}) holds a NUL byte (binary data?)"
            rejected.append((with_nul, reason, source_row, read_user, read_id, read_text))
            continue
        seen[row.text_id] = source_row
        kept.append((row, attribute_values))

    data: dict[str, Any] = {
        TEXT_ID: [r.text_id for r, _ in kept],
        USER_ID: [r.user_id for r, _ in kept],
        TEXT: [r.text for r, _ in kept],
        SOURCE_ROW: pd.array([r.source_row for r, _ in kept], dtype="int64"),
    }
    for j, name in enumerate(attributes):
        data[name] = [attrs[j] for _, attrs in kept]
    texts = pd.DataFrame(data)

    parts = []
    for field in dict.fromkeys(r[0] for r in rejected):
        group = [r for r in rejected if r[0] == field]
        frame = pd.DataFrame(
            {
                SOURCE_ROW: [r[2] for r in group],
                USER_ID: [r[3] for r in group],
                TEXT_ID: [r[4] for r in group],
                TEXT: [r[5] for r in group],
            }
        )
        parts.append(make_rejects(frame, stage="ingest", reason=[r[1] for r in group], field=field))
    if parts:
        rejects = pd.concat(parts, ignore_index=True).sort_values(SOURCE_ROW, kind="stable").reset_index(drop=True)
    else:
        rejects = pd.DataFrame({c: pd.Series(dtype="object") for c in REJECT_COLUMNS})
    return IngestResult(texts=texts, rejects=rejects, rows_read=len(rows), file_sha256=sha256, format=fmt)


# --------------------------------------------------------------------------- public API


def read_texts(
    path: str | Path,
    columns: ColumnMap,
    *,
    format: str | None = None,
    max_rows: int | None = None,
) -> IngestResult:
    """Read a CSV / TSV / JSONL / JSON / Parquet file (optionally gzip-compressed) into a texts frame.

    The format comes from `format`, else the file extension, else the first bytes of the file.
    `max_rows` stops after that many data rows (the hash still covers the whole file).
    """
    p = Path(path)
    where = str(path)
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"max_rows must be >= 1, not {max_rows}")
    if not p.exists():
        raise InputError("file not found", path=where)
    if p.is_dir():
        raise InputError("is a directory, not a file", path=where)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file: {_one_line(exc.strerror or exc)}", path=where) from None
    sha256 = hashlib.sha256(raw).hexdigest()
    if not raw:
        raise InputError("empty file (0 bytes), no data rows", path=where)

    compressed = raw.startswith(_GZIP_MAGIC)
    data = raw
    if compressed:
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"corrupt gzip file: {_one_line(exc)}", path=where) from None
        if not data:
            raise InputError("empty file (0 bytes after gunzip), no data rows", path=where)

    # an explicit format wins over the extension, which wins over the first bytes
    fmt = _normalise_format(format, where) if format is not None else (_format_from_name(p) or _sniff_format(data, where))
    if fmt == "parquet":
        if not data.startswith(_PARQUET_MAGIC):
            raise InputError("not a Parquet file (no PAR1 header)", path=where)
        parsed = _parse_parquet(data, where, max_rows)
    else:
        if data.startswith(_PARQUET_MAGIC):
            raise InputError(f"a Parquet file, not {fmt.upper()}; name it .parquet or pass format='parquet'", path=where)
        _sniff_format(data, where)  # a ZIP or UTF-16 file under a text extension
        text = _decode(data, where)
        if not text.strip():
            raise InputError("no data rows (the file is blank)", path=where)
        if fmt in ("csv", "tsv"):
            parsed = _parse_csv(text, where, "\t" if fmt == "tsv" else None, max_rows)
        elif fmt == "jsonl":
            parsed = _parse_jsonl(text, where, max_rows)
        else:
            parsed = _parse_json(text, where, max_rows)
    header, rows, problems = parsed
    return _build(header, rows, problems, columns, where, sha256, fmt + (".gz" if compressed else ""))


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):  # how pandas holds a list read from Parquet
        value = value.tolist()
    if isinstance(value, dict | list | tuple):
        return list(value) if isinstance(value, tuple) else value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # lists and arrays
        pass
    return _json_value(value)


def texts_from_frame(data: pd.DataFrame, columns: ColumnMap) -> IngestResult:
    """Like `read_texts` for an in-memory DataFrame (format "dataframe"; the hash covers its content)."""
    where = "<dataframe>"
    header = _header_names([str(c) for c in data.columns], where)
    rows = [[_cell(v) for v in values] for values in data.itertuples(index=False, name=None)]
    digest = hashlib.sha256()
    digest.update(json.dumps(header).encode())
    if len(data):
        digest.update(pd.util.hash_pandas_object(data.astype(str), index=False).to_numpy().tobytes())
    return _build(header, rows, {}, columns, where, digest.hexdigest(), "dataframe")


# --------------------------------------------------------------------------- stage object


class TableIngester(BaseIngester):
    """The default ingest stage: `read_texts` for files, `texts_from_frame` for DataFrames.

    Parameters
    ----------
    format:
        "csv", "tsv", "jsonl", "json" or "parquet" for every file read; None (default) takes it from
        the file extension, else from the first bytes of the file.
    """

    def __init__(self, format: str | None = None) -> None:
        self.format = format

    def read_file(self, path: str | Path, columns: ColumnMap, *, max_rows: int | None = None) -> IngestResult:
        return read_texts(path, columns, format=self.format, max_rows=max_rows)

    def read_frame(self, data: pd.DataFrame, columns: ColumnMap) -> IngestResult:
        return texts_from_frame(data, columns)
