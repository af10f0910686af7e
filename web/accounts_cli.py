"""``citystream users``: manage web accounts and API tokens.

Passwords come from a prompt (on a terminal), one line of stdin (``--password-stdin``,
for scripts) or are generated (``--generate``) and shown once; never from an argument,
which would land in shell history and ``ps``.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import string
import sys
from pathlib import Path

from streams.settings import Settings
from web.accounts import AccountError, AccountStore, Role, parse_role, write_private

GENERATED_PASSWORD_CHARS = 20
_ALPHABET = string.ascii_letters + string.digits  # 20 of these: ~119 bits
# The local demo stack's accounts: each is named after its role.
LOCAL_ACCOUNTS = (Role.DISPATCHER, Role.ANALYST, Role.ADMIN)


class CliError(Exception):
    """A usage problem worth a message and exit code 2."""


def generate_password() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(GENERATED_PASSWORD_CHARS))


def _password_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password-stdin", action="store_true", help="read the password from one line of stdin"
    )
    group.add_argument(
        "--generate", action="store_true", help="generate a random password and print it once"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``users`` command to the main CLI's subparsers."""
    users = subparsers.add_parser("users", help="web accounts (roles, passwords, API tokens)")
    sub = users.add_subparsers(dest="users_command", required=True)
    roles = [r.value for r in Role]

    p = sub.add_parser("add", help="create an account (password prompted unless a flag says)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=roles)
    _password_flags(p)

    p = sub.add_parser("passwd", help="set a new password (signs the account out everywhere)")
    p.add_argument("name")
    _password_flags(p)

    p = sub.add_parser("remove", help="delete an account and its API tokens")
    p.add_argument("name")

    sub.add_parser("list", help="accounts, roles and token labels")

    p = sub.add_parser("token", help="issue an API token (printed once)")
    p.add_argument("name")
    p.add_argument("--label", required=True, help="names the token, to revoke it later")

    p = sub.add_parser("revoke", help="revoke an API token")
    p.add_argument("name")
    p.add_argument("--label", required=True)

    p = sub.add_parser(
        "ensure-local",
        help="local demo stack: make sure dispatcher, analyst and admin accounts exist, "
        "keeping their passwords in a 0600 file",
    )
    p.add_argument("--credentials", required=True, type=Path, help="file of role name password")


def _new_password(args: argparse.Namespace, name: str) -> tuple[str, bool]:
    """The password the operator chose, and whether it was generated (so must be shown)."""
    if args.generate:
        return generate_password(), True
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise CliError("no password on stdin")
        return line.rstrip("\r\n"), False
    if not sys.stdin.isatty():
        raise CliError("stdin is not a terminal: use --password-stdin or --generate")
    try:
        first = getpass.getpass(f"password for {name}: ")
        second = getpass.getpass("again: ")
    except EOFError as exc:
        raise CliError("no password given") from exc
    if first != second:
        raise CliError("the passwords differ")
    return first, False


def _show_generated(name: str, password: str) -> None:
    print(f"password for {name} (shown only now): {password}")


def read_credentials(path: Path) -> dict[str, str]:
    """name -> password from a ``role name password`` file (missing file: empty)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            found[parts[1]] = parts[2]
    return found


def ensure_local(store: AccountStore, credentials: Path) -> dict[str, str]:
    """Make the demo accounts usable with the passwords in ``credentials``; what happened
    to each (created, kept, reset, role fixed)."""
    known = read_credentials(credentials)
    passwords: dict[str, str] = {}
    outcome: dict[str, str] = {}
    for role in LOCAL_ACCOUNTS:
        name = role.value
        account = store.get(name)
        if account is None:
            passwords[name] = generate_password()
            store.add(name, role, passwords[name])
            outcome[name] = "created"
            continue
        notes = []
        if account.role is not role:
            store.set_role(name, role)
            notes.append(f"role set to {role.value}")
        password = known.get(name)
        if password is not None and store.verify_password(name, password) is not None:
            passwords[name] = password
            notes.insert(0, "kept")
        else:
            # Its password is nowhere we can show it: the demo needs one that works.
            passwords[name] = generate_password()
            store.set_password(name, passwords[name])
            notes.insert(0, "password reset")
        outcome[name] = ", ".join(notes)
    lines = "".join(f"{r.value} {r.value} {passwords[r.value]}\n" for r in LOCAL_ACCOUNTS)
    write_private(credentials, lines.encode("utf-8"))
    return outcome


LOCAL_TOKEN_LABEL = "local-cli"


def ensure_local_token(store: AccountStore, path: Path) -> str:
    """The local analyst's API token for `citystream query` (kept in ``path``, 0600): the
    one there if it still works, else a new one."""
    if path.exists():
        token = path.read_text("utf-8").strip()
        account = store.verify_token(token)
        if account is not None and account.role is Role.ANALYST:
            return "kept"
    account = store.get(Role.ANALYST.value)
    if account is None:
        raise CliError("no local analyst account: run ensure-local first")
    if LOCAL_TOKEN_LABEL in account.token_labels():
        store.revoke_token(account.name, LOCAL_TOKEN_LABEL)
    token = store.issue_token(account.name, LOCAL_TOKEN_LABEL)
    write_private(path, token.encode("utf-8"))
    return "issued"


def _run(args: argparse.Namespace, store: AccountStore, token_path: Path) -> int:
    command = args.users_command
    if command == "add":
        password, generated = _new_password(args, args.name)
        account = store.add(args.name, parse_role(args.role), password)
        print(f"added {account.name} ({account.role.value})")
        if generated:
            _show_generated(account.name, password)
    elif command == "passwd":
        if store.get(args.name) is None:  # before prompting for nothing
            raise AccountError(f"no account {args.name!r}")
        password, generated = _new_password(args, args.name)
        store.set_password(args.name, password)
        print(f"password of {args.name} changed; its sessions are signed out")
        if generated:
            _show_generated(args.name, password)
    elif command == "remove":
        store.remove(args.name)
        print(f"removed {args.name}")
    elif command == "list":
        accounts = store.list()
        if not accounts:
            print(f"no accounts in {store.path}")
        for a in accounts:
            print(f"{a.name:<32} {a.role.value:<10} {','.join(a.token_labels()) or '-'}")
    elif command == "token":
        token = store.issue_token(args.name, args.label)
        print(token)
        print(
            f"API token {args.label!r} for {args.name}: it cannot be shown again; send it as "
            "'Authorization: Bearer <token>'",
            file=sys.stderr,
        )
    elif command == "revoke":
        store.revoke_token(args.name, args.label)
        print(f"revoked token {args.label!r} of {args.name}")
    elif command == "ensure-local":
        outcome = ensure_local(store, args.credentials)
        for name, what in outcome.items():
            print(f"{name}: {what}")
        print(f"passwords of the local accounts are in {args.credentials} (mode 0600)")
        what = ensure_local_token(store, token_path)
        print(f"analyst API token for `citystream query`: {what}, in {token_path} (mode 0600)")
    else:
        raise CliError(f"unknown users command {command!r}")
    return 0


def run(args: argparse.Namespace, settings: Settings, store: AccountStore | None = None) -> int:
    """Run a ``users`` command; ``store`` overrides the one at settings.accounts_path."""
    try:
        return _run(
            args, store or AccountStore(settings.accounts_path), settings.var_dir / "api-token"
        )
    except (AccountError, CliError, OSError) as exc:
        print(f"citystream users: {exc}", file=sys.stderr)
        return 2
