"""Tests for persona_llm.segment.ingest: formats, column mapping, file-level errors and row rejects."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from persona_llm.errors import ConfigError, InputError
from persona_llm.schema.frames import REJECT_COLUMNS
from persona_llm.segment.ingest import ColumnMap, read_texts, texts_from_frame

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

RECORDS = [
    {"id": "001", "author": "ana", "message": "The checkout page keeps timing out on my phone.", "tier": "gold", "age": "34"},
    {"id": "002", "author": "ben", "message": "Delivery was quick, the box was a bit damaged though.", "tier": "", "age": "51"},
    {"id": "003", "author": "ana", "message": "I'd pay more for a version without ads.", "tier": "gold", "age": "34"},
]
COLS = ColumnMap(user_column="author", text_column="message", id_column="id")


def write_csv(path: Path, records: list[dict[str, str]], sep: str = ",") -> Path:
    pd.DataFrame(records).to_csv(path, index=False, sep=sep)
    return path


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def gzip_file(src: Path, dst: Path) -> Path:
    dst.write_bytes(gzip.compress(src.read_bytes()))
    return dst


def one_line_error(exc: pytest.ExceptionInfo[InputError], path: Path | str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert "Traceback" not in msg
    assert str(path) in msg
    return msg


# --------------------------------------------------------------------------- formats


def make_all_formats(tmp_path: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    files["csv"] = write_csv(tmp_path / "t.csv", RECORDS)
    files["csv.gz"] = gzip_file(files["csv"], tmp_path / "t.csv.gz")
    files["tsv"] = write_csv(tmp_path / "t.tsv", RECORDS, sep="\t")
    files["jsonl"] = write_jsonl(tmp_path / "t.jsonl", RECORDS)  # type: ignore[arg-type]
    files["jsonl.gz"] = gzip_file(files["jsonl"], tmp_path / "t.jsonl.gz")
    files["ndjson"] = write_jsonl(tmp_path / "t.ndjson", RECORDS)  # type: ignore[arg-type]
    (tmp_path / "t.json").write_text(json.dumps(RECORDS), encoding="utf-8")
    files["json"] = tmp_path / "t.json"
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "t.parquet")
    files["parquet"] = tmp_path / "t.parquet"
    return files


@pytest.mark.parametrize("kind", ["csv", "csv.gz", "tsv", "jsonl", "jsonl.gz", "ndjson", "json", "parquet"])
def test_every_format_gives_the_same_frame(tmp_path: Path, kind: str) -> None:
    path = make_all_formats(tmp_path)[kind]
    result = read_texts(path, COLS)
    t = result.texts
    assert list(t.columns) == ["text_id", "user_id", "text", "source_row", "tier", "age"]
    assert t["text_id"].tolist() == ["001", "002", "003"]  # leading zeros kept: read as strings
    assert t["user_id"].tolist() == ["ana", "ben", "ana"]
    assert t["text"].tolist() == [r["message"] for r in RECORDS]
    assert t["source_row"].tolist() == [1, 2, 3]
    assert t["age"].tolist() == ["34", "51", "34"]
    assert result.rows_read == 3 and result.rejects.empty
    assert result.format == {"ndjson": "jsonl"}.get(kind, kind)
    assert result.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_format_is_sniffed_without_a_known_extension(tmp_path: Path) -> None:
    files = make_all_formats(tmp_path)
    for kind, expected in [("csv.gz", "csv.gz"), ("parquet", "parquet"), ("jsonl", "jsonl"), ("tsv", "tsv")]:
        blob = tmp_path / f"upload-{kind.replace('.', '-')}.dat"
        blob.write_bytes(files[kind].read_bytes())
        result = read_texts(blob, COLS)
        assert result.format == expected
        assert result.texts["text_id"].tolist() == ["001", "002", "003"]


def test_explicit_format_wins_over_extension(tmp_path: Path) -> None:
    path = tmp_path / "export.txt"
    write_jsonl(path, RECORDS)  # type: ignore[arg-type]
    assert read_texts(path, COLS, format="jsonl").format == "jsonl"
    assert read_texts(path, COLS, format="NDJSON").texts.shape[0] == 3


def test_semicolon_csv_is_understood(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "eu.csv", RECORDS, sep=";")
    assert read_texts(path, COLS).texts["user_id"].tolist() == ["ana", "ben", "ana"]


def test_empty_string_and_missing_value_stay_distinct(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    write_jsonl(
        path,
        [
            {"author": "a", "message": "first text here", "note": ""},
            {"author": "b", "message": "second text here"},
            {"author": "c", "message": "third text here", "note": None},
        ],
    )
    note = read_texts(path, ColumnMap(user_column="author", text_column="message")).texts["note"]
    assert note.iloc[0] == ""
    assert pd.isna(note.iloc[1]) and pd.isna(note.iloc[2])


def test_json_numbers_keep_their_spelling(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text('{"uid": 0012, "body": "hello there", "score": 4.50, "vip": true}\n'.replace("0012", "12"))
    t = read_texts(path, ColumnMap(user_column="uid", text_column="body")).texts
    assert t["user_id"].tolist() == ["12"]
    assert t["score"].tolist() == ["4.50"]
    assert t["vip"].tolist() == ["true"]


def test_csv_with_multiline_quoted_text_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    body = 'user,text\r\nu1,"line one\r\nline two, with a comma"\r\nu2,plain\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    t = read_texts(path, ColumnMap(user_column="user", text_column="text")).texts
    assert t["text"].tolist() == ["line one\r\nline two, with a comma", "plain"]
    assert t["text_id"].tolist() == ["r1", "r2"]
    assert t["source_row"].tolist() == [1, 2]


def test_max_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", RECORDS)
    result = read_texts(path, COLS, max_rows=2)
    assert result.rows_read == 2 and result.texts["text_id"].tolist() == ["001", "002"]


# --------------------------------------------------------------------------- column mapping


def test_generated_ids_and_all_other_columns_as_attributes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", RECORDS)
    t = read_texts(path, ColumnMap(user_column="author", text_column="message")).texts
    assert t["text_id"].tolist() == ["r1", "r2", "r3"]
    assert list(t.columns)[4:] == ["id", "tier", "age"]


def test_explicit_and_empty_attribute_lists(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", RECORDS)
    only_age = read_texts(path, ColumnMap(user_column="author", text_column="message", attribute_columns=["age"]))
    assert list(only_age.texts.columns) == ["text_id", "user_id", "text", "source_row", "age"]
    none = read_texts(path, ColumnMap(user_column="author", text_column="message", attribute_columns=[]))
    assert list(none.texts.columns) == ["text_id", "user_id", "text", "source_row"]
    from_flag = ColumnMap(user_column=" author ", text_column="message", attribute_columns="age, tier")  # type: ignore[arg-type]
    assert from_flag.user_column == "author" and from_flag.attribute_columns == ["age", "tier"]


def test_column_map_from_toml_fixture() -> None:
    cols = ColumnMap.from_toml(FIXTURES / "columns.toml")
    assert cols == ColumnMap(
        user_column="customer", text_column="body", id_column="review_no", attribute_columns=["plan", "country"]
    )
    result = read_texts(FIXTURES / "reviews.csv", cols)
    assert result.texts["text_id"].tolist() == ["007", "008", "009"]
    assert list(result.texts.columns) == ["text_id", "user_id", "text", "source_row", "plan", "country"]
    assert result.rejects["reason"].tolist() == ["empty text", "empty user id"]
    assert result.rejects["source_row"].tolist() == [4, 5]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[other]\nx = 1\n", "no [columns] table"),
        ('[columns]\nuser = "u"\ntext = "t"\nauthor = "a"\n', "unknown key(s) in [columns]: author"),
        ('[columns]\ntext = "t"\n', "needs user"),
        ("[columns\nuser = 1\n", "not valid TOML"),
        ('[columns]\nuser = ""\ntext = "t"\n', "user column name is empty"),
    ],
)
def test_column_map_toml_errors(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "persona.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        ColumnMap.from_toml(path)
    assert expected in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_column_map_toml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        ColumnMap.from_toml(tmp_path / "nope.toml")


# --------------------------------------------------------------------------- file-level errors


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.csv"
    with pytest.raises(InputError) as exc:
        read_texts(path, COLS)
    assert "file not found" in one_line_error(exc, path)


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("zero.csv", b"", "empty file (0 bytes)"),
        ("header.csv", b"id,author,message\n", "no data rows"),
        ("blank.csv", b"\n\n  \n", "no data rows"),
        ("blank.jsonl", b"\n\n", "no data rows"),
        ("latin1.csv", "id,author,message\n1,zoé,café au lait\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 22, line 2)"),
        ("utf16.csv", "id,author,message\n".encode("utf-16"), "UTF-16 text; re-save as UTF-8"),
        ("blob.csv", b"\x00\x01\x02\x03\x80\xff\x00", "binary data, not text (NUL byte at offset 0"),
        ("utf16le.csv", "id,author,message\n1,a,b\n".encode("utf-16-le"), "NUL bytes in the header line"),
        ("sheet.csv", b"PK\x03\x04\x14\x00\x06\x00rest-of-zip", "ZIP archive"),
        ("fake.parquet", b"id,author,message\n1,a,b\n", "not a Parquet file (no PAR1 header)"),
        # a file in which no line is a JSON object is not JSON Lines at all (one bad line is a reject)
        ("bad.jsonl", b'{"author": "b", "message": "oops"\n\n{"author": \n', "malformed JSON on line 1"),
        ("list.jsonl", b'[1, 2]\n"text"\n', "line 1 is a JSON list, not an object"),
        ("quote.csv", b'id,author,message\n1,a,"fine"\n2,b,"never closed\n3,c,x\n', "quoted field is never closed"),
        ("stray.csv", b'id,author,message\n1,a,"half"quoted\n', "record starting at line 2"),
        ("dupe.csv", b"id,author,author,message\n1,a,b,c\n", "duplicate column name(s) in the header: 'author'"),
        ("scalar.json", b'{"a": 1} garbage', "malformed JSON on line 1"),
    ],
)
def test_file_level_errors_are_one_clear_line(tmp_path: Path, name: str, payload: bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(InputError) as exc:
        read_texts(path, COLS)
    assert expected in one_line_error(exc, path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress(b"id,author,message\n1,a,b\n" * 50)[:30])
    with pytest.raises(InputError) as exc:
        read_texts(path, COLS)
    assert "corrupt gzip file" in one_line_error(exc, path)


def test_unknown_format(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", RECORDS)
    with pytest.raises(InputError) as exc:
        read_texts(path, COLS, format="xlsx")
    assert "unknown format 'xlsx'" in one_line_error(exc, path)


def test_missing_column_lists_the_columns_that_exist(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", RECORDS)
    with pytest.raises(InputError) as exc:
        read_texts(path, ColumnMap(user_column="author", text_column="Message"))
    msg = one_line_error(exc, path)
    assert "column 'Message'" in msg and "did you mean 'message'" in msg
    assert "'id', 'author', 'message', 'tier', 'age'" in msg
    assert exc.value.column == "Message"


def test_attribute_clashing_with_a_reserved_name(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", [{"who": "a", "body": "some words here", "text": "clash"}])
    with pytest.raises(InputError) as exc:
        read_texts(path, ColumnMap(user_column="who", text_column="body"))
    assert "column 'text'" in one_line_error(exc, path) and "reserved" in str(exc.value)
    # listing the attributes avoids it
    ok = read_texts(path, ColumnMap(user_column="who", text_column="body", attribute_columns=[]))
    assert ok.texts["text"].tolist() == ["some words here"]


def test_gzip_of_binary_is_still_rejected(tmp_path: Path) -> None:
    path = tmp_path / "blob.csv.gz"
    path.write_bytes(gzip.compress(bytes(range(256)) * 4))
    with pytest.raises(InputError) as exc:
        read_texts(path, COLS)
    assert "binary data" in one_line_error(exc, path)


# --------------------------------------------------------------------------- row rejects


def test_bad_rows_go_to_rejects_with_reasons(tmp_path: Path) -> None:
    path = tmp_path / "messy.jsonl"
    write_jsonl(
        path,
        [
            {"id": "a1", "author": "u1", "message": "A perfectly fine first message."},
            {"id": "a2", "author": "u2", "message": "   "},
            {"id": "a3", "author": None, "message": "Nobody wrote this, apparently."},
            {"id": "a1", "author": "u3", "message": "Same id as the first row."},
            {"id": "a5", "author": " ", "message": "Blank user."},
            {"id": "", "author": "u6", "message": "No id at all."},
            {"id": "a7", "message": "The author key is absent."},
            {"id": "a8", "author": "u8", "message": "Another fine message."},
        ],
    )
    result = read_texts(path, COLS)
    assert result.texts["text_id"].tolist() == ["a1", "a8"]
    rj = result.rejects
    assert list(rj.columns) == list(REJECT_COLUMNS)
    assert rj["source_row"].tolist() == [2, 3, 4, 5, 6, 7]
    assert rj["reason"].tolist() == [
        "empty text",
        "missing user id",
        "duplicate text id 'a1' (first seen at row 1)",
        "empty user id",
        "empty text id",
        "missing user id",
    ]
    assert rj["field"].tolist() == ["text", "user_id", "text_id", "user_id", "text_id", "user_id"]
    assert set(rj["stage"]) == {"ingest"}
    assert rj["text"].iloc[2] == "Same id as the first row."  # the row as read
    assert result.rows_read == len(result.texts) + len(result.rejects) == 8


def test_a_malformed_jsonl_line_is_rejected_and_the_other_lines_kept(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    broken = '{"id": "b2", "author": "u2", "message": "cut off here'
    path.write_text(
        '{"id": "b1", "author": "u1", "message": "The first line is fine."}\n'
        f"{broken}\n"
        "\n"  # a blank line is skipped, not a row: the reason still names the file's line number
        "[1, 2]\n"
        '{"id": "b4", "author": "u4", "message": "The last line is fine too."}\n',
        encoding="utf-8",
    )
    result = read_texts(path, COLS)
    assert result.texts["text_id"].tolist() == ["b1", "b4"]
    rj = result.rejects
    assert rj["source_row"].tolist() == [2, 3]
    assert rj["reason"].iloc[0].startswith("malformed JSON on line 2: Unterminated string")
    assert rj["reason"].iloc[1] == "line 4 is a JSON list, not an object"
    assert set(rj["stage"]) == {"ingest"} and set(rj["field"]) == {""}
    assert rj["text"].tolist() == [broken, "[1, 2]"]  # the line as written: nothing is lost
    assert result.rows_read == len(result.texts) + len(rj) == 4


def test_a_nested_json_value_as_user_id_text_or_id_is_rejected_naming_the_field(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "nested.jsonl",
        [
            {"id": "n1", "author": {"nested": "1"}, "message": "A user id that is an object."},
            {"id": "n2", "author": "u2", "message": ["a", "list", "as", "text"]},
            {"id": {"k": 3}, "author": "u3", "message": "An object as the text id."},
            {"id": "n4", "author": ["u4"], "message": "A list as the user id."},
            {"id": "n5", "author": "u5", "message": "Fine; a nested attribute stays JSON.", "tier": {"a": [1]}},
        ],
    )
    result = read_texts(path, COLS)
    assert result.texts["text_id"].tolist() == ["n5"]
    assert result.texts["tier"].tolist() == ['{"a":["1"]}']
    rj = result.rejects
    assert rj["field"].tolist() == ["user_id", "text", "text_id", "user_id"]
    assert rj["reason"].tolist() == [
        "user id (column 'author') is a JSON object, not a string",
        "text (column 'message') is a JSON list, not a string",
        "text id (column 'id') is a JSON object, not a string",
        "user id (column 'author') is a JSON list, not a string",
    ]
    assert rj["user_id"].iloc[0] == '{"nested":"1"}'  # the value as read, in JSON
    assert result.rows_read == 5


def test_nested_values_in_parquet_and_dataframes_are_rejected_too(tmp_path: Path) -> None:
    records = [
        {"author": {"nested": "1"}, "message": "Struct user id."},
        {"author": {"nested": "2"}, "message": "Another struct user id."},
    ]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "t.parquet")
    cols = ColumnMap(user_column="author", text_column="message")
    result = read_texts(tmp_path / "t.parquet", cols)
    assert result.texts.empty
    assert result.rejects["reason"].tolist() == ["user id (column 'author') is a JSON object, not a string"] * 2
    frame = pd.DataFrame({"author": ["a", "b"], "message": [["x", "y"], "fine text"]})
    result = texts_from_frame(frame, cols)
    assert result.texts["user_id"].tolist() == ["b"]
    assert result.rejects["reason"].tolist() == ["text (column 'message') is a JSON list, not a string"]


@pytest.mark.parametrize("padding", [0, 2 << 20], ids=["nul-near-the-start", "nul-after-2-mib"])
def test_a_nul_byte_rejects_its_row_wherever_it_is(tmp_path: Path, padding: int) -> None:
    # One rule at any offset: a NUL byte is never text, so its row is rejected; the file is still text.
    long_text = "x" * padding
    path = tmp_path / "nul.csv"
    path.write_bytes(
        b"id,author,message,tier\n"
        + f"1,a,{long_text} fine\n".encode()
        + b"2,b,bad \x00 byte,gold\n"
        + b"3,c,fine,go\x00ld\n"
        + b"4,d,also fine,gold\n"
    )
    result = read_texts(path, COLS)
    assert result.texts["text_id"].tolist() == ["1", "4"]
    rj = result.rejects
    assert rj["source_row"].tolist() == [2, 3]
    assert rj["field"].tolist() == ["text", "tier"]
    assert rj["reason"].tolist() == [
        "text (column 'message') holds a NUL byte (binary data?)",
        "attribute (column 'tier') holds a NUL byte (binary data?)",
    ]
    assert rj["text"].iloc[0] == "bad \x00 byte"  # kept as read


def test_csv_row_with_extra_fields_is_rejected_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text(
        "id,author,message\n1,u1,fine text\n2,u2,oops, an unquoted comma\n3,u3,short row gets none\n4,u4\n5,u5,ok,\n",
        encoding="utf-8",
    )
    result = read_texts(path, COLS)
    assert result.texts["text_id"].tolist() == ["1", "3", "5"]
    assert result.rejects["source_row"].tolist() == [2, 4]
    assert result.rejects["reason"].iloc[0].startswith("row has 4 fields but the header has 3")
    assert result.rejects["reason"].iloc[1] == "missing text"
    assert result.rows_read == 5


def test_ids_are_stripped_and_compared_after_stripping(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        [
            {"id": " x1", "author": " u1 ", "message": "first"},
            {"id": "x1 ", "author": "u2", "message": "second"},
        ],
    )
    result = read_texts(path, COLS)
    assert result.texts["user_id"].tolist() == ["u1"] and result.texts["text_id"].tolist() == ["x1"]
    assert result.rejects["reason"].tolist() == ["duplicate text id 'x1' (first seen at row 1)"]


def test_texts_from_frame() -> None:
    frame = pd.DataFrame(
        {"who": ["a", "b", None], "body": ["one text", "", "three"], "n": [1, 2, 3], "score": [0.5, None, 1.0]}
    )
    result = texts_from_frame(frame, ColumnMap(user_column="who", text_column="body"))
    assert result.format == "dataframe" and result.rows_read == 3
    assert result.texts["text"].tolist() == ["one text"]
    assert result.texts["n"].tolist() == ["1"]
    assert result.rejects["reason"].tolist() == ["empty text", "missing user id"]
    again = texts_from_frame(frame.copy(), ColumnMap(user_column="who", text_column="body"))
    assert again.file_sha256 == result.file_sha256
    changed = frame.copy()
    changed.loc[0, "body"] = "other"
    assert texts_from_frame(changed, ColumnMap(user_column="who", text_column="body")).file_sha256 != result.file_sha256


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_20newsgroups_file() -> None:
    path = SHARED / "20newsgroups" / "posts.csv.gz"
    if not path.exists():
        pytest.skip("shared 20newsgroups data not available")
    result = read_texts(path, ColumnMap(user_column="user_id", text_column="body", id_column="doc_id"), max_rows=2000)
    assert result.format == "csv.gz" and result.rows_read == 2000
    assert len(result.texts) + len(result.rejects) == 2000
    assert set(result.rejects["reason"]) <= {"empty text"}
    assert list(result.texts.columns)[4:] == ["split", "newsgroup", "subject"]
