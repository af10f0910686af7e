"""Start and stop the local Kafka broker and ClickHouse server used for development and tests.

Both run as plain detached processes out of a project-local "home" directory (no Docker, no
system service): Kafka from Maven Central jars on the JVM, ClickHouse from Debian's
clickhouse-server package. A pid file in the home lets a later call (another `make run`, a
test session) find and reuse a server that is already up instead of starting a second one.

CLI: python -m infra.services {kafka,clickhouse} {start,stop,status} --home DIR [--port N]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from streams.settings import Settings

# Current Kafka 4.x on Maven Central; verified with kafka-python 3.0.12 and aiokafka 0.14.
KAFKA_VERSION = "4.4.0"

INFRA_DIR = Path(__file__).resolve().parent
KAFKA_POM = INFRA_DIR / "kafka" / "pom.xml"
KAFKA_LOG4J = INFRA_DIR / "kafka" / "log4j.properties"
KAFKA_PROPERTIES_TEMPLATE = INFRA_DIR / "kafka" / "server.properties.template"
CLICKHOUSE_CONFIG_TEMPLATE = INFRA_DIR / "clickhouse" / "config.xml.template"
CLICKHOUSE_USERS = INFRA_DIR / "clickhouse" / "users.xml"
CLICKHOUSE_BINARY = Path("/usr/sbin/clickhouse-server")

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: two calls to free_port() may hand out the same one."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


# --------------------------------------------------------------------------- process helpers


def _port_open(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _pid_alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Exists but belongs to someone else: alive, and _cmdline() will tell it is not ours.
        return True
    # A zombie answers kill(0) but is dead for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path})"
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


def _render(template: Path, **values: object) -> str:
    return string.Template(template.read_text()).substitute({k: str(v) for k, v in values.items()})


def _require_binary(name: str, hint: str, extra: Sequence[Path] = ()) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in extra:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError(f"{name} not found: {hint}")


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    extra = [Path(java_home) / "bin" / "java"] if java_home else []
    return _require_binary(
        "java", "install a JDK 17+ (apt-get install openjdk-17-jdk-headless)", extra
    )


class _Daemon:
    """Pid-file bookkeeping shared by both servers."""

    name: str
    home: Path
    port: int

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        raise NotImplementedError

    @property
    def _out_file(self) -> Path:
        # stdout/stderr of the process: JVM crashes and early config errors land here,
        # before the process's own logging is set up.
        return self.home / "logs" / f"{self.name}.out"

    def _cmd_marker(self) -> str:
        """A string that must appear in the command line of our process (guards pid reuse)."""
        return str(self.home)

    def pid(self) -> int | None:
        """Pid of this home's server if its process is alive, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid) or self._cmd_marker() not in _cmdline(pid):
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None and _port_open(self.port)

    def _launch(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        self._out_file.parent.mkdir(parents=True, exist_ok=True)
        with self._out_file.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                # Own session: survives the caller (make, pytest) and ignores its Ctrl-C.
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait_ready(self, pid: int, timeout_s: float, probe: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise RuntimeError(
                    f"{self.name} (pid {pid}) exited during startup\n"
                    f"{_tail(self._out_file)}\n{_tail(self.log_file)}"
                )
            if _port_open(self.port) and probe():
                return
            time.sleep(0.5)
        # Do not leave a half-started server holding the ports.
        self.stop()
        raise RuntimeError(
            f"{self.name} not ready on port {self.port} after {timeout_s:.0f} s\n"
            f"{_tail(self._out_file)}\n{_tail(self.log_file)}"
        )

    def stop(self, timeout_s: float = 30) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout_s):
            log.warning(
                "%s (pid %d) ignored SIGTERM for %.0f s, killing", self.name, pid, timeout_s
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10)
        self.pid_file.unlink(missing_ok=True)

    @staticmethod
    def _wait_exit(pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return not _pid_alive(pid)


# --------------------------------------------------------------------------------- Kafka


class KafkaBroker(_Daemon):
    """Single-node KRaft broker+controller, run from Maven Central jars."""

    name = "kafka"

    def __init__(
        self,
        home: Path,
        cache_dir: Path,
        port: int = 9092,
        controller_port: int = 9093,
        version: str = KAFKA_VERSION,
    ) -> None:
        self.home = Path(home).resolve()
        self.cache_dir = Path(cache_dir).resolve()
        self.port = port
        self.controller_port = controller_port
        self.version = version

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / f"kafka-{self.version}" / "libs"

    def _cmd_marker(self) -> str:
        return str(self.properties_file)

    def fetch(self) -> Path:
        """Download the broker jars once; returns the libs dir (cached per version)."""
        libs = self.libs_dir
        if libs.is_dir():
            return libs
        mvn = _require_binary("mvn", "install Maven (apt-get install maven)")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Build in a temp sibling and rename: a killed fetch never leaves a half cache behind.
        staging = Path(tempfile.mkdtemp(prefix=f".kafka-{self.version}-", dir=self.cache_dir))
        try:
            # A copy of the pom so Maven writes nothing (target/) into the source tree.
            pom = staging / "pom.xml"
            shutil.copyfile(KAFKA_POM, pom)
            result = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    f"-Dkafka.version={self.version}",
                    f"-DoutputDirectory={staging / 'libs'}",
                ],
                cwd=staging,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 or not any((staging / "libs").glob("*.jar")):
                raise RuntimeError(
                    f"mvn failed to fetch Kafka {self.version} (exit {result.returncode}):\n"
                    f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
                )
            staging.chmod(0o755)  # mkdtemp makes it 0700; the cache may be shared
            try:
                staging.rename(libs.parent)
            except OSError:
                # Another process won the race; its copy is as good as ours.
                if not libs.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return libs

    def _java_argv(self, main: str, *args: str, heap: str = "512m") -> list[str]:
        return [
            _java(),
            f"-Xmx{heap}",
            f"-Dlog4j.configuration=file:{KAFKA_LOG4J}",
            f"-Dkafka.logs.dir={self.log_file.parent}",
            "-cp",
            f"{self.libs_dir}/*",
            main,
            *args,
        ]

    def _write_properties(self) -> None:
        self.properties_file.write_text(
            _render(
                KAFKA_PROPERTIES_TEMPLATE,
                port=self.port,
                controller_port=self.controller_port,
                log_dir=self.data_dir,
            )
        )

    def _format_storage(self) -> None:
        """Format the KRaft log dir once; a formatted dir holds meta.properties."""
        if (self.data_dir / "meta.properties").is_file():
            return

        def run(*args: str) -> str:
            result = subprocess.run(
                self._java_argv("kafka.tools.StorageTool", *args, heap="256m"),
                cwd=self.home,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"kafka StorageTool {args[0]} failed (exit {result.returncode}):\n"
                    f"{result.stdout}{result.stderr}"
                )
            return result.stdout.strip()

        cluster_id = run("random-uuid").splitlines()[-1].strip()
        # Not --standalone: controller.quorum.voters is set statically in server.properties.
        run("format", "-t", cluster_id, "-c", str(self.properties_file))

    def _admin_ready(self) -> bool:
        # Imported here so `status`/`stop` work without the Kafka client installed.
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id="citystream-infra-probe",
                request_timeout_ms=5000,
            )
        except (KafkaError, OSError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def start(self, timeout_s: float = 60) -> None:
        pid = self.pid()
        if pid is not None:
            # Already running (or still starting) from this home: reuse it, never restart.
            self._wait_ready(pid, timeout_s, self._admin_ready)
            return
        if _port_open(self.port) or _port_open(self.controller_port):
            raise RuntimeError(
                f"port {self.port} or {self.controller_port} is taken by a process that is not "
                f"the broker of {self.home}"
            )
        self.fetch()
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        self._format_storage()
        pid = self._launch(self._java_argv("kafka.Kafka", str(self.properties_file)))
        self._wait_ready(pid, timeout_s, self._admin_ready)


# ---------------------------------------------------------------------------- ClickHouse


class ClickHouseServer(_Daemon):
    """Debian's clickhouse-server (18.16) with config, data and logs under `home`."""

    name = "clickhouse"

    def __init__(self, home: Path, tcp_port: int = 9000, http_port: int = 8123) -> None:
        self.home = Path(home).resolve()
        self.tcp_port = tcp_port
        self.http_port = http_port
        self.port = tcp_port

    @property
    def url(self) -> str:
        return f"clickhouse://default@127.0.0.1:{self.tcp_port}"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def config_file(self) -> Path:
        return self.home / "config.xml"

    def _cmd_marker(self) -> str:
        return str(self.config_file)

    def _query_ready(self) -> bool:
        from clickhouse_driver import Client
        from clickhouse_driver.errors import Error

        client = Client(
            host="127.0.0.1", port=self.tcp_port, connect_timeout=2, send_receive_timeout=5
        )
        try:
            return bool(client.execute("SELECT 1") == [(1,)])
        except (Error, OSError, EOFError):
            return False
        finally:
            client.disconnect()

    def start(self, timeout_s: float = 30) -> None:
        pid = self.pid()
        if pid is not None:
            self._wait_ready(pid, timeout_s, self._query_ready)
            return
        binary = _require_binary(
            "clickhouse-server",
            "install Debian's clickhouse-server: apt-get install clickhouse-server",
            [CLICKHOUSE_BINARY],
        )
        if _port_open(self.tcp_port) or _port_open(self.http_port):
            raise RuntimeError(
                f"port {self.tcp_port} or {self.http_port} is taken by a process that is not "
                f"the ClickHouse server of {self.home}"
            )
        for sub in ("data", "tmp", "logs", "data/user_files", "data/format_schemas"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            _render(
                CLICKHOUSE_CONFIG_TEMPLATE,
                home=self.home,
                tcp_port=self.tcp_port,
                http_port=self.http_port,
            )
        )
        # users_config is resolved relative to config.xml.
        shutil.copyfile(CLICKHOUSE_USERS, self.home / "users.xml")
        pid = self._launch([binary, f"--config-file={self.config_file}"])
        self._wait_ready(pid, timeout_s, self._query_ready)


# ----------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.services", description="Local Kafka / ClickHouse servers."
    )
    parser.add_argument("service", choices=["kafka", "clickhouse"])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--home", type=Path, required=True, help="state dir of this server")
    parser.add_argument("--port", type=int, help="Kafka listener / ClickHouse TCP port")
    parser.add_argument("--controller-port", type=int, help="Kafka KRaft controller port")
    parser.add_argument("--http-port", type=int, help="ClickHouse HTTP port")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="Kafka jar cache (default: CITYSTREAM_CACHE_DIR)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="start/stop timeout (s)")
    args = parser.parse_args(argv)

    server: KafkaBroker | ClickHouseServer
    if args.service == "kafka":
        port = args.port or 9092
        server = KafkaBroker(
            args.home,
            args.cache_dir or Settings().cache_dir,
            port=port,
            controller_port=args.controller_port or port + 1,
        )
        where = f"bootstrap {server.bootstrap}"
    else:
        tcp = args.port or 9000
        server = ClickHouseServer(args.home, tcp_port=tcp, http_port=args.http_port or 8123)
        where = f"url {server.url}"

    if args.action == "status":
        pid = server.pid()
        if pid is not None and server.is_running():
            print(f"{args.service}: running, pid {pid}, {where}")
            return 0
        state = f"process {pid} alive but port {server.port} closed" if pid else "not running"
        print(f"{args.service}: {state} (home {server.home})")
        return 3  # LSB "program is not running"

    if args.action == "stop":
        pid = server.pid()
        if pid is None:
            print(f"{args.service}: not running (home {server.home})")
        else:
            server.stop(**({"timeout_s": args.timeout} if args.timeout else {}))
            print(f"{args.service}: stopped pid {pid}")
        return 0

    was_running = server.is_running()
    try:
        server.start(**({"timeout_s": args.timeout} if args.timeout else {}))
    except RuntimeError as exc:
        print(f"{args.service}: start failed: {exc}", file=sys.stderr)
        return 1
    verb = "already running" if was_running else "started"
    print(f"{args.service}: {verb}, pid {server.pid()}, {where}, log {server.log_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
