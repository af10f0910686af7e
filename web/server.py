"""The worker's web pages and HTTP endpoints, on Faust's own aiohttp server.

One process in the embedded mode: chDB lives in the worker, so the pages are served by
it too (``add_routes`` onto Faust's aiohttp application). Handlers are thin: they check
who is asking, run the queries kept in ``schemas.dashboard`` and shape the rows with the
pure functions of ``web.views``.

Access: pages need a signed-in session (cookie, ``/signin``); HTTP clients send an API
token (``Authorization: Bearer cst_...``). The board and feedback need the dispatcher
role, SQL and the city dashboard the analyst role; admin has both. Similar past cases
are open to all three.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from processors.similar import past_cases_from_rows, stored_embedding_sql
from schemas import dashboard
from schemas.catalogue import CATALOGUE
from schemas.domain import Domain
from schemas.records import RECORD_ID_PATTERN, DispatchFeedback
from streams.clickhouse import QueryResult
from streams.query import CONTENT_TYPES, QueryRefused, cut, query_limits, read_only, render
from streams.settings import Settings
from web.accounts import AccountStore, Role
from web.sessions import (
    Forbidden,
    Principal,
    SessionSigner,
    Unauthenticated,
    authenticate,
    authorize,
)
from web.views import (
    HANDLED_LIMIT,
    RECENT_LIMIT,
    REVIEW_QUEUE_LIMIT,
    RequestRefused,
    board_payload,
    city_labels,
    city_payload,
    city_window,
    feedback_from_request,
    rows_as_dicts,
    safe_next,
    similar_params,
    similar_payload,
    similar_search_sql,
    snapshot_file,
    snapshot_sql,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "citystream_session"
# Tables of unmasked personal data: the admin role only (on a server, the analyst user has
# no grant on them either).
_RESTRICTED = re.compile(r"citizen_appeals_raw", re.IGNORECASE)
_RECORD_ID = re.compile(RECORD_ID_PATTERN)
# Pages may load their own scripts and styles only; ECharts sets inline styles.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

Query = Callable[[str, Mapping[str, Any] | None], Awaitable[QueryResult]]


@dataclass
class SignInThrottle:
    """Slows password guessing: after ``limit`` failures for a name within ``window``,
    that name is refused until the window has passed (kept per process, in memory)."""

    limit: int = 5
    window: timedelta = timedelta(minutes=15)
    max_names: int = 10_000
    failures: dict[str, list[datetime]] = field(default_factory=dict)

    def blocked(self, name: str, now: datetime) -> bool:
        recent = [t for t in self.failures.get(name[:64], []) if now - t < self.window]
        if recent:
            self.failures[name[:64]] = recent
        else:
            self.failures.pop(name[:64], None)
        return len(recent) >= self.limit

    def failed(self, name: str, now: datetime) -> None:
        if len(self.failures) >= self.max_names:
            # Made-up names must not grow this without bound: forget the stale ones.
            for stale in [n for n, ts in self.failures.items() if now - ts[-1] >= self.window]:
                del self.failures[stale]
        self.failures.setdefault(name[:64], []).append(now)

    def succeeded(self, name: str) -> None:
        self.failures.pop(name[:64], None)


@dataclass
class WebContext:
    settings: Settings
    domain: Domain
    query: Query  # the pipeline's own connection (dashboards, board)
    analyst_query: Query  # analysts' free SQL (a read-only user's connection on a server)
    publish_feedback: Callable[[DispatchFeedback], Awaitable[None]]
    accounts: AccountStore
    signer: SessionSigner
    units: tuple[str, ...]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    throttle: SignInThrottle = field(default_factory=SignInThrottle)


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message}, status=status)


def add_routes(app: web.Application, ctx: WebContext) -> None:
    """Register the pages and endpoints on the worker's aiohttp application."""

    def principal_of(request: web.Request) -> Principal | None:
        return authenticate(
            ctx.accounts,
            ctx.signer,
            request.cookies.get(SESSION_COOKIE),
            request.headers.get("Authorization"),
            ctx.clock(),
        )

    def require(
        request: web.Request, role: Role | tuple[Role, ...], *, page: bool = False
    ) -> Principal:
        """The caller, if allowed (holding ``role``, or one of several); otherwise the HTTP
        error to answer with (pages send people to sign in; API clients get 401/403).
        State-changing requests made with a session cookie must carry its CSRF token."""
        principal = principal_of(request)
        roles = role if isinstance(role, tuple) else (role,)
        granted = [r for r in roles if principal is not None and principal.role.grants(r)]
        try:
            authorize(principal, granted[0] if granted else roles[0])
        except Unauthenticated as exc:
            if page:
                raise web.HTTPSeeOther("/signin?" + urlencode({"next": request.path})) from exc
            raise web.HTTPUnauthorized(
                text='{"error": "sign in or send an API token"}',
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="citystream"'},
            ) from exc
        except Forbidden as exc:
            needs = " or ".join(str(r) for r in roles)
            raise web.HTTPForbidden(
                text=orjson.dumps({"error": f"needs the {needs} role"}).decode(),
                content_type="application/json",
            ) from exc
        if principal is None:  # authorize refuses None already; this narrows the type
            raise web.HTTPUnauthorized()
        if request.method not in ("GET", "HEAD") and principal.via == "session":
            token = request.headers.get("X-CSRF-Token", "")
            if not ctx.signer.check_csrf(request.cookies.get(SESSION_COOKIE, ""), token):
                raise web.HTTPForbidden(
                    text='{"error": "missing or wrong X-CSRF-Token"}',
                    content_type="application/json",
                )
        return principal

    def page(name: str) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / name, headers=_SECURITY_HEADERS)

    async def signin_page(request: web.Request) -> web.StreamResponse:
        return page("signin.html")

    async def signin(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        name = str(form.get("username", "")).strip()
        password = str(form.get("password", ""))
        target = safe_next(str(form.get("next", "")) or None)
        now = ctx.clock()
        account = None
        if not ctx.throttle.blocked(name, now):
            account = ctx.accounts.verify_password(name, password)
        if account is None:
            ctx.throttle.failed(name, now)
            log.warning("sign-in refused for %r from %s", name[:64], request.remote)
            raise web.HTTPSeeOther("/signin?" + urlencode({"error": 1, "next": target}))
        ctx.throttle.succeeded(name)
        response = web.HTTPSeeOther(target)
        response.set_cookie(
            SESSION_COOKIE,
            ctx.signer.issue(account, now),
            max_age=ctx.settings.session_max_age_s,
            httponly=True,
            samesite="Strict",
            secure=ctx.settings.web_cookie_secure,
            path="/",
        )
        log.info("%s signed in (%s)", account.name, account.role)
        raise response

    async def signout(request: web.Request) -> web.StreamResponse:
        principal = principal_of(request)
        if principal is not None and principal.via == "session":
            require(request, Role(principal.role))  # checks the CSRF token
        response = web.Response(status=204)
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def session(request: web.Request) -> web.StreamResponse:
        principal = principal_of(request)
        if principal is None:
            return _error("not signed in", 401)
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return _json({
            "user": principal.name,
            "role": str(principal.role),
            "csrf_token": ctx.signer.csrf_token(cookie) if principal.via == "session" else None,
        })

    async def board_page(request: web.Request) -> web.StreamResponse:
        require(request, Role.DISPATCHER, page=True)
        return page("board.html")

    async def city_page(request: web.Request) -> web.StreamResponse:
        require(request, Role.ANALYST, page=True)
        return page("city.html")

    async def board(request: web.Request) -> web.StreamResponse:
        require(request, Role.DISPATCHER)
        now = ctx.clock()
        hour_ago = now - timedelta(hours=1)
        doc = board_payload(
            now=now,
            counts=await ctx.query(dashboard.board_counts_sql(now), None),
            queue=await ctx.query(dashboard.review_queue_sql(now, REVIEW_QUEUE_LIMIT), None),
            recent=await ctx.query(dashboard.recent_decisions_sql(hour_ago, RECENT_LIMIT), None),
            handled=await ctx.query(
                dashboard.recently_handled_sql(now - timedelta(days=1), HANDLED_LIMIT), None
            ),
            units=ctx.units,
        )
        return _json(doc)

    async def similar(request: web.Request) -> web.StreamResponse:
        """A report's most similar past cases (``?input_id=...&k=5``), from its stored
        embedding; see ``web.views.similar_search_sql`` for what is searched."""
        require(request, (Role.DISPATCHER, Role.ANALYST, Role.ADMIN))
        try:
            input_id, k = similar_params(request.query.get("input_id"), request.query.get("k"))
            stored = await ctx.query(stored_embedding_sql(input_id), None)
            sql = similar_search_sql(stored, input_id, k)
        except RequestRefused as exc:
            return _error(str(exc), exc.status)
        found = await ctx.query(sql, None)
        return _json(similar_payload(input_id, past_cases_from_rows(found.rows)))

    async def snapshot(request: web.Request) -> web.StreamResponse:
        """A camera event's blurred snapshot (``?input_id=``): the frame as the vision stage
        stored it, faces, heads and plates obscured; only from the snapshot store."""
        require(request, (Role.DISPATCHER, Role.ANALYST, Role.ADMIN))
        settings = ctx.settings
        try:
            found = await ctx.query(snapshot_sql(request.query.get("input_id")), None)
            if not found.rows:
                raise RequestRefused("this report has no snapshot", 404)
            path = snapshot_file(str(found.rows[0][0]),
                                 settings.snapshot_dir or settings.var_dir / "snapshots")
        except RequestRefused as exc:
            return _error(str(exc), exc.status)
        return web.FileResponse(path, headers={"Content-Type": "image/jpeg",
                                               "Cache-Control": "private, max-age=3600"})

    async def feedback(request: web.Request) -> web.StreamResponse:
        principal = require(request, Role.DISPATCHER)
        try:
            body = await request.json(loads=orjson.loads)
        except ValueError:
            return _error("the body must be JSON", 400)
        input_id = body.get("input_id") if isinstance(body, dict) else None
        if not isinstance(input_id, str) or not _RECORD_ID.fullmatch(input_id):
            return _error("input_id must be a report id", 400)
        found = await ctx.query(
            "SELECT input_id, unit, code, auto, received_at, respond_by "
            f"FROM dispatch_decisions_log FINAL WHERE input_id = '{input_id}'",
            None,
        )
        rows = rows_as_dicts(found)
        try:
            record = feedback_from_request(
                body,
                rows[0] if rows else None,
                dispatcher=principal.name,
                units=frozenset(ctx.units),
                feedback_id=f"fb-{uuid.uuid4().hex}",
                now=ctx.clock(),
            )
        except RequestRefused as exc:
            return _error(str(exc), exc.status)
        await ctx.publish_feedback(record)
        log.info("%s %s %s -> %s", principal.name, record.verdict, input_id, record.unit)
        return _json(
            {
                "feedback_id": record.feedback_id,
                "input_id": record.input_id,
                "verdict": record.verdict,
                "unit": record.unit,
            },
            status=202,
        )

    async def city(request: web.Request) -> web.StreamResponse:
        require(request, Role.ANALYST)
        try:
            window = city_window(request.query.get("hours"), ctx.clock())
        except RequestRefused as exc:
            return _error(str(exc), exc.status)
        panels = {
            panel.name: await ctx.query(panel.sql(window.since, window.until), None)
            for panel in dashboard.PANELS
        }
        return _json(city_payload(window, panels, city_labels(ctx.domain)))

    async def catalogue(request: web.Request) -> web.StreamResponse:
        require(request, Role.ANALYST)
        views = []
        for doc in CATALOGUE:
            described = await ctx.analyst_query(f"DESCRIBE TABLE {doc.name}", None)
            views.append({
                "name": doc.name,
                "row": doc.row,
                "columns": [
                    {"name": row[0], "type": row[1], "description": doc.columns.get(row[0], "")}
                    for row in described.rows
                ],
            })
        return _json({"views": views})

    async def query(request: web.Request) -> web.StreamResponse:
        """Read-only SQL: ``sql`` in the query string (GET) or the body (POST, text);
        ``format`` = json (a document with columns, types, rows), csv, table or jsonl."""
        principal = require(request, Role.ANALYST)
        sql = request.query.get("sql", "")
        if request.method == "POST":
            sql = await request.text()
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "csv", "table", "jsonl"):
            return _error("format must be json, csv, table or jsonl", 400)
        try:
            statement = read_only(sql)
        except QueryRefused as exc:
            return _error(str(exc), 400)
        if principal.role is not Role.ADMIN and _RESTRICTED.search(statement):
            return _error("the raw appeals (unmasked personal data) need the admin role", 403)
        settings = ctx.settings
        limits = query_limits(statement, settings.query_max_rows, settings.query_max_seconds)
        try:
            result = await ctx.analyst_query(statement, limits)
        except Exception as exc:  # noqa: BLE001 - any engine error goes back to the analyst
            return _error(str(exc), 400)
        result, truncated = cut(result, settings.query_max_rows)
        headers = {"X-Citystream-Truncated": "1" if truncated else "0"}
        if fmt == "json":
            return _json({
                "columns": result.columns,
                "types": result.types,
                "rows": [list(r) for r in result.rows],
                "truncated": truncated,
            })
        text = render(result.columns, result.rows, "json" if fmt == "jsonl" else fmt)
        kind = CONTENT_TYPES["json" if fmt == "jsonl" else fmt]
        return web.Response(text=text, headers=headers | {"Content-Type": kind})

    app.router.add_get("/signin", signin_page)
    app.router.add_post("/signin", signin)
    app.router.add_post("/signout", signout)
    app.router.add_get("/board", board_page)
    app.router.add_get("/city", city_page)
    app.router.add_get("/api/session", session)
    app.router.add_get("/api/board", board)
    app.router.add_get("/api/similar", similar)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_post("/api/feedback", feedback)
    app.router.add_get("/api/city", city)
    app.router.add_get("/catalogue", catalogue)
    app.router.add_get("/query", query)
    app.router.add_post("/query", query)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
