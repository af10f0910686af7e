"""A small HTTP client for the worker's pages and endpoints, as a browser or a script
uses them: session cookie + CSRF token, or an API token (imported as ``web_client``)."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the caller looks at the 3xx itself


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class WebClient:
    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base
        self.token = token
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect()
        )
        self.csrf: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=body, headers=all_headers,
                                     method=method)
        try:
            with self.opener.open(req, timeout=30) as resp:
                return Reply(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, dict(exc.headers), exc.read())

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post_json(self, path: str, doc: Any, csrf: bool = True) -> Reply:
        headers = {"Content-Type": "application/json"}
        if csrf and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        return self.request("POST", path, json.dumps(doc).encode(), headers)

    def sign_in(self, username: str, password: str, next_path: str = "/board") -> Reply:
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "next": next_path}
        ).encode()
        reply = self.request(
            "POST", "/signin", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        if reply.status == 303 and "error=1" not in reply.headers.get("Location", ""):
            self.csrf = self.get("/api/session").json()["csrf_token"]
        return reply
