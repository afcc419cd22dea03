"""Shared fixtures: settings in a temporary data directory, and the sample corpus ingested once per session.

Ingesting the corpus takes a few seconds, so it is done once into a session directory; a test that needs its
own writable store gets a copy of that directory (`corpus_settings`), which takes milliseconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "knowledge" / "docs"


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings that ignore the developer's .env and environment-specific keys."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "llm_provider": "offline",
        "openai_api_key": None,
        "openai_base_url": None,
        "chroma_host": None,
        "embedding_provider": "local",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def ingested_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from knowledge.base import open_store
    from knowledge.embeddings import local_model
    from knowledge.ingest import ingest

    data_dir = tmp_path_factory.mktemp("corpus-data")
    store = open_store(make_settings(data_dir), local_model())
    report = ingest([DOCS], store)
    assert report.files_failed == 0 and report.chunks_added > 100
    return data_dir


@pytest.fixture
def corpus_settings(ingested_dir: Path, tmp_path: Path) -> Settings:
    """Offline settings over a private copy of the ingested sample corpus."""
    data_dir = tmp_path / "data"
    shutil.copytree(ingested_dir, data_dir)
    return make_settings(data_dir)


@pytest.fixture(scope="session")
def shared_store(ingested_dir: Path):
    """Read-only store over the session corpus (do not write to it)."""
    from knowledge.base import open_store
    from knowledge.embeddings import local_model

    return open_store(make_settings(ingested_dir), local_model())


# --- a real Chroma server, started with the `chroma run` command the chromadb package ships ------------------

import os  # noqa: E402 - this section was appended; its imports stay with it
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass  # noqa: E402

# .venv/bin/chroma, beside the interpreter running pytest; else the one on PATH
CHROMA_EXE = Path(sys.executable).with_name("chroma")
if not CHROMA_EXE.exists() and shutil.which("chroma"):
    CHROMA_EXE = Path(str(shutil.which("chroma")))
CHROMA_START_TIMEOUT_S = 30.0  # measured: the heartbeat answers about 1.2 s after the process starts


@dataclass
class ChromaServer:
    """One `chroma run --host 127.0.0.1 --port <free port> --path <folder>` process; its stdout (banner and
    tracing log) and stderr go to files beside its data folder."""

    host: str
    port: int
    path: Path
    process: subprocess.Popen[bytes]
    started_in_s: float = 0.0

    def settings(self, data_dir: Path, **overrides: object) -> Settings:
        """Offline test settings whose knowledge store is this server."""
        return make_settings(data_dir, chroma_host=self.host, chroma_port=self.port, **overrides)

    def output(self, limit: int = 3000) -> str:
        """The server's stderr, then the end of its stdout, without colour codes (for failure messages)."""
        parts = []
        for name in ("stderr", "stdout"):
            log = self.path.with_name(f"{self.path.name}.{name}")
            text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace")) if log.exists() else ""
            parts.append(f"--- {name}:\n{text.strip()[-limit:] or '(empty)'}")
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM (the server shuts down at once), then SIGKILL if it has not exited within 5 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _heartbeat(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/api/v2/heartbeat", timeout=1) as response:
            return response.status == 200 and b"heartbeat" in response.read()
    except OSError:
        return False


def start_chroma_server(path: Path, *, port: int | None = None, attempts: int = 3) -> ChromaServer:
    """Start `chroma run` on a free loopback port with its data in `path` and wait for its heartbeat; fails the
    test with the server's output if it exits or does not answer within CHROMA_START_TIMEOUT_S. A port taken
    between choosing and binding it (the server then exits, with status 0) is retried on another one; `port`
    (to restart a server where it was) is not."""
    if not CHROMA_EXE.exists():
        pytest.skip(f"no `chroma` executable at {CHROMA_EXE} (it comes with the chromadb package)")
    # The server reads CHROMA_* variables as configuration; ours (CHROMA_HOST/CHROMA_PORT) must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHROMA_")}
    server: ChromaServer | None = None
    for _ in range(1 if port else attempts):
        chosen = port or _free_port()
        began = time.monotonic()
        with path.with_name(f"{path.name}.stdout").open("wb") as out, \
                path.with_name(f"{path.name}.stderr").open("wb") as err:
            process = subprocess.Popen(
                [str(CHROMA_EXE), "run", "--host", "127.0.0.1", "--port", str(chosen), "--path", str(path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True,
            )
        server = ChromaServer("127.0.0.1", chosen, path, process)
        while time.monotonic() - began < CHROMA_START_TIMEOUT_S:
            if _heartbeat(server.host, chosen):
                server.started_in_s = time.monotonic() - began
                return server
            if process.poll() is not None:
                break
            time.sleep(0.05)
        else:
            server.stop()
            pytest.fail(f"`chroma run` on 127.0.0.1:{chosen} did not answer its heartbeat within "
                        f"{CHROMA_START_TIMEOUT_S:.0f} s.\n{server.output()}", pytrace=False)
        if "is not available" not in server.output():  # anything but a taken port: no point retrying
            break
    assert server is not None
    pytest.fail(f"`chroma run` exited with status {server.process.returncode} before answering.\n"
                f"{server.output()}", pytrace=False)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory):
    """A Chroma server for the whole session (tests share it: give collections distinct agents or clear them)."""
    server = start_chroma_server(tmp_path_factory.mktemp("chroma-server") / "db")
    try:
        yield server
    finally:
        server.stop()


# --- parallel runs: tests that share the real Redis and Postgres servers stay on one worker ---------------------

# A test module naming any of these reaches the shared servers (or times leases across processes); the whole
# module then runs on one xdist worker, one test after another, as it would without xdist.
SHARED_SERVER_WORDS = ("redis", "postgres", "replica_harness")
ALWAYS_TOGETHER = frozenset({"test_burst.py", "test_placement.py"})  # multi-process timing


def _uses_shared_servers(path: Path, seen: dict[Path, bool]) -> bool:
    if path not in seen:
        text = path.read_text(encoding="utf-8", errors="replace")
        seen[path] = path.name in ALWAYS_TOGETHER or any(word in text for word in SHARED_SERVER_WORDS)
    return seen[path]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into scheduling groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), the tests that flush the shared Redis
    databases, create Postgres schemas or time leases across processes run one after the other on one worker;
    the rest spread over both. Without xdist the mark is inert."""
    seen: dict[Path, bool] = {}
    for item in items:
        if _uses_shared_servers(item.path, seen):
            item.add_marker(pytest.mark.xdist_group("shared-servers"))


@pytest.fixture(autouse=True)
def _process_link_policy_restored():
    """`switchboard run`'s `serve()` installs the process's link allow-list (`bots.links.configure`); tests that
    call it in-process must not leave it to the next test on the same worker."""
    from bots import links

    previous = links.current()
    yield
    links.configure(previous)
