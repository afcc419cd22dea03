"""Real `switchboard run` processes for the replica tests: start them in parallel, wait until they serve, find
which process holds which Socket Mode connection, stop or kill them, and read their logs.

Each replica is `.venv/bin/switchboard run` (the console script beside the interpreter running pytest) in its own
environment: the fake Slack's tokens and URL, the shared Redis (a database number of the test's own, flushed
before and after) and Postgres (a schema of the test's own through `options=-c search_path=…`, dropped
afterwards), its own copy of the ingested corpus, its own web port, and a language model that is either offline
or the fake OpenAI server. Its working directory is a scratch folder, so a developer's `.env` is never read.

Shared with the tests and `bench/bench_replicas.py`: reading the fake Slack from another thread (`on_fake`,
`wait_fake`, what a settled or answered thread is) and a fake-model responder that can answer slowly.

Which replica holds which connection: the fake Slack records each websocket's client address; the process
that owns that client socket is found in /proc (`/proc/net/tcp` gives the socket's inode, `/proc/<pid>/fd`
the process holding it). Linux only, as are the servers these tests need.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.fakes.slack import BOT_ID, FakeSlack, Message

SWITCHBOARD_EXE = Path(sys.executable).with_name("switchboard")
REDIS_SERVER = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_SERVER = os.environ.get("SWITCHBOARD_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
READY_TIMEOUT_S = 45.0  # measured: two replicas answer /health about 5 s after starting together
# Settings a replica must not inherit from the environment pytest runs in (each test sets what it needs).
INHERITED_PREFIXES = ("SLACK_", "DISCORD_", "OPENAI_", "CHROMA_", "LLM_", "REDIS_", "DATABASE_", "WEB_",
                      "SWITCHBOARD_", "AGENTS_FILE", "EMBEDDING_", "REPLICA_")


# --- the servers the tests need ---------------------------------------------------------------------------------

def redis_problem() -> str | None:
    """None when the test Redis answers; otherwise why the tests skip."""
    try:
        import redis

        redis.Redis.from_url(REDIS_SERVER, socket_connect_timeout=1, socket_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: skip, saying why
        return (f"Redis is not reachable at {REDIS_SERVER} ({type(exc).__name__}); start redis-server (`.ci/run` "
                "does) or set SWITCHBOARD_TEST_REDIS_URL to run the replica tests")
    return None


def postgres_problem() -> str | None:
    """None when the test Postgres answers; otherwise why the tests skip."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_SERVER, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (f"Postgres is not reachable at {POSTGRES_SERVER} ({first}); start it (`.ci/run` does) or set "
                "SWITCHBOARD_TEST_POSTGRES to run the replica tests")
    return None


def redis_db_url(db: int) -> str:
    """The test Redis with database number `db` instead of the one in its URL."""
    base = re.sub(r"/\d*$", "", REDIS_SERVER.rstrip("/"))
    return f"{base}/{db}"


@contextlib.contextmanager
def redis_database(db: int) -> Iterator[str]:
    """A Redis database of the test's own (Switchboard has no key-prefix setting): flushed before and after."""
    import redis

    url = redis_db_url(db)
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema, and the DATABASE_URL whose `search_path` is that schema; dropped afterwards."""
    import psycopg

    name = f"sb_replicas_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    options = quote(f"-c search_path={name}", safe="")
    separator = "&" if "?" in POSTGRES_SERVER else "?"
    try:
        yield f"{POSTGRES_SERVER}{separator}options={options}"
    finally:
        with psycopg.connect(POSTGRES_SERVER, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- which process holds a socket (Linux /proc) ---------------------------------------------------------------

def _hex_port(field_: str) -> int:
    return int(field_.rsplit(":", 1)[1], 16)


def _tcp_rows() -> Iterator[tuple[int, int, int, int]]:
    """(local port, remote port, state, inode) of every TCP socket of this network namespace."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as table:
            next(table, None)
            for line in table:
                parts = line.split()
                if len(parts) >= 10:
                    yield _hex_port(parts[1]), _hex_port(parts[2]), int(parts[3], 16), int(parts[9])


