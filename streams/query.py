"""Read-only SQL for people: one SELECT-like statement, with a row limit."""

from __future__ import annotations

import re

_ALLOWED_START = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS)\b", re.IGNORECASE)
_LITERALS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`")
_WRITE_WORDS = re.compile(
    r"\b(INSERT|ALTER|DROP|CREATE|TRUNCATE|RENAME|ATTACH|DETACH|OPTIMIZE|SYSTEM|KILL|GRANT|SET)\b",
    re.IGNORECASE,
)


class QueryRefused(ValueError):
    pass


def read_only(sql: str, max_chars: int = 20_000) -> str:
    """Return the statement if it is a single read; refuse anything that could write.

    A ClickHouse server enforces this for real with a readonly user; this check is what
    the embedded mode has, so it errs on the side of refusing.
    """
    statement = sql.strip().rstrip(";").strip()
    if not statement:
        raise QueryRefused("empty query")
    if len(statement) > max_chars:
        raise QueryRefused(f"query is longer than {max_chars} characters")
    bare = _LITERALS.sub("''", statement)
    if ";" in bare:
        raise QueryRefused("one statement at a time")
    if not _ALLOWED_START.match(bare):
        raise QueryRefused("only SELECT, WITH, SHOW, DESCRIBE and EXISTS are allowed")
    word = _WRITE_WORDS.search(bare)
    if word:
        raise QueryRefused(f"{word.group(1).upper()} is not allowed in a read-only query")
    return statement
