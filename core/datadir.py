"""The data directory as a place to write: is it writable right now (`/health`, start-up), and is this process the
only one writing its embedded stores (the single-writer lock of `switchboard run`).

Why a real write: a full disk or a read-only remount does not show in a read (the checkpoints stay readable),
and used to surface only after an answer had streamed, as an `internal` error at checkpoint time. A 4 KiB write,
flushed and removed, fails the same way the next checkpoint would, so `/health` says 503 before users see it.

Why a lock: SQLite checkpoints, `support.sqlite` and an embedded Chroma are safe for the workers of one launch
(they coordinate through Redis and SQLite's own locking), but two independent servers on one directory each keep
their own in-memory state and silently lose turns. The lock is per launch (`switchboard run` takes it once;
the workers it spawns share it), and is not taken when the stores are shared servers (DATABASE_URL and
CHROMA_HOST), which is how many processes are meant to share data.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

PROBE_FILE = ".write-probe"
LOCK_FILE = ".switchboard.lock"
OWNER_FILE = ".switchboard.owner"
PROBE_BYTES = 4096

DISK_FULL = "disk full: the data directory has no space left"
READ_ONLY = "read-only: the data directory cannot be written"
NOT_WRITABLE = "not writable: the data directory refuses writes (permissions)"


class DataDirProblem(RuntimeError):
    """The data directory cannot be used; the message is one sentence with the fix."""


def _kind(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DISK_FULL
    if exc.errno == errno.EROFS:
        return READ_ONLY
    if exc.errno in (errno.EACCES, errno.EPERM):
        return NOT_WRITABLE
    return f"the data directory cannot be written ({errno.errorcode.get(exc.errno or 0, 'error')})"


def write_problem(data_dir: Path) -> str:
    """"" when a small write (created, flushed to disk, removed) succeeds in `data_dir`, else a short public
    sentence starting with "disk full" or "read-only" (no path: `/health` is public)."""
    path = Path(data_dir)
    probe = path / f"{PROBE_FILE}.{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return _kind(exc)
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return ""


def _fix(problem: str) -> str:
    if problem == DISK_FULL:
        return "free some space on that disk (or set SWITCHBOARD_DATA_DIR to a directory on a larger one)"
    if problem == READ_ONLY:
        return "mount it read-write (or set SWITCHBOARD_DATA_DIR to a writable directory)"
    return "make it writable by this user (or set SWITCHBOARD_DATA_DIR to a writable directory)"


def check_writable(data_dir: Path) -> None:
    """Raise `DataDirProblem` (one sentence with the fix) when the data directory cannot be written."""
    problem = write_problem(data_dir)
    if problem:
        raise DataDirProblem(f"The data directory {Path(data_dir).resolve()} is {problem.split(':')[0]}: "
                             f"{_fix(problem)}.")


def uses_embedded_stores(settings: Any) -> bool:
    """True unless both conversations (DATABASE_URL) and vectors (CHROMA_HOST) live in shared servers."""
    return not (getattr(settings, "database_url", None) and getattr(settings, "chroma_host", None))


class DataDirLock:
    """The single-writer lock of one launch over `data_dir` (a `filelock` on `.switchboard.lock`: released by the
    kernel when the process dies, so a crash never leaves a stale lock)."""

    def __init__(self, data_dir: Path) -> None:
        from filelock import FileLock

        self.data_dir = Path(data_dir)
        self._lock = FileLock(str(self.data_dir / LOCK_FILE), timeout=0)

    def acquire(self) -> None:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            owner = ""
            try:
                owner = (self.data_dir / OWNER_FILE).read_text(encoding="utf-8").strip()
            except OSError:
                pass
            who = f" (pid {owner})" if owner.isdigit() else ""
            raise DataDirProblem(
                f"Another Switchboard process{who} is already using the data directory {self.data_dir.resolve()}: "
                "stop it, give this one its own SWITCHBOARD_DATA_DIR, or share the stores between processes "
                "with DATABASE_URL and CHROMA_HOST (and `switchboard run --workers N` for several on one "
                "machine).") from None
        except OSError as exc:
            problem = _kind(exc)
            raise DataDirProblem(f"The data directory {self.data_dir.resolve()} is {problem.split(':')[0]}: "
                                 f"{_fix(problem)}.") from None
        try:
            (self.data_dir / OWNER_FILE).write_text(str(os.getpid()), encoding="utf-8")
        except OSError:
            pass

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


def claim_data_dir(settings: Any) -> DataDirLock | None:
    """What `switchboard run` does first: the data directory must be writable, and, with embedded stores, not in
    use by another launch. Returns the held lock (None with shared stores); raises `DataDirProblem`."""
    check_writable(settings.data_dir)
    if not uses_embedded_stores(settings):
        return None
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    return lock


__all__ = ["DISK_FULL", "DataDirLock", "DataDirProblem", "READ_ONLY", "check_writable", "claim_data_dir",
           "uses_embedded_stores", "write_problem"]