def socket_inodes(pid: int) -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    found.add(int(target[8:-1]))
    return found


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
    return found


def owner_of(local_port: int, remote_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the TCP socket from `local_port` to `remote_port`."""
    inodes = {inode for local, remote, _, inode in _tcp_rows() if local == local_port and remote == remote_port}
    for pid in pids:
        if inodes & socket_inodes(pid):
            return pid
    return None


def listeners(port: int, pids: list[int]) -> set[int]:
    """Which of `pids` hold a listening socket on `port` (state 0A = LISTEN)."""
    inodes = {inode for local, _, state, inode in _tcp_rows() if local == port and state == 0x0A}
    return {pid for pid in pids if inodes & socket_inodes(pid)}


# --- one replica ------------------------------------------------------------------------------------------------

@dataclass
class Replica:
    name: str
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(repr=False)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """This replica's process and its workers (`--workers N`)."""
        return [self.pid, *children(self.pid)]

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self, limit: int = 6000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        return text[-limit:]

    def log_lines(self, *needles: str) -> list[str]:
        """Lines of the whole log that contain any of `needles` (case-insensitive)."""
        lowered = [n.lower() for n in needles]
        return [line for line in self.log(10**7).splitlines() if any(n in line.lower() for n in lowered)]

    def health(self, timeout: float = 2.0) -> tuple[int, dict[str, Any]] | None:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except (OSError, ValueError):
            return None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def stop(self, timeout: float = 45.0) -> int | None:
        """SIGTERM and wait; SIGKILL (the process group, workers included) if it does not exit in time."""
        if self.alive():
            self.process.terminate()
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        return self.process.returncode

    def kill_group(self) -> None:
        """SIGKILL to the replica and any worker it started (they share its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def replica_env(*, data_dir: Path, port: int, redis_url: str | None, database_url: str | None,
                slack: Any | None = None, llm: Any | None = None, replica_id: str | None = None,
                **extra: str) -> dict[str, str]:
    """The environment of one replica; `extra` adds or overrides settings (NAME=value)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_PREFIXES)}
    env.update(SWITCHBOARD_DATA_DIR=str(data_dir), WEB_HOST="127.0.0.1", WEB_PORT=str(port), LOG_LEVEL="INFO",
               EMBEDDING_PROVIDER="local", PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1", TERM="dumb",
               # one loopback client sends every request here: the web API's per-client caps would refuse some
               WEB_RATE_LIMIT="100000/minute", WEB_MAX_STREAMS_PER_CLIENT="10000",
               # replicas agree on web sessions' secrets only with one key (bots/web/sessions.py)
               WEB_SESSION_SECRET=WEB_SESSION_KEY)
    if redis_url:
        env["REDIS_URL"] = redis_url
    if database_url:
        env["DATABASE_URL"] = database_url
    if replica_id:
        env["REPLICA_ID"] = replica_id
    if slack is not None:
        env.update(SLACK_BOT_TOKEN=slack.bot_token, SLACK_APP_TOKEN=slack.app_token, SLACK_API_URL=slack.api_url)
    if llm is not None:
        env.update(LLM_PROVIDER="openai", OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-test-replicas",
                   LLM_MAX_RETRIES="0")
    else:
        env["LLM_PROVIDER"] = "offline"
    env.update(extra)
    return env


