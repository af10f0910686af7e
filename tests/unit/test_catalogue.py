from __future__ import annotations

import re
from pathlib import Path

from schemas.catalogue import CATALOGUE, view_doc

DDL = Path(__file__).resolve().parents[2] / "schemas" / "clickhouse"


def test_every_view_people_read_is_described():
    views = set()
    for sql in DDL.glob("*.sql"):
        views |= set(re.findall(r"CREATE VIEW IF NOT EXISTS (\w+)", sql.read_text()))
    assert views == {v.name for v in CATALOGUE}


def test_every_column_has_a_meaning():
    for view in CATALOGUE:
        assert view.row
        for column, meaning in view.columns.items():
            assert meaning.strip(), (view.name, column)
    assert view_doc("dispatch_quality") is not None and view_doc("nope") is None
