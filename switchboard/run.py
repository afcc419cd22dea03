"""`switchboard run`: the web server always, plus Slack and Discord when their tokens are set, in one event loop.

Composition only: the front-ends live in `bots/`, the orchestrator in `core/`; this module builds them and wires
them together.

Start-up validation comes first; each problem is a sentence with its fix. SIGINT/SIGTERM stop everything
cleanly: replies in flight get their final edit or an "interrupted" note before connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING, Any

import typer
from aiohttp import web
from rich.console import Console

from bots.startup import StartupError, discord_enabled, slack_enabled, validate_settings
from coordination import connect as connect_coordination
from core.checkpoints import CheckpointsUnavailable
from core.settings import Settings
from knowledge.agents import AgentsFileError, check_documents
from knowledge.sources.config import SourcesFileError
from knowledge.store import StoreUnavailableError
from switchboard.placement import Membership, Placement
from switchboard.privacy_cli import start_retention
from switchboard.sync_jobs import start_source_sync
from switchboard.workers import check_workers, run_workers, worker_position

if TYPE_CHECKING:
    from core.orchestrator import Orchestrator

log = logging.getLogger(__name__)
console = Console()
ORPHAN_SWEEP_S = 5.0  # with a 15 s lease, an orphaned reply is marked within 20 s
# Connections the kernel queues before the server accepts them. aiohttp's default is 128: in a burst of 200
# questions opening their connections at once, the rest had their SYN dropped and retried a second later (the
# first-token p50 of the 200-question benchmark went from 2.7 s to 1.7 s with this). Capped by net.core.somaxconn.
LISTEN_BACKLOG = 2048


async def _check_store(orchestrator: Orchestrator) -> None:
    report = await orchestrator.health()
    if report.chunks is None:
        raise StartupError(f"The knowledge store cannot be read ({report.store_cause}). "
                           "Check SWITCHBOARD_DATA_DIR / CHROMA_HOST.")
    if report.store_empty:
        raise StartupError("The knowledge base is empty. Run `switchboard ingest` (or `make run`, which does it).")
    try:
        check_documents(orchestrator.agents, report.chunks)  # every agent in the agents file has documents
    except AgentsFileError as exc:
        raise StartupError(str(exc)) from None


def _replica_id(settings: Settings) -> str | None:
    """REPLICA_ID, told apart per worker (`name/k`): each worker holds its own locks, leases and shards, so two
    workers of one replica must never look like the same holder. None: coordination makes one up."""
    index, count = worker_position()
    if not settings.replica_id or count <= 1:
        return settings.replica_id
    return f"{settings.replica_id}/{index}"


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    from core.orchestrator import build_orchestrator

    problems = validate_settings(settings)
    if problems:
        raise StartupError("\n".join(f"{p.message} Fix: {p.fix}" for p in problems))
    from core.datadir import DataDirProblem, check_writable

    try:  # a read-only or full data directory: one sentence with the fix, before anything opens a store in it
        check_writable(settings.data_dir)
    except DataDirProblem as exc:
        raise StartupError(str(exc)) from None
    from bots import links

    links.configure(links.policy_for(settings))  # clickable links only to the allow-list, on every platform
    coord = connect_coordination(settings.redis_url, replica_id=_replica_id(settings),
                                 lease_s=settings.coordination_lease_s)
    problem = await coord.ping()
    if problem:
        await coord.aclose()
        raise StartupError(problem)
    membership = Membership(coord, Placement.of(settings, coord.replica_id)) if coord.shared else None
    try:
        if membership is not None:  # before the slow part: a replica that would split conversations stops here
            await membership.join()
        orchestrator = await build_orchestrator(settings, coordination=coord)
    except (AgentsFileError, CheckpointsUnavailable, StoreUnavailableError, StartupError) as exc:  # a bad
        # AGENTS_FILE, an unreachable Chroma server, an unusable DATABASE_URL or a conversation store the other
        # replicas do not share: one sentence with its fix, no traceback (and never the URL's password)
        if membership is not None:
            await membership.aclose()
        await coord.aclose()
        raise StartupError(str(exc)) from None
    frontends: list[Any] = []
    sweeper: asyncio.Task[None] | None = None
    syncs: Any = None
    retention: Any = None
    runner: web.AppRunner | None = None
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    try:
        await _check_store(orchestrator)
        try:
            syncs = start_source_sync(settings, orchestrator, coord)  # each source on its `every:`; None without
        except SourcesFileError as exc:  # SOURCES_FILE
            raise StartupError(str(exc)) from None
        retention = start_retention(settings, orchestrator, coord)  # RETENTION_DAYS: daily, one replica a day
        extra_routes: list[web.RouteDef] = []
        if slack_enabled(settings) or settings.slack_oauth_enabled:  # one token, or "Add to Slack"
            from bots.slack.app import SlackFrontend

            slack = SlackFrontend(settings, orchestrator, coordination=coord)
            extra_routes.extend(slack.http_routes())
            frontends.append(slack)
        if discord_enabled(settings) and (worker_position()[0] == 0 or coord.shared and settings.discord_shard_count > 1):
            from bots.discord.bot import DiscordFrontend

            frontends.append(DiscordFrontend(settings, orchestrator, coordination=coord))

        from bots.web.server import create_app

        app = create_app(orchestrator, extra_routes=extra_routes)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        index, count = worker_position()
        site = web.TCPSite(runner, settings.web_host, settings.web_port, reuse_port=count > 1 or None,
                           backlog=LISTEN_BACKLOG)
        await site.start()
        shown_host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::", "") else settings.web_host
        worker = f" · worker {index + 1} of {count}" if count > 1 else ""
        console.print(f"[green]✓[/] web: chat page and API on http://{shown_host}:{settings.web_port} "
                      f"(docs at /docs) · answering in [bold]{orchestrator.mode}[/] mode{worker}")
        for frontend in frontends:
            try:
                await frontend.start()
            except StartupError:
                raise
            except Exception as exc:  # noqa: BLE001 - unreachable platform, refused connection…: a sentence
                log.debug("%s failed to start", frontend.name, exc_info=True)
                raise StartupError(f"{frontend.name} could not start ({type(exc).__name__}: {exc}). Check the "
                                   f"network and the {frontend.name.upper()}_ settings; `switchboard doctor` "
                                   "shows them.") from None
            console.print(f"[green]✓[/] {frontend.name}: {frontend.describe()}")
        if not frontends:
            console.print("[dim]Slack and Discord are off: set SLACK_BOT_TOKEN or DISCORD_TOKEN to enable them.[/]")

        from core.heap import settle_heap

        settle_heap()  # started: what exists now lives as long as the process (`core.heap`)
        every_s = min(ORPHAN_SWEEP_S, settings.coordination_lease_s / 3)
        sweeper = asyncio.create_task(sweep_orphans(coord, frontends, every_s), name="orphan-sweeper")
        stop = stop or asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
        await stop.wait()
        console.print("Shutting down: finishing replies in flight…")
    finally:
        for sig in installed:  # a second Ctrl-C during shutdown, or after serve() returns, behaves as usual
            loop.remove_signal_handler(sig)
        if sweeper is not None:
            sweeper.cancel()
        if syncs is not None:
            await syncs.stop()
        if retention is not None:
            await retention.stop()
        for frontend in reversed(frontends):
            with contextlib.suppress(Exception):
                await frontend.stop()
        if runner is not None:
            await runner.cleanup()
        await orchestrator.aclose()
        if membership is not None:
            await membership.aclose()
        await coord.aclose()


async def sweep_orphans(coord: Any, frontends: list[Any], every_s: float = ORPHAN_SWEEP_S) -> None:
    """Replies whose replica died (SIGKILL, power loss) stop renewing their lease; the first replica to find one
    claims it and edits its message to say the answer was interrupted, so nothing stays on "Thinking…"."""
    by_platform = {frontend.name: frontend for frontend in frontends if hasattr(frontend, "interrupt_orphan")}

    async def interrupt(info: dict[str, Any]) -> None:
        frontend = by_platform.get(info.get("platform", ""))
        if frontend is not None:
            await frontend.interrupt_orphan(info)
            log.info("marked an orphaned %s reply (session %s) as interrupted", frontend.name, info.get("session_key"))

    while True:
        await asyncio.sleep(every_s)
        try:
            await coord.inflight.reap(interrupt)
        except Exception:  # noqa: BLE001 - Redis away for a while: try again next round
            log.warning("the orphan sweep failed; retrying in %.0fs", every_s, exc_info=True)


def run_command(workers: int = typer.Option(1, "--workers", min=1, max=64,
                                           help="Worker processes sharing the web port (needs REDIS_URL).")
                ) -> None:
    """Serve every configured front-end: web always, Slack and Discord when their tokens are set."""
    from core.logging_setup import setup_logging
    from core.settings import load_settings

    settings = load_settings()
    setup_logging(settings.log_level)
    from core.logging_setup import use_log_format
    from core.tracing import setup_tracing

    use_log_format(settings.log_format)  # LOG_FORMAT=json: JSON lines with session key, turn id, trace id
    setup_tracing(settings)  # OTLP/HTTP spans when OTEL_EXPORTER_OTLP_ENDPOINT is set (flushed at exit); else off
    try:
        check_workers(settings, workers)
        from core.datadir import DataDirProblem, claim_data_dir

        from switchboard.workers import worker_position

        try:  # one launch per data directory with embedded stores; its workers share the lock (held till exit)
            if worker_position()[1] == 1:  # a worker of `--workers N`: the launching process holds it for all
                _held = claim_data_dir(settings)  # noqa: F841 - released by the kernel when this process ends
        except DataDirProblem as exc:
            raise StartupError(str(exc)) from None
        if workers > 1:
            raise typer.Exit(run_workers(workers))
        asyncio.run(serve(settings))
    except StartupError as exc:
        console.print(f"[red]Cannot start:[/] {exc}", soft_wrap=True)  # a path is never cut in two
        raise typer.Exit(2)
    except KeyboardInterrupt:  # pragma: no cover - signal handlers normally catch it first
        pass
