"""Start and stop a local NVIDIA Triton Inference Server for development and tests.

The server binary is the tritonserver 2.51 bundled in the ``nvidia-pytriton`` wheel, which
ships only the Python backend and runs on the CPU. That wheel needs numpy < 2 while our main
environment has numpy 2, so the server gets its own virtualenv under the cache directory
(``<cache_dir>/triton-env``), created once and reused (a stamp file records its pins).

Models are served through ``configs/local.pbtxt`` (``--model-config-name=local``): the Python
backend running ``model.onnx`` with onnxruntime from that virtualenv (models/triton/model.py).

Two details the Python-backend stub needs here:
* it links ``libpython3.X.so``: the running Python's own ``lib`` directory must come first on
  LD_LIBRARY_PATH, or the loader picks Debian's libpython 3.11.2, which fails at start-up with
  a ``_recursion_count`` error against the pyenv 3.11.7 standard library;
* it imports numpy/onnxruntime: PYTHONPATH points at the server env's site-packages.

CLI: python -m infra.triton {start,stop,status} --home DIR --repository DIR [--http-port N ...]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from infra.services import _Daemon, _port_open
from models.repository import LOCAL_CONFIG
from streams.settings import Settings

# The server env's pins: pytriton 0.7.0 bundles tritonserver 2.51 and wants numpy < 2;
# onnxruntime 1.32.0 (numpy >= 1.21.6) runs our opset-17 models there on numpy 1.26.4.
SERVER_ENV_PINS = ("nvidia-pytriton==0.7.0", "numpy==1.26.4", "onnxruntime==1.32.0")
SERVER_ENV_DIR = "triton-env"

log = logging.getLogger(__name__)


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _python_lib_dir() -> Path:
    """The running Python's own lib dir holding its shared libpython (the stub links it)."""
    libdir = Path(str(sysconfig.get_config_var("LIBDIR")))
    library = str(sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY"))
    if ".so" not in library or not (libdir / library).is_file():
        raise RuntimeError(
            f"the Triton Python-backend stub needs a shared libpython {_python_tag()}, but "
            f"{libdir / library} is not one (build Python with --enable-shared)"
        )
    return libdir


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ServerEnv:
    """The cached virtualenv that provides tritonserver and the Python backend's packages."""

    def __init__(self, cache_dir: Path, pins: Sequence[str] = SERVER_ENV_PINS) -> None:
        self.cache_dir = Path(cache_dir).resolve()
        self.pins = tuple(pins)
        self.path = self.cache_dir / SERVER_ENV_DIR

    @property
    def stamp_file(self) -> Path:
        return self.path / ".citystream-stamp"

    @property
    def stamp(self) -> str:
        return f"python {sys.version.split()[0]}\n" + "\n".join(self.pins) + "\n"

    @property
    def site_packages(self) -> Path:
        return self.path / "lib" / f"python{_python_tag()}" / "site-packages"

    @property
    def dist_dir(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.dist_dir / "bin" / "tritonserver"

    @property
    def libs_dir(self) -> Path:
        return self.site_packages / "nvidia_pytriton.libs"

    @property
    def backends_dir(self) -> Path:
        return self.path / "backends"

    def is_ready(self) -> bool:
        try:
            return self.stamp_file.read_text() == self.stamp and self.binary.is_file()
        except OSError:
            return False

    def ensure(self) -> Path:
        """Create the env once (under a lock: parallel test sessions share the cache)."""
        if self.is_ready():
            return self.path
        with _file_lock(self.cache_dir / f"{SERVER_ENV_DIR}.lock"):
            if self.is_ready():
                return self.path
            started = time.monotonic()
            log.info("creating the Triton server env %s (%s)", self.path, ", ".join(self.pins))
            shutil.rmtree(self.path, ignore_errors=True)
            self._run([sys.executable, "-m", "venv", str(self.path)])
            self._run(
                [
                    str(self.path / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    *self.pins,
                ]
            )
            self._install_backend()
            self.stamp_file.write_text(self.stamp)
            log.info("Triton server env ready in %.0f s", time.monotonic() - started)
        return self.path

    def _install_backend(self) -> None:
        """A backends dir with the Python backend and the stub for our Python version.

        The wheel keeps stubs for several Pythons aside; the backend looks for
        ``triton_python_backend_stub`` next to ``libtriton_python.so`` (pytriton does the same).
        """
        stub = self.dist_dir / "python_backend_stubs" / _python_tag() / "triton_python_backend_stub"
        if not stub.is_file():
            raise RuntimeError(f"nvidia-pytriton has no Python-backend stub for {_python_tag()}")
        target = self.backends_dir / "python"
        shutil.rmtree(self.backends_dir, ignore_errors=True)
        shutil.copytree(self.dist_dir / "backends" / "python", target)
        shutil.copy2(stub, target / "triton_python_backend_stub")

    @staticmethod
    def _run(argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:4])} ... failed (exit {result.returncode}):\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )


