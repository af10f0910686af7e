"""``citystream worker`` as a child process, as it runs in production.

Used by the integration tests and the benchmark; the worker's own HTTP endpoints
(/readyz, /query, /metrics) are how they watch it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from streams.query import api_token, query_worker
from streams.settings import REPO_ROOT, Settings


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that makes a child process read exactly these settings."""
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith("CITYSTREAM_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, tuple | list):
            value = json.dumps(list(value))  # pydantic-settings reads sequences as JSON
        env[f"CITYSTREAM_{name.upper()}"] = str(value)
    return env


def worker_ready(settings: Settings) -> bool:
    """True when the worker at the settings' web address says it is ready (/readyz)."""
    url = f"http://{settings.web_host}:{settings.web_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(json.load(resp).get("ready"))
    except (urllib.error.URLError, OSError, ValueError):
        return False  # not listening yet, or 503 while partitions or the sink are missing


def metric_total(exposition: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples (Prometheus text format) whose labels include ``labels``."""
    total = 0.0
    for line in exposition.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class WorkerProcess:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def credentials(self) -> Path:
        return self.settings.var_dir / "local-credentials.txt"

    def ensure_accounts(self) -> dict[str, str]:
        """The local stack's accounts, as `make run` makes them: name -> password, and the
        analyst's API token in <var_dir>/api-token for queries."""
        from web.accounts import AccountStore
        from web.accounts_cli import ensure_local, ensure_local_token, read_credentials

        store = AccountStore(self.settings.accounts_path)
        ensure_local(store, self.credentials)
        ensure_local_token(store, self.settings.var_dir / "api-token")
        return read_credentials(self.credentials)

    def start(self, timeout_s: float = 120) -> float:
        """Start the worker and wait until /readyz says ready; returns that moment (monotonic)."""
        self.ensure_accounts()
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=settings_env(self.settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if worker_ready(self.settings):
                return time.monotonic()
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def url(self, path: str) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}{path}"

    def query(self, sql: str) -> list[dict[str, Any]]:
        return query_worker(
            self.settings.web_host, self.settings.web_port, sql, api_token(self.settings)
        ).dicts()

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url("/metrics"), timeout=10) as resp:
            return resp.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        return metric_total(self.metrics_text(), name, **labels)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit (a crash)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
