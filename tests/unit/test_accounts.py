"""Accounts: roles, Argon2id passwords, API tokens, and a file store safe for two writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import stat
import threading
from pathlib import Path

import pytest
from argon2 import PasswordHasher

import web.accounts as accounts_mod
from web.accounts import (
    Account,
    AccountError,
    AccountFileError,
    AccountStore,
    DuplicateAccount,
    DuplicateToken,
    InvalidName,
    Role,
    UnknownAccount,
    UnknownToken,
    WeakPassword,
)

PASSWORD = "correct horse battery"


def fast_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def store(tmp_path: Path) -> AccountStore:
    return AccountStore(tmp_path / "var" / "users.json", fast_hasher())


def _add_many(path: str, prefix: str, count: int) -> None:
    # Top level so spawned processes can import it.
    s = AccountStore(Path(path), fast_hasher())
    for i in range(count):
        s.add(f"{prefix}{i}", Role.DISPATCHER, PASSWORD)


# --- roles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "required", "allowed"),
    [
        (Role.ADMIN, Role.ADMIN, True),
        (Role.ADMIN, Role.ANALYST, True),
        (Role.ADMIN, Role.DISPATCHER, True),
        (Role.ANALYST, Role.ANALYST, True),
        (Role.ANALYST, Role.DISPATCHER, False),
        (Role.ANALYST, Role.ADMIN, False),
        (Role.DISPATCHER, Role.DISPATCHER, True),
        (Role.DISPATCHER, Role.ANALYST, False),
        (Role.DISPATCHER, Role.ADMIN, False),
    ],
)
def test_role_grants(held, required, allowed):
    assert held.grants(required) is allowed


# --- adding and reading -------------------------------------------------------------------


def test_add_get_list(store):
    a = store.add("zoe", Role.ANALYST, PASSWORD)
    store.add("bob", Role.DISPATCHER, PASSWORD)
    assert isinstance(a, Account)
    assert store.get("zoe") == a
    assert store.get("nobody") is None
    assert [x.name for x in store.list()] == ["bob", "zoe"]
    assert a.password_hash.startswith("$argon2id$")
    assert a.tokens == ()


def test_file_is_private_and_holds_no_password(store):
    store.add("bob", Role.DISPATCHER, PASSWORD)
    mode = stat.S_IMODE(store.path.stat().st_mode)
    assert mode == 0o600
    text = store.path.read_text()
    assert PASSWORD not in text
    assert json.loads(text)["accounts"][0]["name"] == "bob"
    # The temp file was renamed into place, nothing left behind.
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["users.json", "users.json.lock"]


def test_duplicate_refused(store):
    store.add("bob", Role.DISPATCHER, PASSWORD)
    with pytest.raises(DuplicateAccount, match="already exists"):
        store.add("bob", Role.ADMIN, PASSWORD)
    assert store.get("bob").role is Role.DISPATCHER


@pytest.mark.parametrize(
    "name",
    ["", "a", "A", "Bob", "1bob", "_bob", "bob smith", "bob\n", "../etc", "b" * 33, "bób", "a;b"],
)
def test_bad_names_refused(store, name):
    with pytest.raises(InvalidName):
        store.add(name, Role.DISPATCHER, PASSWORD)
    assert store.list() == ()


@pytest.mark.parametrize(
    ("name", "password"),
    [
        ("bob", ""),
        ("bob", "short"),
        ("bob", "x" * 11),
        ("dispatcher01", "dispatcher01"),
        ("dispatcher01", "Dispatcher01"),
        ("bob", "x" * 1025),
    ],
)
def test_weak_passwords_refused(store, name, password):
    with pytest.raises(WeakPassword):
        store.add(name, Role.DISPATCHER, password)
    assert store.get(name) is None


def test_errors_are_value_errors():
    assert issubclass(AccountError, ValueError)
    for cls in (InvalidName, WeakPassword, DuplicateAccount, UnknownAccount, AccountFileError):
        assert issubclass(cls, AccountError)


def test_unknown_role_refused(store):
    with pytest.raises(AccountError, match="unknown role"):
        store.add("bob", "root", PASSWORD)  # type: ignore[arg-type]


# --- passwords ----------------------------------------------------------------------------


def test_verify_password(store):
    store.add("bob", Role.DISPATCHER, PASSWORD)
    assert store.verify_password("bob", PASSWORD).name == "bob"
    assert store.verify_password("bob", PASSWORD + "x") is None
    assert store.verify_password("bob", "") is None
    assert store.verify_password("bob", "x" * 100_000) is None
    assert store.verify_password("nobody", PASSWORD) is None
    assert store.verify_password("", PASSWORD) is None


def test_unknown_name_still_costs_a_verify(tmp_path):
    calls = []

    class Spy(PasswordHasher):
        def verify(self, hash, password):
            calls.append(hash)
            return super().verify(hash, password)

    store = AccountStore(tmp_path / "users.json", Spy(time_cost=1, memory_cost=8, parallelism=1))
    store.add("bob", Role.DISPATCHER, PASSWORD)
    assert store.verify_password("nobody", PASSWORD) is None
    assert store.verify_password("bob", "wrong password!") is None
    assert len(calls) == 2
    assert calls[0].startswith("$argon2id$") and calls[0] != store.get("bob").password_hash


def test_damaged_hash_does_not_raise(store):
    store.add("bob", Role.DISPATCHER, PASSWORD)
    doc = json.loads(store.path.read_text())
    doc["accounts"][0]["password_hash"] = "not a hash"
    store.path.write_text(json.dumps(doc))
    assert store.verify_password("bob", PASSWORD) is None


def test_rehash_on_sign_in_when_parameters_change(tmp_path):
    path = tmp_path / "users.json"
    AccountStore(path, fast_hasher()).add("bob", Role.DISPATCHER, PASSWORD)
    stronger = AccountStore(path, PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    before = stronger.get("bob")
    after = stronger.verify_password("bob", PASSWORD)
    assert after is not None
    assert after.password_hash != before.password_hash
    assert "m=16,t=2,p=1" in stronger.get("bob").password_hash
    assert after.session_epoch == before.session_epoch  # sessions survive an upgrade
    assert stronger.verify_password("bob", PASSWORD) is not None


def test_set_password_bumps_epoch(store):
    old = store.add("bob", Role.DISPATCHER, PASSWORD)
    new = store.set_password("bob", "another long password")
    assert new.session_epoch == old.session_epoch + 1
    assert store.verify_password("bob", PASSWORD) is None
    assert store.verify_password("bob", "another long password") is not None
    with pytest.raises(WeakPassword):
        store.set_password("bob", "bob")
    with pytest.raises(UnknownAccount):
        store.set_password("nobody", "another long password")


def test_set_role_bumps_epoch(store):
    old = store.add("bob", Role.DISPATCHER, PASSWORD)
    new = store.set_role("bob", Role.ANALYST)
    assert (new.role, new.session_epoch) == (Role.ANALYST, old.session_epoch + 1)


def test_remove(store):
    store.add("bob", Role.DISPATCHER, PASSWORD)
    store.remove("bob")
    assert store.get("bob") is None
    assert store.verify_password("bob", PASSWORD) is None
    with pytest.raises(UnknownAccount):
        store.remove("bob")


def test_recreated_account_gets_a_new_epoch(store):
    first = store.add("bob", Role.DISPATCHER, PASSWORD)
    store.remove("bob")
    second = store.add("bob", Role.DISPATCHER, PASSWORD)
    assert first.session_epoch != second.session_epoch


# --- API tokens ---------------------------------------------------------------------------


def test_token_round_trip(store):
    store.add("bob", Role.ANALYST, PASSWORD)
    token = store.issue_token("bob", "ci")
    assert re.fullmatch(r"cst_[A-Za-z0-9_-]{43}", token)
    assert token not in store.path.read_text()
    assert store.verify_token(token).name == "bob"
    assert store.get("bob").token_labels() == ("ci",)
    other = store.issue_token("bob", "laptop")
    assert other != token
    assert store.verify_token(other).name == "bob"


@pytest.mark.parametrize(
    "token",
    ["", "cst_", "Bearer x", "cst_" + "A" * 43, "cst_" + "A" * 44, "x" * 10_000, "cst_é" * 9],
)
def test_wrong_tokens_refused(store, token):
    store.add("bob", Role.ANALYST, PASSWORD)
    store.issue_token("bob", "ci")
    assert store.verify_token(token) is None


def test_token_labels(store):
    store.add("bob", Role.ANALYST, PASSWORD)
    store.issue_token("bob", "ci")
    with pytest.raises(DuplicateToken):
        store.issue_token("bob", "ci")
    with pytest.raises(AccountError):
        store.issue_token("bob", "bad label")
    with pytest.raises(UnknownAccount):
        store.issue_token("nobody", "ci")
    with pytest.raises(UnknownToken):
        store.revoke_token("bob", "other")


def test_revoked_or_removed_token_refused(store):
    store.add("bob", Role.ANALYST, PASSWORD)
    store.add("amy", Role.ANALYST, PASSWORD)
    bob_token = store.issue_token("bob", "ci")
    amy_token = store.issue_token("amy", "ci")
    store.revoke_token("bob", "ci")
    assert store.verify_token(bob_token) is None
    store.remove("amy")
    assert store.verify_token(amy_token) is None


# --- the file -----------------------------------------------------------------------------


def test_missing_file_is_empty(tmp_path):
    assert AccountStore(tmp_path / "none.json").list() == ()


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"version": 2, "accounts": []}',
        '{"version": 1, "accounts": [{"name": "bob"}]}',
        '{"version": 1, "accounts": [{"name": "bob", "role": "root", "password_hash": "x",'
        ' "session_epoch": 1}]}',
        '{"version": 1, "accounts": [{"name": "bob", "role": "admin", "password_hash": "x",'
        ' "session_epoch": 1, "tokens": [{"label": "a", "token_hash": "é",'
        ' "created_at": "2026-01-01T00:00:00+00:00"}]}]}',
    ],
)
def test_damaged_file_reported(tmp_path, text):
    path = tmp_path / "users.json"
    path.write_text(text)
    with pytest.raises(AccountFileError, match="damaged"):
        AccountStore(path).list()


def test_reads_are_cached_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "users.json"
    writer = AccountStore(path, fast_hasher())
    reader = AccountStore(path, fast_hasher())
    writer.add("bob", Role.DISPATCHER, PASSWORD)
    parses = []
    real_parse = accounts_mod.parse_accounts
    monkeypatch.setattr(
        accounts_mod, "parse_accounts", lambda text, src: parses.append(1) or real_parse(text, src)
    )
    assert reader.get("bob") is not None
    assert reader.get("bob") is not None
    assert reader.list()
    assert len(parses) == 1
    writer.add("amy", Role.ANALYST, PASSWORD)  # e.g. the CLI, while the worker runs
    parses.clear()
    assert reader.get("amy") is not None
    assert reader.get("bob") is not None
    assert len(parses) == 1


def test_failed_write_leaves_the_file_alone(store, monkeypatch):
    store.add("bob", Role.DISPATCHER, PASSWORD)
    before = store.path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(accounts_mod.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.add("amy", Role.ANALYST, PASSWORD)
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["users.json", "users.json.lock"]


def test_concurrent_threads_lose_no_update(tmp_path):
    path = tmp_path / "users.json"
    threads = [threading.Thread(target=_add_many, args=(str(path), f"t{n}u", 6)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(AccountStore(path).list()) == 36


def test_concurrent_processes_lose_no_update(tmp_path):
    path = tmp_path / "users.json"
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_add_many, args=(str(path), f"p{n}u", 10)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(AccountStore(path).list()) == 30
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