def spawn(name: str, env: dict[str, str], *, workdir: Path, data_dir: Path, port: int,
          args: tuple[str, ...] = ()) -> Replica:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen([str(SWITCHBOARD_EXE), "run", *args], env=env, cwd=workdir,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return Replica(name, port, data_dir, log_path, process, env)


def start_replicas(count: int, *, corpus: Path, workdir: Path, redis_url: str | None, database_url: str | None,
                   slack: Any | None = None, llm: Any | None = None, names: tuple[str, ...] = ("A", "B", "C"),
                   **extra: str) -> list[Replica]:
    """`count` replicas started together; returns once each answers /health with 200 and (with Slack) the fake
    has `count` more connections open. Fails with the logs of a replica that exits or does not get ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    already = len(slack.run(_open(slack))) if slack is not None else 0
    replicas = []
    for index in range(count):
        name = names[index]
        data_dir = workdir / f"data-{name}"
        shutil.copytree(corpus, data_dir)
        port = free_port()
        env = replica_env(data_dir=data_dir, port=port, redis_url=redis_url, database_url=database_url,
                          slack=slack, llm=llm, replica_id=f"replica-{name}", **extra)
        replicas.append(spawn(name, env, workdir=workdir, data_dir=data_dir, port=port))
    try:
        wait_ready(replicas)
        if slack is not None:
            slack.run(slack.wait_for_connection(already + count, READY_TIMEOUT_S), READY_TIMEOUT_S + 5)
    except BaseException:
        for replica in replicas:
            replica.kill_group()
        raise
    return replicas


def wait_ready(replicas: list[Replica], timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    pending = list(replicas)
    while pending:
        for replica in list(pending):
            answer = replica.health(timeout=1)
            if answer is not None and answer[0] == 200:
                pending.remove(replica)
            elif not replica.alive():
                raise AssertionError(f"replica {replica.name} exited with {replica.process.returncode} before it "
                                     f"was ready:\n{replica.log()}")
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"replicas {[r.name for r in pending]} did not answer /health within {timeout:.0f} s:"
                                 + "".join(f"\n--- {r.name}:\n{r.log()}" for r in pending))
        if pending:
            time.sleep(0.1)


async def _open(slack: Any) -> list[Any]:
    return slack.open_connections()


def connection_of(slack: Any, replica: Replica) -> int:
    """The index (for `send_event(..., connection=k)`) of the open Socket Mode connection `replica` holds."""
    connections = slack.run(_open(slack))
    pids = replica.pids()
    for index, connection in enumerate(connections):
        if connection.peer is not None and owner_of(connection.peer[1], slack.port, pids) is not None:
            return index
    raise AssertionError(f"replica {replica.name} holds none of the {len(connections)} open Socket Mode "
                         f"connections:\n{replica.log()}")


# --- web requests -------------------------------------------------------------------------------------------------

def parse_sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines.get("data") or "{}")))
    return events


@dataclass
class ChatAnswer:
    status: int
    events: list[tuple[str, dict[str, Any]]]
    served_by: int | None = None  # the pid whose socket answered (when asked to find out)

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    @property
    def text(self) -> str:
        return "".join(str(data.get("text", "")) for kind, data in self.events if kind == "token")


def post_chat(port: int, message: str, *, session_id: str | None = None, timeout: float = 60.0,
              find_server_among: list[int] | None = None, **extra: Any) -> ChatAnswer:
    """POST /chat and read the whole SSE stream. With `find_server_among`, also which of those pids served it
    (looked up while the connection is open)."""
    body = {"message": message, **extra}
    if session_id is not None:
        body["session_id"] = session_id
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/chat", body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        served_by = None
        if find_server_among is not None and conn.sock is not None:
            served_by = owner_of(port, conn.sock.getsockname()[1], find_server_among)
        raw = response.read().decode()
        if response.status != 200:
            return ChatAnswer(response.status, [("http_error", json.loads(raw or "{}"))], served_by)
        return ChatAnswer(200, parse_sse(raw), served_by)
    finally:
        conn.close()


WEB_SESSION_KEY = "replica-harness-shared-web-session-key"


def owner_headers(session_id: str) -> dict[str, str]:
    """The credential of a web session on these replicas (a web session belongs to its creator, issue 15)."""
    from bots.web.sessions import SessionGuard

    guard = SessionGuard.from_settings(types.SimpleNamespace(web_session_secret=WEB_SESSION_KEY))
    return {"X-Session-Secret": guard.secret_for(session_id)}


def get_json(url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


# --- reading the fake Slack (always on its own loop: its state is not thread-safe) -----------------------------

MARKER = "▌"  # the in-progress cursor


def on_fake(slack: FakeSlack, fn: Callable[[], Any]) -> Any:
    async def call() -> Any:
        return fn()
    return slack.run(call())


def wait_fake(slack: FakeSlack, predicate: Callable[[], Any], timeout: float, what: str,
              replicas: list[Replica] | None = None) -> Any:
    """The predicate's first truthy value, evaluated on the fake's loop; on timeout, fail with the logs."""
    try:
        return slack.run(slack.wait_for(predicate, timeout, what), timeout + 10)
    except TimeoutError:
        import pytest

        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{describe_threads(slack)}"
                    f"{logs(replicas or [])}", pytrace=False)


def bot_messages(slack: FakeSlack, channel: str, thread_ts: str) -> list[Message]:
    return [m for m in slack.thread_messages(channel, thread_ts) if m.bot_id == BOT_ID]


def has_feedback(message: Message) -> bool:
    return any(block.get("block_id") == "feedback" for block in message.blocks or [])


IN_PROGRESS = (MARKER, "Thinking…", "is looking into it…")  # the cursor, the placeholder, the agent tag alone


def settled(message: Message) -> bool:
    """Shows neither a placeholder nor the in-progress cursor."""
    return not any(sign in message.text for sign in IN_PROGRESS)


def answered(slack: FakeSlack, channel: str, thread_ts: str, count: int = 1) -> bool:
    """At least `count` complete answers in the thread, and nothing left in progress."""
    replies = bot_messages(slack, channel, thread_ts)
    return (sum(1 for m in replies if has_feedback(m)) >= count and all(settled(m) for m in replies))


def describe_threads(slack: FakeSlack) -> str:
    def collect() -> str:
        lines = []
        for channel, store in slack.messages.items():
            for message in sorted(store.values(), key=lambda m: float(m.ts)):
                who = "bot" if message.bot_id == BOT_ID else "user"
                text = message.text.replace("\n", " ")
                text = text if len(text) <= 100 else f"{text[:60]} … {text[-35:]}"  # the end shows the cursor
                lines.append(f"  {channel} {message.ts} (thread {message.thread_ts}) {who}: {text!r}"
                             f"{' [final]' if has_feedback(message) else ''}")
        return "fake Slack messages:\n" + "\n".join(lines[-60:]) + "\n"
    return on_fake(slack, collect)


def logs(replicas: list[Replica], limit: int = 4000) -> str:
    return "".join(f"\n--- replica {r.name} (pid {r.pid}, exit {r.process.returncode}) log:\n{r.log(limit)}"
                   for r in replicas)


# --- the fake model: slow for questions that ask for it ---------------------------------------------------------

SLOW_TAG = "slowly"  # a question containing it is answered with LONG_ANSWER at the slow rate
BRISK_TAG = "briskly"  # … or at the brisk rate
LONG_ANSWER = " ".join(
    f"Step {n}: open the admin console, check the integration settings and save them again." for n in range(1, 40))


def responder(slow: float, brisk: float = 20.0) -> Callable[[dict[str, Any]], Any]:
    """Routing calls get the default (schema filled by keywords); answers to questions containing SLOW_TAG or
    BRISK_TAG stream LONG_ANSWER at `slow` or `brisk` words a second, any other answer a short text at once."""
    from tests.fakes.openai_server import Reply, default_responder, question_of, requested_schema

    def respond(body: dict[str, Any]) -> Any:
        if requested_schema(body) is not None or body.get("tools"):
            return default_responder(body)
        question = question_of(body)
        if SLOW_TAG in question or BRISK_TAG in question:
            return Reply(text=LONG_ANSWER, tokens_per_s=slow if SLOW_TAG in question else brisk)
        return Reply(text="Open Settings, then Billing, and pick the plan you want. (Source: test)")
    return respond