class TritonServer(_Daemon):
    """tritonserver serving ``repository`` on 127.0.0.1, with state and logs under ``home``."""

    name = "tritonserver"

    def __init__(
        self,
        home: Path,
        repository: Path,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        cache_dir: Path | None = None,
        model_config_name: str = LOCAL_CONFIG,
    ) -> None:
        self.home = Path(home).resolve()
        self.repository = Path(repository).resolve()
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.port = http_port
        self.model_config_name = model_config_name
        self.env = ServerEnv(Path(cache_dir) if cache_dir else Settings().cache_dir)

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "tritonserver.log"

    @property
    def http_url(self) -> str:
        """host:port, as tritonclient.http wants it."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def urls(self) -> dict[str, str]:
        return {"http": self.http_url, "grpc": self.grpc_url, "metrics": self.metrics_url}

    @property
    def ready(self) -> bool:
        """Server up and every model loaded (strict readiness)."""
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def argv(self) -> list[str]:
        # One shared-memory prefix per home: two servers on a machine must not share regions.
        shm_prefix = "cs" + hashlib.sha1(str(self.home).encode()).hexdigest()[:10] + "_"
        return [
            str(self.env.binary),
            f"--model-repository={self.repository}",
            f"--model-config-name={self.model_config_name}",
            f"--backend-directory={self.env.backends_dir}",
            f"--cache-directory={self.env.dist_dir / 'caches'}",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--exit-timeout-secs=5",
            f"--log-file={self.log_file}",
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        previous = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = ":".join(
            [str(_python_lib_dir()), str(self.env.libs_dir), *([previous] if previous else [])]
        )
        env["PYTHONPATH"] = str(self.env.site_packages)
        env["PYTHONNOUSERSITE"] = "1"
        return env

    def error_lines(self, limit: int = 10) -> list[str]:
        """The server log's error lines (model load failures), without the status tables."""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return []
        errors = [line for line in lines if line.startswith("E") and "CudaDriver" not in line]
        return errors[-limit:]

    def _wait_ready(self, pid: int, timeout_s: float, probe: Callable[[], bool]) -> None:
        try:
            super()._wait_ready(pid, timeout_s, probe)
        except RuntimeError as exc:
            # The tail of the log is mostly status tables; the cause is in its error lines.
            errors = "\n".join(self.error_lines()) or "(none)"
            raise RuntimeError(f"{exc}\n--- errors in {self.log_file} ---\n{errors}") from exc

    def start(self, timeout_s: float = 60) -> None:
        pid = self.pid()
        if pid is not None:
            self._wait_ready(pid, timeout_s, lambda: self.ready)
            return
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        taken = [p for p in ports if _port_open(p)]
        if taken:
            raise RuntimeError(
                f"ports {taken} are taken by a process that is not the tritonserver of {self.home}"
            )
        if not self.repository.is_dir():
            raise RuntimeError(f"model repository {self.repository} does not exist")
        self.env.ensure()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.log_file.exists():
            # tritonserver appends; keep one previous run so errors shown are this run's.
            self.log_file.replace(self.log_file.with_suffix(".log.1"))
        pid = self._launch(self.argv(), env=self.environment())
        self._wait_ready(pid, timeout_s, lambda: self.ready)


# ----------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.triton", description="Local Triton Inference Server (CPU)."
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--home", type=Path, required=True, help="state and log dir")
    parser.add_argument("--repository", type=Path, help="model repository (for start)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: settings")
    parser.add_argument("--model-config-name", default=LOCAL_CONFIG)
    parser.add_argument("--timeout", type=float, default=120, help="start timeout (s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.action == "start" and args.repository is None:
        parser.error("start needs --repository")

    server = TritonServer(
        args.home,
        args.repository or args.home,  # only start reads it
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        cache_dir=args.cache_dir,
        model_config_name=args.model_config_name,
    )
    where = f"http {server.http_url}, grpc {server.grpc_url}, metrics {server.metrics_url}"
    if args.action == "status":
        pid = server.pid()
        if pid is not None and server.ready:
            print(f"tritonserver: ready, pid {pid}, {where}")
            return 0
        state = f"process {pid} alive but not ready" if pid else "not running"
        print(f"tritonserver: {state} (home {server.home})")
        return 3
    if args.action == "stop":
        pid = server.pid()
        server.stop()
        print(f"tritonserver: stopped pid {pid}" if pid else "tritonserver: not running")
        return 0
    was_running = server.pid() is not None
    try:
        server.start(timeout_s=args.timeout)
    except RuntimeError as exc:
        print(f"tritonserver: start failed: {exc}", file=sys.stderr)
        return 1
    verb = "already running" if was_running else "started"
    print(f"tritonserver: {verb}, pid {server.pid()}, {where}, log {server.log_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
