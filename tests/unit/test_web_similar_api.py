"""GET /api/similar through the real aiohttp routes (web.server.add_routes), with the
warehouse replaced by canned query results: who may ask, what is refused before any query
runs, and that the handler runs exactly the two queries web.views and processors.similar
build."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from processors.similar import stored_embedding_sql
from schemas.domain import Domain
from schemas.records import DispatchFeedback
from streams.clickhouse import QueryResult
from streams.settings import Settings
from web.accounts import AccountStore, Role
from web.server import WebContext, add_routes
from web.sessions import SessionSigner
from web.views import similar_search_sql

NOW = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
STORED = QueryResult(
    ["case_id", "input_id", "code", "district", "reported_at", "embedding"],
    ["String", "String", "String", "String", "DateTime", "Array(Float32)"],
    [("c-9", "AP-7", "A01", "市南区", "2026-03-10 01:30:00", [0.6, 0.8])],
)
FOUND = QueryResult(
    ["case_id", "input_id", "code", "event_name", "district", "handled_by", "verdict",
     "reported_at", "hours_to_verdict", "score", "text"],
    [""] * 11,
    [("p1", "p1", "A01", "暴露垃圾", "市南区", "U9", "confirmed", "2026-03-07 01:30:00", 3.0,
      0.99, "路边垃圾没人清理"),
     ("p8", "p8", "A01", "暴露垃圾", "市南区", "", "", "2026-03-01 01:30:00", None, 0.5, "")],
)


class FakeWarehouse:
    """Answers the stored-embedding query with ``stored`` and anything else with FOUND."""

    def __init__(self, stored: QueryResult) -> None:
        self.stored = stored
        self.asked: list[str] = []

    async def query(self, sql: str, limits: Mapping[str, Any] | None) -> QueryResult:
        self.asked.append(sql)
        return self.stored if sql.startswith("SELECT case_id, input_id, code, district,") \
            else FOUND


async def _no_feedback(record: DispatchFeedback) -> None:
    raise AssertionError("nothing is published here")


def _run(
    tmp_path: Path,
    warehouse: FakeWarehouse,
    scenario: Callable[[TestClient[web.Request, web.Application], dict[str, str]],
                       Awaitable[None]],
) -> None:
    settings = Settings(var_dir=tmp_path / "var", users_file=tmp_path / "users.json")
    accounts = AccountStore(settings.accounts_path,
                            PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    tokens = {}
    for role in Role:
        accounts.add(f"{role}.one", role, "correct horse battery")
        tokens[str(role)] = accounts.issue_token(f"{role}.one", "tests")
    ctx = WebContext(
        settings=settings,
        domain=Domain.load(settings.domain_file),
        query=warehouse.query,
        analyst_query=warehouse.query,
        publish_feedback=_no_feedback,
        accounts=accounts,
        signer=SessionSigner(b"k" * 32, 3600),
        units=("U1", "U9"),
        clock=lambda: NOW,
    )

    async def main() -> None:
        app = web.Application()
        add_routes(app, ctx)
        async with TestClient(TestServer(app)) as client:
            await scenario(client, tokens)

    asyncio.run(main())


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_role_may_ask_and_gets_the_past_cases(tmp_path: Path) -> None:
    warehouse = FakeWarehouse(STORED)

    async def scenario(client: Any, tokens: dict[str, str]) -> None:
        anonymous = await client.get("/api/similar?input_id=AP-7")
        assert anonymous.status == 401
        wrong = await client.get("/api/similar?input_id=AP-7", headers=_bearer("cst_nope"))
        assert wrong.status == 401
        for role in ("dispatcher", "analyst", "admin"):
            reply = await client.get("/api/similar?input_id=AP-7&k=2",
                                     headers=_bearer(tokens[role]))
            assert reply.status == 200, (role, await reply.text())
            assert reply.content_type == "application/json"
            doc = await reply.json()
            assert doc == {"input_id": "AP-7", "cases": [
                {"case_id": "p1", "input_id": "p1", "code": "A01", "event_name": "暴露垃圾",
                 "district": "市南区", "unit": "U9", "verdict": "confirmed",
                 "reported_at": "2026-03-07T01:30:00+00:00", "hours_to_verdict": 3.0,
                 "score": 0.99, "text": "路边垃圾没人清理"},
                {"case_id": "p8", "input_id": "p8", "code": "A01", "event_name": "暴露垃圾",
                 "district": "市南区", "unit": "", "verdict": "",
                 "reported_at": "2026-03-01T01:30:00+00:00", "hours_to_verdict": None,
                 "score": 0.5, "text": ""},
            ]}

    _run(tmp_path, warehouse, scenario)
    # Per request: the report's stored row, then the search built from it (k from the query).
    assert warehouse.asked == [stored_embedding_sql("AP-7"),
                               similar_search_sql(STORED, "AP-7", 2)] * 3


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("", 400, "input_id must be a report id"),
        ("?input_id=", 400, "input_id must be a report id"),
        ("?input_id=a%27%20OR%201%3D1", 400, "input_id must be a report id"),
        ("?input_id=AP-7&k=0", 400, "k must be a whole number from 1 to 20"),
        ("?input_id=AP-7&k=21", 400, "k must be a whole number from 1 to 20"),
        ("?input_id=AP-7&k=many", 400, "k must be a whole number from 1 to 20"),
    ],
)
def test_bad_requests_are_refused_before_any_query(
    tmp_path: Path, query: str, status: int, message: str
) -> None:
    warehouse = FakeWarehouse(STORED)

    async def scenario(client: Any, tokens: dict[str, str]) -> None:
        reply = await client.get("/api/similar" + query, headers=_bearer(tokens["dispatcher"]))
        assert reply.status == status
        assert (await reply.json())["error"].startswith(message)

    _run(tmp_path, warehouse, scenario)
    assert warehouse.asked == []


def test_a_report_without_a_stored_embedding_is_404(tmp_path: Path) -> None:
    warehouse = FakeWarehouse(QueryResult(list(STORED.columns), list(STORED.types), []))

    async def scenario(client: Any, tokens: dict[str, str]) -> None:
        reply = await client.get("/api/similar?input_id=AP-8", headers=_bearer(tokens["analyst"]))
        assert reply.status == 404
        assert await reply.json() == {"error": "no stored embedding for report 'AP-8' (yet)"}

    _run(tmp_path, warehouse, scenario)
    assert warehouse.asked == [stored_embedding_sql("AP-8")]  # no search without a vector
