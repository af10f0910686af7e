"""Accounts for the web pages and HTTP endpoints: roles, Argon2id passwords, API tokens.

Kept in one JSON file (``Settings.accounts_path``) that ``citystream users`` edits while
the worker may be reading it: writes are atomic (temp file + ``os.replace``) and
serialised by an ``flock`` on a side file; reads are cached until the file changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{1,31}")
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
MIN_PASSWORD_CHARS = 12
# Bounds work per sign-in attempt on input nobody could have set as a password.
MAX_PASSWORD_CHARS = 1024
TOKEN_PREFIX = "cst_"
_TOKEN_RE = re.compile(r"cst_[A-Za-z0-9_-]{43}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
FILE_VERSION = 1

T = TypeVar("T")


class Role(StrEnum):
    DISPATCHER = "dispatcher"
    ANALYST = "analyst"
    ADMIN = "admin"

    def grants(self, required: Role) -> bool:
        """Whether holding this role allows what ``required`` allows (admin allows all)."""
        return self is Role.ADMIN or self is required


@dataclass(frozen=True, slots=True)
class ApiToken:
    label: str
    token_hash: str  # SHA-256 hex of the token; the token itself is never stored
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    password_hash: str
    # Part of every session cookie: bumping it ends all of the account's sessions.
    session_epoch: int
    tokens: tuple[ApiToken, ...] = ()

    def token_labels(self) -> tuple[str, ...]:
        return tuple(t.label for t in self.tokens)


class AccountError(ValueError):
    """A refused account operation; the message is fit to show to the operator."""


class InvalidName(AccountError):
    pass


class WeakPassword(AccountError):
    pass


class DuplicateAccount(AccountError):
    pass


class UnknownAccount(AccountError):
    pass


class DuplicateToken(AccountError):
    pass


class UnknownToken(AccountError):
    pass


class AccountFileError(AccountError):
    """The accounts file exists but cannot be understood (hand-edited or damaged)."""


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid account name {name!r}: 2-32 characters, lower-case letters, digits, "
            "'_', '.', '-', starting with a letter"
        )


def check_password(name: str, password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise WeakPassword(f"password too short: at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise WeakPassword(f"password too long: at most {MAX_PASSWORD_CHARS} characters")
    if password.strip().lower() == name.lower():
        raise WeakPassword("password must not be the account name")


def check_label(label: str) -> None:
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise AccountError(
            f"invalid token label {label!r}: 1-64 characters, letters, digits, '_', '.', ':', '-'"
        )


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError as exc:
        raise AccountError(f"unknown role {role!r}: one of {', '.join(Role)}") from exc


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so guessing is hopeless whatever the hash's speed:
    # a fast hash is enough (Argon2 here would only slow every API request down).
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a file only its owner can read (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- JSON (de)serialisation ------------------------------------------------------------


def _account_to_json(a: Account) -> dict[str, Any]:
    return {
        "name": a.name,
        "role": a.role.value,
        "password_hash": a.password_hash,
        "session_epoch": a.session_epoch,
        "tokens": [
            {"label": t.label, "token_hash": t.token_hash, "created_at": t.created_at.isoformat()}
            for t in a.tokens
        ],
    }


def _account_from_json(obj: Any) -> Account:
    if not isinstance(obj, dict):
        raise TypeError("account is not an object")
    name, role, pw, epoch = obj["name"], obj["role"], obj["password_hash"], obj["session_epoch"]
    if not (isinstance(name, str) and NAME_RE.fullmatch(name)):
        raise ValueError(f"bad name {name!r}")
    if not isinstance(pw, str) or type(epoch) is not int:
        raise TypeError(f"bad password_hash or session_epoch for {name}")
    tokens = []
    for t in obj.get("tokens", []):
        label, token_hash = t["label"], t["token_hash"]
        if not (isinstance(label, str) and isinstance(token_hash, str)) or not _HEX64_RE.fullmatch(
            token_hash
        ):
            raise TypeError(f"bad token for {name}")
        tokens.append(ApiToken(label, token_hash, datetime.fromisoformat(t["created_at"])))
    return Account(name, Role(role), pw, epoch, tuple(tokens))


def parse_accounts(text: str, source: Path) -> dict[str, Account]:
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
            raise ValueError(f"not a version {FILE_VERSION} accounts file")
        accounts = [_account_from_json(a) for a in doc["accounts"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise AccountFileError(f"accounts file {source} is damaged: {exc}") from exc
    by_name = {a.name: a for a in accounts}
    if len(by_name) != len(accounts):
        raise AccountFileError(f"accounts file {source} is damaged: duplicate names")
    return by_name


def dump_accounts(accounts: dict[str, Account]) -> bytes:
    doc = {"version": FILE_VERSION, "accounts": [_account_to_json(a) for a in accounts.values()]}
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# --- The store ---------------------------------------------------------------------------

_Signature = tuple[int, int, int]  # inode, mtime_ns, size: any write changes at least one


class AccountStore:
    def __init__(self, path: Path, hasher: PasswordHasher | None = None) -> None:
        self.path = path
        # argon2-cffi's defaults are RFC 9106's low-memory Argon2id profile; tests pass
        # cheaper parameters.
        self._hasher = hasher or PasswordHasher()
        self._cache: tuple[_Signature, dict[str, Account]] | None = None
        self._dummy_hash: str | None = None

    # -- reading

    def _read(self, use_cache: bool) -> dict[str, Account]:
        try:
            # One open file for stat and read, so the signature matches what we parse.
            f = open(self.path, "rb")
        except FileNotFoundError:
            return {}
        with f:
            st = os.fstat(f.fileno())
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self._cache
            if use_cache and cached is not None and cached[0] == sig:
                return cached[1]
            try:
                text = f.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AccountFileError(f"accounts file {self.path} is not UTF-8") from exc
        accounts = parse_accounts(text, self.path)
        self._cache = (sig, accounts)
        return accounts

    def get(self, name: str) -> Account | None:
        return self._read(use_cache=True).get(name)

    def list(self) -> tuple[Account, ...]:
        return tuple(sorted(self._read(use_cache=True).values(), key=lambda a: a.name))

    # -- writing

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # A side file, since the accounts file itself is replaced on every write. flock
        # (unlike lockf) also excludes other threads of this process using their own fd.
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _update(self, change: Callable[[dict[str, Account]], T]) -> T:
        """Read-modify-write under the lock; ``change`` edits a fresh copy in place."""
        with self._locked():
            accounts = dict(self._read(use_cache=False))
            result = change(accounts)
            write_private(self.path, dump_accounts(accounts))
            self._cache = None  # next read picks up (and caches) what we wrote
            return result

    def _hash(self, name: str, password: str) -> str:
        check_password(name, password)
        return self._hasher.hash(password)

    def add(self, name: str, role: Role, password: str) -> Account:
        check_name(name)
        role = parse_role(role)
        if self.get(name) is not None:  # fail before the slow hash; checked again below
            raise DuplicateAccount(f"account {name!r} already exists")
        password_hash = self._hash(name, password)
        # A random first epoch: a removed and re-created account must not accept the old
        # account's sessions.
        account = Account(name, role, password_hash, secrets.randbits(32))

        def change(accounts: dict[str, Account]) -> Account:
            if name in accounts:
                raise DuplicateAccount(f"account {name!r} already exists")
            accounts[name] = account
            return account

        return self._update(change)

    def _change_account(self, name: str, edit: Callable[[Account], Account]) -> Account:
        def change(accounts: dict[str, Account]) -> Account:
            if name not in accounts:
                raise UnknownAccount(f"no account {name!r}")
            accounts[name] = edit(accounts[name])
            return accounts[name]

        return self._update(change)

    def set_password(self, name: str, password: str) -> Account:
        if self.get(name) is None:
            raise UnknownAccount(f"no account {name!r}")
        password_hash = self._hash(name, password)
        return self._change_account(
            name,
            lambda a: replace(a, password_hash=password_hash, session_epoch=a.session_epoch + 1),
        )

    def set_role(self, name: str, role: Role) -> Account:
        role = parse_role(role)
        return self._change_account(
            name, lambda a: replace(a, role=role, session_epoch=a.session_epoch + 1)
        )

    def remove(self, name: str) -> None:
        def change(accounts: dict[str, Account]) -> None:
            if accounts.pop(name, None) is None:
                raise UnknownAccount(f"no account {name!r}")

        self._update(change)

    def issue_token(self, name: str, label: str, now: datetime | None = None) -> str:
        """A new API token for ``name``; returned only here, only its hash is kept."""
        check_label(label)
        token = new_token()
        entry = ApiToken(label, hash_token(token), now or datetime.now(UTC))

        def edit(a: Account) -> Account:
            if label in a.token_labels():
                raise DuplicateToken(f"account {name!r} already has a token labelled {label!r}")
            return replace(a, tokens=(*a.tokens, entry))

        self._change_account(name, edit)
        return token

    def revoke_token(self, name: str, label: str) -> None:
        def edit(a: Account) -> Account:
            if label not in a.token_labels():
                raise UnknownToken(f"account {name!r} has no token labelled {label!r}")
            return replace(a, tokens=tuple(t for t in a.tokens if t.label != label))

        self._change_account(name, edit)

    # -- verifying

    def _verify_hash(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def verify_password(self, name: str, password: str) -> Account | None:
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_CHARS:
            return None
        account = self.get(name) if isinstance(name, str) else None
        if account is None:
            # Same Argon2 work as for a real account, so timing does not tell which names
            # exist.
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
            self._verify_hash(self._dummy_hash, password)
            return None
        if not self._verify_hash(account.password_hash, password):
            return None
        if self._hasher.check_needs_rehash(account.password_hash):
            account = self._rehash(account, password)
        return account

    def _rehash(self, account: Account, password: str) -> Account:
        new_hash = self._hasher.hash(password)
        old_hash = account.password_hash

        def change(accounts: dict[str, Account]) -> Account | None:
            current = accounts.get(account.name)
            if current is None or current.password_hash != old_hash:
                return current  # changed meanwhile: leave the newer state alone
            accounts[account.name] = replace(current, password_hash=new_hash)
            return accounts[account.name]

        try:
            updated = self._update(change)
        except OSError as exc:
            # A read-only accounts file must not stop sign-in; the upgrade waits.
            log.warning("could not rehash the password of %s: %s", account.name, exc)
            return account
        return updated or account

    def verify_token(self, token: str) -> Account | None:
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            return None
        wanted = hash_token(token)
        found = None
        for account in self._read(use_cache=True).values():
            for t in account.tokens:
                if hmac.compare_digest(t.token_hash, wanted):
                    found = account
        return found
