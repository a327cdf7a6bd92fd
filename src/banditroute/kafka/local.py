"""Run a single-node Apache Kafka broker on 127.0.0.1 without Docker.

The broker's jars come from Maven Central through the local ``mvn`` (so a machine needs only Java 17 and
Maven), are cached once per Kafka version, and the broker runs as a plain JVM process whose pid is kept in
its data folder. Everything here is synchronous and small on purpose: it is tooling, not the router.
"""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.25.3"
SLF4J_VERSION = "2.0.17"
DEFAULT_PORT = 9092
READY_MARKER = "Kafka Server started"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>banditroute</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{slf4j}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


class BrokerError(RuntimeError):
    """A broker could not be fetched, formatted, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class BrokerStatus:
    """What ``kafka status`` reports."""

    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    detail: str


def default_home() -> Path:
    """Where jars and broker data live: ``$BANDITROUTE_HOME`` or ``~/.cache/banditroute``."""
    return Path(os.environ.get("BANDITROUTE_HOME") or Path.home() / ".cache" / "banditroute")


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (racy by nature, good enough for local brokers and tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def other_free_port(taken: int) -> int:
    """:func:`free_port`, but never ``taken`` (a port chosen earlier is free again until its owner binds it: a
    broker's controller port once came out equal to its listener port, and the broker refused to start)."""
    port = free_port()
    while port == taken:
        port = free_port()
    return port


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Brokers started by this process, until they are seen gone (reaped through their Popen, which then knows)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class LocalKafka:
    """One local single-node KRaft broker, identified by its port.

    ``up()`` is idempotent; ``down()`` stops the process recorded in the pid file and nothing else.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        *,
        home: Path | None = None,
        data_dir: Path | None = None,
        heap_mb: int = 512,
        sasl_scram: tuple[str, str] | None = None,
    ) -> None:
        self.port = port
        self.home = home or default_home()
        self.lib_dir = self.home / f"kafka-{KAFKA_VERSION}" / "libs"
        self.data_dir = data_dir or self.home / f"broker-{port}"
        self.heap_mb = heap_mb
        self.sasl_scram = sasl_scram

    # -- paths -------------------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def props_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "kraft-logs"

    # -- fetching ----------------------------------------------------------------------------------------
    def fetch(self) -> Path:
        """Fetch the broker's jars with Maven into the cache (once per version).

        Processes that start brokers at the same time (the test suite's workers, each with its broker) fetch one
        after another: the first fetches, the others wait on a lock and find the jars there."""
        marker = self.lib_dir / ".complete"
        if marker.exists():
            return self.lib_dir
        work = self.lib_dir.parent
        work.mkdir(parents=True, exist_ok=True)
        with open(work / ".fetch.lock", "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            if marker.exists():  # fetched by another process while this one waited
                return self.lib_dir
            return self._fetch(work, marker)

    def _fetch(self, work: Path, marker: Path) -> Path:
        """Fetch under the lock: write the pom into ``work`` and copy the jars into ``lib_dir``."""
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                "Maven ('mvn') is not on PATH. Install Maven 3 (e.g. 'apt-get install maven') so the "
                "Kafka broker can be fetched from Maven Central."
            )
        self._java()  # fail early with a clear message
        (work / "pom.xml").write_text(
            _POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION), encoding="utf-8"
        )
        if self.lib_dir.exists():
            shutil.rmtree(self.lib_dir)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={self.lib_dir}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BrokerError(f"Maven could not fetch org.apache.kafka:kafka_2.13:{KAFKA_VERSION}:\n{tail}")
        marker.write_text(KAFKA_VERSION, encoding="utf-8")
        return self.lib_dir

    @staticmethod
    def _java() -> str:
        java = shutil.which("java")
        if java is None:
            raise BrokerError(
                "Java is not on PATH. Install a Java 17+ runtime (e.g. 'apt-get install openjdk-17-jre')."
            )
        return java

    # -- configuration -----------------------------------------------------------------------------------
    def _properties(self, controller_port: int) -> str:
        listeners = f"PLAINTEXT://127.0.0.1:{self.port}"
        protocol_map = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        extra = ""
        if self.sasl_scram is not None:
            user, password = self.sasl_scram
            listeners = f"SASL_PLAINTEXT://127.0.0.1:{self.port}"
            protocol_map = "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
            extra = (
                "sasl.enabled.mechanisms=SCRAM-SHA-256\n"
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256\n"
                "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{user}" password="{password}";\n'
            )
        inter = "SASL_PLAINTEXT" if self.sasl_scram else "PLAINTEXT"
        return (
            "process.roles=broker,controller\n"
            "node.id=1\n"
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}\n"
            f"listeners={listeners},CONTROLLER://127.0.0.1:{controller_port}\n"
            f"advertised.listeners={listeners}\n"
            "controller.listener.names=CONTROLLER\n"
            f"listener.security.protocol.map={protocol_map}\n"
            f"inter.broker.listener.name={inter}\n"
            f"log.dirs={self.log_dir}\n"
            "num.partitions=1\n"
            "auto.create.topics.enable=false\n"
            "offsets.topic.replication.factor=1\n"
            "offsets.topic.num.partitions=10\n"
            "transaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\n"
            "transaction.state.log.num.partitions=4\n"
            "share.coordinator.state.topic.replication.factor=1\n"
            "share.coordinator.state.topic.min.isr=1\n"
            "group.initial.rebalance.delay.ms=0\n"
            "log.retention.hours=24\n"
            "log.segment.bytes=67108864\n"
            f"{extra}"
        )

    def _format(self, libs: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2, encoding="utf-8")
        controller_port = other_free_port(self.port)
        self.props_file.write_text(self._properties(controller_port), encoding="utf-8")
        cluster_id = "-"
        while cluster_id.startswith("-"):  # the storage tool would read a leading '-' as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        cmd = [
            self._java(),
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.props_file),
        ]
        if self.sasl_scram is not None:
            user, password = self.sasl_scram
            cmd += ["--add-scram", f"SCRAM-SHA-256=[name={user},password={password}]"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(
                f"Formatting KRaft storage in {self.log_dir} failed:\n{proc.stdout}{proc.stderr}"
            )

    def _check_data_dir(self) -> bool:
        """True when the data folder holds formatted storage; raise if it is there but corrupt."""
        meta = self.log_dir / "meta.properties"
        if not self.log_dir.exists():
            return False
        if not meta.exists() or not self.props_file.exists():
            raise BrokerError(
                f"The broker data folder {self.data_dir} exists but is not formatted storage "
                f"(no {meta.name} or server.properties). Remove it with 'banditroute kafka down --purge "
                f"--port {self.port}' and run 'kafka up' again."
            )
        text = meta.read_text(encoding="utf-8", errors="replace")
        if "cluster.id=" not in text or "node.id=" not in text:
            raise BrokerError(
                f"{meta} is corrupt (no cluster.id/node.id). Purge it with 'banditroute kafka down --purge "
                f"--port {self.port}' and start again."
            )
        return True

    # -- lifecycle ---------------------------------------------------------------------------------------
    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def status(self) -> BrokerStatus:
        pid = self._read_pid()
        if pid is not None and _pid_alive(pid):
            up = _port_open("127.0.0.1", self.port)
            detail = "up" if up else "process running, port not accepting connections yet"
            return BrokerStatus(up, pid, self.bootstrap, self.data_dir, detail)
        detail = "down"
        if pid is not None:
            detail = f"down (stale pid file for pid {pid})"
        return BrokerStatus(False, None, self.bootstrap, self.data_dir, detail)

    def up(self, timeout_s: float = 90.0) -> tuple[bool, float]:
        """Start the broker unless it runs already; return (started_now, seconds taken)."""
        t0 = time.monotonic()
        pid = self._read_pid()
        if pid is not None and _pid_alive(pid):
            self._wait_ready(pid, t0 + timeout_s)
            return False, time.monotonic() - t0
        if pid is not None:
            self.pid_file.unlink(missing_ok=True)  # stale: the process is gone
        if _port_open("127.0.0.1", self.port):
            raise BrokerError(
                f"Port {self.port} on 127.0.0.1 is taken by another process (not a broker started here). "
                "Choose another with --port or stop that process."
            )
        libs = self.fetch()
        if not self._check_data_dir():
            self._format(libs)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            self._java(),
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(self.heap_mb, 256)}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.props_file),
        ]
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        _CHILDREN[proc.pid] = proc
        self.pid_file.write_text(str(proc.pid), encoding="ascii")
        try:
            self._wait_ready(proc.pid, t0 + timeout_s)
        except BrokerError:
            self._terminate(proc.pid)
            raise
        return True, time.monotonic() - t0

    def _wait_ready(self, pid: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                tail = self._log_tail()
                raise BrokerError(
                    f"The broker exited during start-up. Last lines of {self.log_file}:\n{tail}"
                )
            if _port_open("127.0.0.1", self.port) and self._log_says_ready():
                return
            time.sleep(0.1)
        raise BrokerError(
            f"The broker did not become ready in time. Last lines of {self.log_file}:\n{self._log_tail()}"
        )

    def _log_says_ready(self) -> bool:
        try:
            return READY_MARKER in self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(
                self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return "(no log)"

    def down(self, *, purge: bool = False, timeout_s: float = 30.0) -> str:
        """Stop the broker recorded in the pid file; with ``purge`` also delete its data folder."""
        pid = self._read_pid()
        message = "not running"
        if pid is not None and (_pid_alive(pid) or pid in _CHILDREN):
            self._terminate(pid, timeout_s)
            message = f"stopped (pid {pid})"
        elif pid is not None:
            message = f"not running (removed stale pid file for pid {pid})"
        self.pid_file.unlink(missing_ok=True)
        if purge and self.data_dir.exists():
            shutil.rmtree(self.data_dir)
            message += f"; purged {self.data_dir}"
        return message

    def kill(self) -> None:
        """SIGKILL the broker (fault-injection tests only)."""
        pid = self._read_pid()
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 10.0)

    @staticmethod
    def _terminate(pid: int, timeout_s: float = 30.0) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not _wait_gone(pid, timeout_s):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 10.0)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        # Our child: only its Popen knows when it is gone. /proc reads "Z" as soon as the JVM's main thread has
        # exited, while its other threads still shut the broker down; stopping there left the Popen unreaped
        # (a zombie, and "subprocess ... is still running" at interpreter exit).
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        _CHILDREN.pop(pid, None)
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:  # not started by this process's LocalKafka: reap it if it is our child anyway
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False
