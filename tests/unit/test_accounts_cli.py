"""``citystream users``: round trips through register() + run() on files in tmp_path."""

from __future__ import annotations

import argparse
import io
import re
import stat
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from streams.settings import Settings
from web import accounts_cli
from web.accounts import AccountStore, Role

PASSWORD = "correct horse battery"


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(var_dir=tmp_path, users_file=None, session_secret=None)


@pytest.fixture
def store(settings: Settings) -> AccountStore:
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    return AccountStore(settings.accounts_path, hasher)


@pytest.fixture
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="citystream")
    accounts_cli.register(p.add_subparsers(dest="command", required=True))
    return p


@pytest.fixture
def cli(parser, settings, store, monkeypatch, capsys):
    """Run ``citystream users ...``: (exit code, stdout, stderr)."""

    def call(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        args = parser.parse_args(["users", *argv])
        assert args.command == "users"
        code = accounts_cli.run(args, settings, store)
        out, err = capsys.readouterr()
        return code, out, err

    return call


def test_add_and_list(cli, store):
    code, out, _ = cli("add", "amy", "--role", "analyst", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0 and "amy" in out
    assert PASSWORD not in out
    assert store.verify_password("amy", PASSWORD).role is Role.ANALYST
    cli("token", "amy", "--label", "ci")
    code, out, _ = cli("list")
    assert code == 0
    assert re.search(r"^amy\s+analyst\s+ci$", out, re.M)
    assert "$argon2" not in out and "token_hash" not in out


def test_default_store_is_settings_accounts_path(parser, settings, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    args = parser.parse_args(["users", "add", "bob", "--role", "admin", "--password-stdin"])
    assert accounts_cli.run(args, settings) == 0
    assert settings.accounts_path == settings.var_dir / "users.json"
    assert AccountStore(settings.accounts_path).get("bob").role is Role.ADMIN
    assert stat.S_IMODE(settings.accounts_path.stat().st_mode) == 0o600


def test_add_generate_prints_password_once(cli, store):
    code, out, _ = cli("add", "bob", "--role", "dispatcher", "--generate")
    assert code == 0
    password = re.search(r"shown only now\): (\S+)$", out, re.M).group(1)
    assert len(password) == 20
    assert store.verify_password("bob", password) is not None


def test_add_prompts_on_a_tty(cli, store, monkeypatch):
    monkeypatch.setattr("sys.stdin", FakeTty())
    answers = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert cli("add", "bob", "--role", "dispatcher")[0] == 0
    assert store.verify_password("bob", PASSWORD) is not None


def test_prompt_mismatch_refused(cli, store, monkeypatch):
    monkeypatch.setattr("sys.stdin", FakeTty())
    answers = iter([PASSWORD, PASSWORD + "!"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    code, _, err = cli("add", "bob", "--role", "dispatcher")
    assert code == 2 and "differ" in err
    assert store.get("bob") is None


def test_no_tty_needs_a_flag(cli, store):
    code, _, err = cli("add", "bob", "--role", "dispatcher", stdin=PASSWORD + "\n")
    assert code == 2 and "--password-stdin" in err
    assert store.get("bob") is None


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (("add", "bob", "--role", "admin", "--password-stdin"), "short\n", "too short"),
        (("add", "bob", "--role", "admin", "--password-stdin"), "", "no password"),
        (("add", "Bob!", "--role", "admin", "--generate"), None, "invalid account name"),
        (("passwd", "nobody", "--generate"), None, "no account"),
        (("remove", "nobody"), None, "no account"),
        (("token", "nobody", "--label", "ci"), None, "no account"),
        (("revoke", "nobody", "--label", "ci"), None, "no account"),
    ],
)
def test_errors_exit_2(cli, argv, stdin, message):
    code, out, err = cli(*argv, stdin=stdin)
    assert code == 2
    assert message in err and err.startswith("citystream users: ")


def test_duplicate_refused(cli):
    assert cli("add", "bob", "--role", "admin", "--generate")[0] == 0
    code, _, err = cli("add", "bob", "--role", "admin", "--generate")
    assert code == 2 and "already exists" in err


def test_argparse_refuses_bad_usage(parser):
    for argv in (
        ["users"],
        ["users", "add", "bob"],
        ["users", "add", "bob", "--role", "root"],
        ["users", "add", "bob", "--role", "admin", "--generate", "--password-stdin"],
        ["users", "token", "bob"],
    ):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2


def test_passwd(cli, store):
    cli("add", "bob", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    epoch = store.get("bob").session_epoch
    code, out, _ = cli("passwd", "bob", "--generate")
    assert code == 0
    new = re.search(r"shown only now\): (\S+)$", out, re.M).group(1)
    assert store.verify_password("bob", PASSWORD) is None
    assert store.verify_password("bob", new) is not None
    assert store.get("bob").session_epoch == epoch + 1


def test_token_and_revoke(cli, store):
    cli("add", "bob", "--role", "analyst", "--generate")
    code, out, err = cli("token", "bob", "--label", "ci")
    assert code == 0
    token = out.strip()
    assert token.startswith("cst_") and "cannot be shown again" in err
    assert store.verify_token(token).name == "bob"
    assert token not in store.path.read_text()
    assert cli("token", "bob", "--label", "ci")[0] == 2  # labels are unique per account
    assert cli("revoke", "bob", "--label", "ci")[0] == 0
    assert store.verify_token(token) is None
    assert cli("revoke", "bob", "--label", "ci")[0] == 2


def test_remove(cli, store):
    cli("add", "bob", "--role", "analyst", "--generate")
    assert cli("remove", "bob")[0] == 0
    assert store.get("bob") is None
    assert "no accounts" in cli("list")[1]


# --- ensure-local -------------------------------------------------------------------------


def _creds(path: Path) -> dict[str, tuple[str, str]]:
    rows = [line.split(" ") for line in path.read_text().splitlines()]
    assert all(len(r) == 3 for r in rows)
    return {name: (role, pw) for role, name, pw in rows}


def test_ensure_local_creates_then_keeps(cli, store, tmp_path):
    creds = tmp_path / "secrets" / "local-users.txt"
    code, out, _ = cli("ensure-local", "--credentials", str(creds))
    assert code == 0
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    found = _creds(creds)
    assert set(found) == {"dispatcher", "analyst", "admin"}
    for name, (role, password) in found.items():
        assert role == name
        assert store.verify_password(name, password).role is Role(name)
        assert password not in out
    assert str(creds) in out and out.count("created") == 3

    epochs = {a.name: a.session_epoch for a in store.list()}
    token_file = tmp_path / "api-token"
    token = token_file.read_text()
    assert store.verify_token(token).role is Role.ANALYST  # for `citystream query`
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    code, out, _ = cli("ensure-local", "--credentials", str(creds))
    assert code == 0 and out.count("kept") == 4  # three accounts and the token
    assert _creds(creds) == found
    assert token_file.read_text() == token
    assert {a.name: a.session_epoch for a in store.list()} == epochs  # nobody signed out

    store.revoke_token("analyst", "local-cli")
    cli("ensure-local", "--credentials", str(creds))
    assert token_file.read_text() != token
    assert store.verify_token(token_file.read_text()).name == "analyst"


def test_ensure_local_resets_passwords_it_does_not_know(cli, store, tmp_path):
    creds = tmp_path / "creds.txt"
    store.add("admin", Role.ADMIN, PASSWORD)  # made by hand; its password is not in the file
    store.add("analyst", Role.DISPATCHER, PASSWORD)  # wrong role for the demo
    creds.write_text("analyst analyst wrong-password-here\n")
    creds.chmod(0o644)
    code, out, _ = cli("ensure-local", "--credentials", str(creds))
    assert code == 0
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    found = _creds(creds)
    for name in ("dispatcher", "analyst", "admin"):
        assert store.verify_password(name, found[name][1]).role is Role(name)
    assert store.verify_password("admin", PASSWORD) is None
    assert re.search(r"^analyst: password reset, role set to analyst$", out, re.M)
    assert re.search(r"^admin: password reset$", out, re.M)
    assert re.search(r"^dispatcher: created$", out, re.M)
