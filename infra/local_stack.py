"""The local stack behind ``make run`` / ``make stop``: a Kafka broker, Triton (when
``CITYSTREAM_TRITON_URL`` names a local address), the worker and, with
``CITYSTREAM_VISION_ENABLED``, the vision stage.

Everything lives under ``Settings.var_dir`` (data, logs, pid files); Kafka's jars are
cached under ``Settings.cache_dir``. ``up`` reuses whatever is already running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from infra.services import KafkaBroker
from infra.triton import TritonServer
from infra.worker_process import worker_ready
from streams.settings import Settings


def _broker(settings: Settings) -> KafkaBroker:
    first = settings.kafka_bootstrap_servers.split(",")[0]
    port = urlparse(f"//{first}").port or 9092
    return KafkaBroker(
        settings.var_dir / "kafka", settings.cache_dir, port=port, controller_port=port + 1
    )


def _triton(settings: Settings) -> TritonServer:
    """Triton at the settings' gRPC address; its HTTP port is one below, metrics one above
    (Triton's own defaults are 8000/8001/8002)."""
    grpc_port = urlparse(f"//{settings.triton_url or '127.0.0.1:8001'}").port or 8001
    return TritonServer(
        settings.var_dir / "triton",
        settings.model_repository,
        http_port=grpc_port - 1,
        grpc_port=grpc_port,
        metrics_port=grpc_port + 1,
        cache_dir=settings.cache_dir,
    )


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_process(
    settings: Settings, name: str, command: list[str], ready: Callable[[], bool],
    timeout_s: float,
) -> int:
    """``citystream <command>`` in its own session (it survives the shell that ran `make
    run`), its pid in <var_dir>/run/<name>.pid and its log in <var_dir>/log/<name>.log;
    reused when already running. Returns once ``ready()`` says so."""
    run_dir = settings.var_dir / "run"
    log_dir = settings.var_dir / "log"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    pid_file = run_dir / f"{name}.pid"
    log_file = log_dir / f"{name}.log"
    pid = _pid_alive(pid_file)
    if pid is None:
        log = log_file.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pid = proc.pid
        pid_file.write_text(str(pid))
    deadline = time.monotonic() + timeout_s
    while not ready():
        if _pid_alive(pid_file) is None:
            raise RuntimeError(f"the {name} exited; see {log_file}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {name} is not ready after {timeout_s}s; see {log_file}")
        time.sleep(0.5)
    return pid


def stop_process(settings: Settings, name: str, timeout_s: float = 30) -> bool:
    pid_file = settings.var_dir / "run" / f"{name}.pid"
    pid = _pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)  # it finishes its batch; uncommitted messages come again
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid_file) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid_file) is not None:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def start_worker(settings: Settings, timeout_s: float = 90) -> int:
    return start_process(settings, "worker", ["worker"], lambda: worker_ready(settings),
                         timeout_s)


def stop_worker(settings: Settings, timeout_s: float = 30) -> bool:
    return stop_process(settings, "worker", timeout_s)


def vision_ready(settings: Settings) -> bool:
    """The vision stage has checked its models and joined its group (it writes this file
    then, and removes it when it stops)."""
    return (settings.var_dir / "run" / "vision.ready").is_file()


def start_vision(settings: Settings, timeout_s: float = 180) -> int:
    if _pid_alive(settings.var_dir / "run" / "vision.pid") is None:
        # Left by a stage that was killed: not this start's readiness.
        (settings.var_dir / "run" / "vision.ready").unlink(missing_ok=True)
    return start_process(settings, "vision", ["vision", "--metrics-port",
                                               str(settings.web_port + 2)],
                         lambda: vision_ready(settings), timeout_s)


def stack_command(action: str, settings: Settings) -> int:
    broker = _broker(settings)
    if action == "up":
        broker.start()
        print(f"kafka      {broker.bootstrap} (log {broker.log_file})")
        if settings.triton_url and settings.dispatch_enabled:
            triton = _triton(settings)
            triton.start(timeout_s=300)  # the first start builds its environment
            print(f"triton     grpc {triton.grpc_url}, http {triton.http_url} "
                  f"(log {triton.log_file})")
        pid = start_worker(settings)
        print(
            f"worker     pid {pid}, http://{settings.web_host}:{settings.web_port}/metrics "
            f"(log {settings.var_dir / 'log' / 'worker.log'})"
        )
        if settings.vision_enabled:
            pid = start_vision(settings)
            print(f"vision     pid {pid}, http://{settings.web_host}:{settings.web_port + 2}"
                  f"/metrics (log {settings.var_dir / 'log' / 'vision.log'})")
        return 0
    if action == "down":
        print("vision     stopped" if stop_process(settings, "vision")
              else "vision     was not running")
        print("worker     stopped" if stop_worker(settings) else "worker     was not running")
        triton = _triton(settings)
        if triton.pid() is not None:
            triton.stop()
            print("triton     stopped")
        was_running = broker.is_running()
        broker.stop()
        print("kafka      stopped" if was_running else "kafka      was not running")
        return 0
    print(f"kafka      {'running at ' + broker.bootstrap if broker.is_running() else 'stopped'}")
    triton = _triton(settings)
    print(f"triton     {'ready at ' + triton.grpc_url if triton.ready else 'not running'}")
    print(f"worker     {'ready' if worker_ready(settings) else 'not ready'}")
    print(f"vision     {'ready' if vision_ready(settings) else 'not running'}")
    return 0
