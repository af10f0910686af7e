"""Session cookies, CSRF tokens, authentication and authorisation, against hostile input."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr

from streams.settings import Settings
from web.accounts import AccountStore, Role
from web.sessions import (
    AccessDecision,
    Forbidden,
    Principal,
    Session,
    SessionSigner,
    Unauthenticated,
    authenticate,
    authorize,
    load_session_key,
)

KEY = b"k" * 32
NOW = 1_800_000_000.0
MAX_AGE = 3600
PASSWORD = "correct horse battery"
SESSION_PURPOSE = b"citystream.session\x00"


def settings(tmp_path: Path, secret: str | None = None) -> Settings:
    return Settings(
        var_dir=tmp_path / "var",
        users_file=None,
        session_secret=SecretStr(secret) if secret is not None else None,
    )


@pytest.fixture
def store(tmp_path: Path) -> AccountStore:
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    return AccountStore(tmp_path / "users.json", hasher)


@pytest.fixture
def signer() -> SessionSigner:
    return SessionSigner(KEY, MAX_AGE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(signer: SessionSigner, payload: bytes) -> str:
    """A correctly signed cookie around any payload: only the key holder could make one."""
    body = _b64(payload)
    return f"{body}.{signer._mac(SESSION_PURPOSE, body)}"


# --- the key ------------------------------------------------------------------------------


def test_key_from_secret(tmp_path):
    assert load_session_key(settings(tmp_path, "s" * 40)) == b"s" * 40
    assert not (tmp_path / "var" / "session.key").exists()


def test_short_secret_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 32"):
        load_session_key(settings(tmp_path, "short"))


def test_key_file_created_private_and_reused(tmp_path):
    s = settings(tmp_path)
    key = load_session_key(s)
    path = tmp_path / "var" / "session.key"
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_session_key(s) == key
    assert sorted(p.name for p in path.parent.iterdir()) == ["session.key"]
    other = settings(tmp_path / "elsewhere")
    assert load_session_key(other) != key


def test_damaged_key_file_refused(tmp_path):
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "session.key").write_bytes(b"short")
    with pytest.raises(ValueError, match="delete it"):
        load_session_key(settings(tmp_path))


def test_short_signer_key_refused():
    with pytest.raises(ValueError):
        SessionSigner(b"x" * 31, MAX_AGE)


# --- cookies ------------------------------------------------------------------------------


def test_round_trip(store, signer):
    account = store.add("bob", Role.ANALYST, PASSWORD)
    cookie = signer.issue(account, NOW)
    assert signer.read(cookie, NOW + 10) == Session(
        "bob", Role.ANALYST, account.session_epoch, int(NOW) + MAX_AGE
    )
    assert signer.issue(account, NOW) != cookie  # nonce


def test_datetime_now(store, signer):
    account = store.add("bob", Role.ANALYST, PASSWORD)
    now = datetime.fromtimestamp(NOW, UTC)
    assert signer.read(signer.issue(account, now), now).name == "bob"


def test_expired(store, signer):
    cookie = signer.issue(store.add("bob", Role.ANALYST, PASSWORD), NOW)
    assert signer.read(cookie, NOW + MAX_AGE - 1) is not None
    assert signer.read(cookie, NOW + MAX_AGE) is None
    assert signer.read(cookie, NOW + 10 * MAX_AGE) is None


def test_tampered(store, signer):
    cookie = signer.issue(store.add("bob", Role.DISPATCHER, PASSWORD), NOW)
    body, sig = cookie.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["r"] = "admin"
    forged_body = _b64(json.dumps(payload).encode())
    assert signer.read(f"{forged_body}.{sig}", NOW) is None
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert signer.read(f"{body}.{flipped}", NOW) is None
    assert signer.read(f"{body}.", NOW) is None
    assert signer.read(body, NOW) is None
    other_key = SessionSigner(b"o" * 32, MAX_AGE).issue(store.get("bob"), NOW)
    assert signer.read(other_key, NOW) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "..",
        "a.b",
        "a.b.c",
        "é.é",
        "x" * 100_000,
        "x" * 900 + "." + "y" * 43,
        "\x00" * 50,
        "eyJ1IjoiYm9iIn0=.sig",
        None,
        123,
        b"bytes.bytes",
    ],
)
def test_garbage_never_raises(signer, value):
    assert signer.read(value, NOW) is None


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"null",
        b'"bob"',
        b"{}",
        b'{"u": "bob", "r": "root", "e": 1, "x": 1900000000}',
        b'{"u": 5, "r": "admin", "e": 1, "x": 1900000000}',
        b'{"u": "bob", "r": "admin", "e": "1", "x": 1900000000}',
        b'{"u": "bob", "r": "admin", "e": true, "x": 1900000000}',
        b'{"u": "bob", "r": "admin", "e": 1, "x": 1.9e9}',
        b'{"u": "bob", "r": "admin", "e": 1}',
        b'{"u": "bob", "r": ["admin"], "e": 1, "x": 1900000000}',
    ],
)
def test_signed_but_malformed_payload_refused(signer, payload):
    assert signer.read(_signed(signer, payload), NOW) is None


def test_csrf(store, signer):
    cookie = signer.issue(store.add("bob", Role.DISPATCHER, PASSWORD), NOW)
    token = signer.csrf_token(cookie)
    assert signer.check_csrf(cookie, token)
    assert token != cookie.split(".")[1]  # a distinct purpose, not the session's signature
    other = signer.issue(store.get("bob"), NOW)
    assert not signer.check_csrf(other, token)
    assert not signer.check_csrf(cookie, signer.csrf_token(other))
    assert not signer.check_csrf(cookie, cookie.split(".")[1])
    for bad in ("", "x", "é" * 43, token + "x", None, 42):
        assert not signer.check_csrf(cookie, bad)
    assert not signer.check_csrf("", signer.csrf_token(""))
    assert not signer.check_csrf("é", token)
    assert not SessionSigner(b"o" * 32, MAX_AGE).check_csrf(cookie, token)


# --- authenticate -------------------------------------------------------------------------


def test_session_principal(store, signer):
    cookie = signer.issue(store.add("bob", Role.ANALYST, PASSWORD), NOW)
    assert authenticate(store, signer, cookie, None, NOW) == Principal(
        "bob", Role.ANALYST, "session"
    )
    assert authenticate(store, signer, None, None, NOW) is None
    assert authenticate(store, signer, "garbage", None, NOW) is None
    assert authenticate(store, signer, cookie, None, NOW + MAX_AGE) is None


def test_session_ends_on_password_change(store, signer):
    cookie = signer.issue(store.add("bob", Role.ANALYST, PASSWORD), NOW)
    store.set_password("bob", "a brand new password")
    assert authenticate(store, signer, cookie, None, NOW) is None
    fresh = signer.issue(store.get("bob"), NOW)
    assert authenticate(store, signer, fresh, None, NOW) is not None


def test_session_ends_on_role_change(store, signer):
    cookie = signer.issue(store.add("bob", Role.ADMIN, PASSWORD), NOW)
    store.set_role("bob", Role.DISPATCHER)
    assert authenticate(store, signer, cookie, None, NOW) is None


def test_session_ends_on_removal_even_if_recreated(store, signer):
    cookie = signer.issue(store.add("bob", Role.ADMIN, PASSWORD), NOW)
    store.remove("bob")
    assert authenticate(store, signer, cookie, None, NOW) is None
    store.add("bob", Role.ADMIN, PASSWORD)
    assert authenticate(store, signer, cookie, None, NOW) is None


def test_bearer_token(store, signer):
    store.add("bob", Role.ANALYST, PASSWORD)
    cookie = signer.issue(store.add("amy", Role.ADMIN, PASSWORD), NOW)
    token = store.issue_token("bob", "ci")
    expected = Principal("bob", Role.ANALYST, "token")
    assert authenticate(store, signer, None, f"Bearer {token}", NOW) == expected
    assert authenticate(store, signer, None, f"bearer  {token} ", NOW) == expected
    # The token wins over a cookie; a wrong token does not fall back to the cookie.
    assert authenticate(store, signer, cookie, f"Bearer {token}", NOW) == expected
    assert authenticate(store, signer, cookie, "Bearer cst_wrong", NOW) is None
    assert authenticate(store, signer, cookie, "Bearer ", NOW) is None
    assert authenticate(store, signer, None, token, NOW) is None  # no scheme
    # Another scheme (say Basic from a proxy) is not ours: the cookie decides.
    assert authenticate(store, signer, cookie, "Basic Ym9iOnB3", NOW).via == "session"
    store.revoke_token("bob", "ci")
    assert authenticate(store, signer, None, f"Bearer {token}", NOW) is None


# --- authorize ----------------------------------------------------------------------------


def test_authorize():
    analyst = Principal("amy", Role.ANALYST, "session")
    admin = Principal("root", Role.ADMIN, "token")
    assert authorize(analyst, Role.ANALYST) == AccessDecision(analyst, Role.ANALYST)
    for role in Role:
        assert authorize(admin, role).principal == admin
    with pytest.raises(Unauthenticated) as unauth:
        authorize(None, Role.DISPATCHER)
    assert unauth.value.status == 401
    with pytest.raises(Forbidden) as forbidden:
        authorize(analyst, Role.DISPATCHER)
    assert forbidden.value.status == 403
    assert forbidden.value.principal == analyst
    with pytest.raises(Forbidden):
        authorize(analyst, Role.ADMIN)
