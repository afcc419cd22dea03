"""Issue 15, disk trouble and one writer: `/health` does a small write and says 503 "disk full" / "read-only";
`switchboard run` on such a data directory is one sentence with the fix; a second launch on the same data
directory refuses to start (unless the stores are shared servers).

Full and read-only disks are real: small tmpfs mounts (root only; the tests skip otherwise, since a directory
made read-only with chmod does not stop root)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from core.datadir import DISK_FULL, READ_ONLY, DataDirProblem, claim_data_dir, write_problem
from tests.conftest import ROOT, make_settings


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A tmpfs of `size` mounted at `where` (skips the test when this process may not mount)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True, capture_output=True)


def fill(where: Path) -> Path:
    """Write until the disk is full; returns the filler file."""
    filler = where / "filler"
    with filler.open("wb") as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
    return filler


def test_a_small_write_tells_full_and_read_only_apart(tmp_path) -> None:
    assert write_problem(tmp_path / "fine") == ""
    with tmpfs(tmp_path / "mnt", "256k") as mnt:
        filler = fill(mnt)
        assert write_problem(mnt) == DISK_FULL and write_problem(mnt).startswith("disk full")
        filler.unlink()
        assert write_problem(mnt) == ""
        remount(mnt, "ro")
        assert write_problem(mnt) == READ_ONLY and write_problem(mnt).startswith("read-only")
        assert not list(mnt.iterdir())  # the probe leaves nothing behind


async def test_health_is_503_while_the_disk_is_full_or_read_only(ingested_dir, tmp_path) -> None:
    from bots.web.server import create_app
    from core.orchestrator import build_orchestrator

    with tmpfs(tmp_path / "mnt", "64m") as mnt:
        data_dir = mnt / "data"
        shutil.copytree(ingested_dir, data_dir)
        orchestrator = await build_orchestrator(make_settings(data_dir))
        try:
            async with TestClient(TestServer(create_app(orchestrator))) as client:
                response = await client.get("/health")
                assert response.status == 200 and (await response.json())["checks"]["disk"] == {"ok": True}
                filler = fill(mnt)
                response = await client.get("/health")
                body = await response.json()
                assert response.status == 503 and "disk" in body["failing"]
                assert body["checks"]["disk"]["error"].startswith("disk full")
                assert str(mnt) not in await response.text()  # /health is public: no path
                filler.unlink()
                assert (await client.get("/health")).status == 200
                # read-only: the data directory bind-mounted read-only over itself (the stores' open files keep
                # the writable mount, as after a remount by the kernel on I/O errors)
                subprocess.run(["mount", "--bind", str(data_dir), str(data_dir)], check=True)
                try:
                    remount(data_dir, "bind,ro")
                    body = await (await client.get("/health")).json()
                    assert body["status"] == "unavailable"
                    assert body["checks"]["disk"]["error"].startswith("read-only")
                finally:
                    subprocess.run(["umount", "-l", str(data_dir)], capture_output=True)
        finally:
            await orchestrator.aclose()


def _run(data_dir: Path, monkeypatch, **env: str):
    """`switchboard run` in this process (start-up refusals happen before anything is served)."""
    from switchboard.cli import app

    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LLM_PROVIDER", "offline")
    for name in ("DATABASE_URL", "CHROMA_HOST", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return CliRunner().invoke(app, ["run"])


@pytest.mark.parametrize("trouble", ["read-only", "disk full"])
def test_start_up_on_a_full_or_read_only_data_directory_is_one_sentence(tmp_path, monkeypatch, trouble) -> None:
    with tmpfs(tmp_path / "mnt", "256k") as mnt:
        (mnt / "data").mkdir()
        if trouble == "read-only":
            remount(mnt, "ro")
        else:
            fill(mnt)
        result = _run(mnt / "data", monkeypatch)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception,
                                                                                         SystemExit)
    text = " ".join(result.output.split())
    assert f"Cannot start: The data directory {mnt / 'data'} is {trouble}:" in text
    assert ("mount it read-write" if trouble == "read-only" else "free some space") in text


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from core.datadir import claim_data_dir
    from tests.conftest import make_settings

    lock = claim_data_dir(make_settings(Path(sys.argv[1])))
    print("HELD", flush=True)
    sys.stdin.read()  # holds the lock until the test closes stdin (or kills it)
""")


async def test_a_second_process_on_the_same_data_directory_refuses_to_start(tmp_path, monkeypatch) -> None:
    data_dir = tmp_path / "data"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 60) == b"HELD\n"
        with pytest.raises(DataDirProblem, match=rf"Another Switchboard process \(pid {holder.pid}\) is already "
                                                 "using the data directory"):
            claim_data_dir(make_settings(data_dir))
        result = await asyncio.to_thread(_run, data_dir, monkeypatch)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "Cannot start: Another Switchboard process" in " ".join(result.output.split())
        # shared stores (Postgres conversations, a Chroma server): processes are meant to share, no lock
        assert claim_data_dir(make_settings(data_dir, database_url="postgresql://db/x", chroma_host="chroma")) is None
    finally:
        holder.kill()
        holder.wait(10)
    lock = claim_data_dir(make_settings(data_dir))  # the kernel released the dead holder's lock
    assert lock is not None
    lock.release()
