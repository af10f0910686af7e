"""Signed session cookies, CSRF tokens, and who may do what.

A cookie is ``base64url(payload JSON) "." base64url(HMAC-SHA256)``; the payload names
the account, its role and session epoch, so a password change, role change or removal
ends the account's sessions without any server-side session table.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from streams.settings import Settings
from web.accounts import Account, AccountStore, Role

KEY_BYTES = 32
KEY_FILE = "session.key"
# Far above a real cookie (~150 chars): anything longer is refused before any work.
MAX_COOKIE_CHARS = 1024
_COOKIE_RE = re.compile(r"[A-Za-z0-9_-]{1,900}\.[A-Za-z0-9_-]{43}")
_B64_RE = re.compile(r"[A-Za-z0-9_-]{43}")
# Distinct prefixes keep a session signature from ever being valid as a CSRF token.
_SESSION_PURPOSE = b"citystream.session\x00"
_CSRF_PURPOSE = b"citystream.csrf\x00"

Via = Literal["session", "token"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unix_time(now: datetime | float) -> float:
    """Seconds since the epoch; ``now`` may be an aware datetime or already seconds."""
    return now.timestamp() if isinstance(now, datetime) else float(now)


def load_session_key(settings: Settings) -> bytes:
    """The cookie signing key: the configured secret, else a random key in var_dir."""
    if settings.session_secret is not None:
        key = settings.session_secret.get_secret_value().encode("utf-8")
        if len(key) < KEY_BYTES:
            raise ValueError(f"CITYSTREAM_SESSION_SECRET must be at least {KEY_BYTES} bytes")
        return key
    path = settings.var_dir / KEY_FILE
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create_key_file(path)
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"{path} is not a {KEY_BYTES}-byte key; delete it to make a new one "
            "(this signs everyone out)"
        )
    return key


def _create_key_file(path: Path) -> None:
    # Write a temp file, then link it into place: link fails if another process got there
    # first, so nobody ever reads a half-written key or overwrites one in use.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


@dataclass(frozen=True, slots=True)
class Session:
    name: str
    role: Role
    session_epoch: int
    expires_at: int  # unix seconds


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    via: Via


class SessionSigner:
    def __init__(self, key: bytes, max_age_s: int) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"session key must be at least {KEY_BYTES} bytes")
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self._key = key
        self.max_age_s = max_age_s

    def _mac(self, purpose: bytes, data: str) -> str:
        return _b64(hmac.new(self._key, purpose + data.encode("ascii"), hashlib.sha256).digest())

    def issue(self, account: Account, now: datetime | float) -> str:
        payload = {
            "u": account.name,
            "r": account.role.value,
            "e": account.session_epoch,
            "x": int(unix_time(now)) + self.max_age_s,
            "n": secrets.token_urlsafe(9),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        return f"{body}.{self._mac(_SESSION_PURPOSE, body)}"

    def read(self, value: str, now: datetime | float) -> Session | None:
        """The session in a cookie value, or None if forged, damaged or expired."""
        if not isinstance(value, str) or len(value) > MAX_COOKIE_CHARS:
            return None
        if not _COOKIE_RE.fullmatch(value):
            return None
        body, sig = value.split(".")
        if not hmac.compare_digest(sig, self._mac(_SESSION_PURPOSE, body)):
            return None
        try:
            payload = json.loads(_unb64(body))
        except (ValueError, binascii.Error):  # bad base64, UTF-8 or JSON
            return None
        if not isinstance(payload, dict):
            return None
        name, role, epoch, expires = (payload.get(k) for k in ("u", "r", "e", "x"))
        if not isinstance(name, str) or role not in tuple(Role):
            return None
        if type(epoch) is not int or type(expires) is not int:  # bool is an int: excluded
            return None
        if unix_time(now) >= expires:
            return None
        return Session(name, Role(role), epoch, expires)

    def csrf_token(self, cookie_value: str) -> str:
        return self._mac(_CSRF_PURPOSE, cookie_value)

    def check_csrf(self, cookie_value: str, token: str) -> bool:
        if not (isinstance(cookie_value, str) and isinstance(token, str)):
            return False
        if not (cookie_value and cookie_value.isascii() and _B64_RE.fullmatch(token)):
            return False
        return hmac.compare_digest(token, self.csrf_token(cookie_value))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None for any other scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def authenticate(
    store: AccountStore,
    signer: SessionSigner,
    cookie_value: str | None,
    authorization: str | None,
    now: datetime | float,
) -> Principal | None:
    """Who is asking: a Bearer token, else a session cookie still matching its account."""
    token = bearer_token(authorization)
    if token is not None:
        # A Bearer header is decisive: a bad token does not fall back to the cookie.
        account = store.verify_token(token)
        return Principal(account.name, account.role, "token") if account else None
    # Other schemes (e.g. Basic from a proxy in front) are not ours: the cookie decides.
    if cookie_value is None:
        return None
    session = signer.read(cookie_value, now)
    if session is None:
        return None
    account = store.get(session.name)
    if (
        account is None
        or account.role is not session.role
        or account.session_epoch != session.session_epoch
    ):
        return None
    return Principal(account.name, account.role, "session")


class AccessDenied(Exception):
    status: int = 403


class Unauthenticated(AccessDenied):
    """Nobody signed in (or the credentials were bad): HTTP 401."""

    status = 401

    def __init__(self, required: Role) -> None:
        super().__init__(f"sign in required ({required.value})")
        self.required = required


class Forbidden(AccessDenied):
    """Signed in, but the role does not allow this: HTTP 403."""

    status = 403

    def __init__(self, principal: Principal, required: Role) -> None:
        super().__init__(f"{principal.name} ({principal.role.value}) is not {required.value}")
        self.principal = principal
        self.required = required


@dataclass(frozen=True, slots=True)
class AccessDecision:
    principal: Principal
    required: Role


def authorize(principal: Principal | None, required: Role) -> AccessDecision:
    """Allow, or raise ``Unauthenticated`` (401) / ``Forbidden`` (403)."""
    if principal is None:
        raise Unauthenticated(required)
    if not principal.role.grants(required):
        raise Forbidden(principal, required)
    return AccessDecision(principal, required)
