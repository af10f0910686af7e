"""decode_json: bytes in, a JSON value or a typed RecordError out."""

from __future__ import annotations

import pytest

from schemas.errors import ErrorKind, RecordError
from streams.codecs import decode_json, encode_json

LIMIT = 1024


def _error(value: bytes | None, max_bytes: int = LIMIT) -> RecordError:
    with pytest.raises(RecordError) as info:
        decode_json(value, max_bytes)
    return info.value


def test_decodes_utf8_json_object_with_chinese():
    assert decode_json('{"district":"市南区","n":1}'.encode(), LIMIT) == {
        "district": "市南区",
        "n": 1,
    }


@pytest.mark.parametrize("value", [b"", None])
def test_empty_value(value):
    assert _error(value).kind is ErrorKind.EMPTY


def test_oversize_is_refused_with_sizes_in_reason():
    value = b'{"a":"' + b"x" * LIMIT + b'"}'
    err = _error(value)
    assert err.kind is ErrorKind.OVERSIZE
    assert str(len(value)) in err.reason
    assert str(LIMIT) in err.reason


def test_size_limit_is_inclusive():
    value = b'{"a":"' + b"x" * (LIMIT - 8) + b'"}'
    assert len(value) == LIMIT
    assert decode_json(value, LIMIT) == {"a": "x" * (LIMIT - 8)}
    assert _error(value + b" ").kind is ErrorKind.OVERSIZE


def test_oversize_checked_before_decoding():
    # Too big and not UTF-8: the cheap size check wins.
    assert _error(b"\xff" * (LIMIT + 1)).kind is ErrorKind.OVERSIZE


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xfe{\x00}\x00",  # UTF-16 LE with BOM
        '{"text":"青岛市南区"}'.encode("gbk"),
        '{"text":"青岛"}'.encode("gb18030"),
        b'{"a":"\xc3"}',  # truncated multibyte sequence
        b'{"a":"\xed\xa0\x80"}',  # encoded surrogate
        b"\x80",
    ],
)
def test_not_utf8(value):
    err = _error(value)
    assert err.kind is ErrorKind.UNDECODABLE
    assert "UTF-8" in err.reason


@pytest.mark.parametrize(
    "value",
    [
        b"{",
        b'{"a":1,}',
        b"{'a': 1}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": 1e400}',
        b"not json",
        b" ",
        b"\n",
        b'{"a":1} {"b":2}',
        b'{"a":1}garbage',
        b"\xef\xbb\xbf{}",  # UTF-8 BOM
        b"[" * 2000 + b"]" * 2000,  # nesting beyond the parser's depth limit
    ],
)
def test_malformed_json(value):
    assert _error(value, max_bytes=1 << 20).kind is ErrorKind.MALFORMED_JSON


@pytest.mark.parametrize(
    ("value", "expected"), [(b"[1,2]", [1, 2]), (b"42", 42), (b'"s"', "s"), (b"null", None)]
)
def test_non_object_json_is_decoded_here_and_refused_by_the_schema(value, expected):
    assert decode_json(value, LIMIT) == expected


def test_encode_json_round_trips_chinese():
    obj = {"district": "黄岛区", "lon": 120.1, "n": [1, 2]}
    out = encode_json(obj)
    assert isinstance(out, bytes)
    assert "黄岛区".encode() in out  # UTF-8, not \u escapes
    assert decode_json(out, LIMIT) == obj
