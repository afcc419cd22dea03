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
from core.checkpoints import CheckpointsUnavailable
from core.settings import Settings
from knowledge.agents import AgentsFileError, check_documents
from knowledge.store import StoreUnavailableError
from switchboard.workers import check_workers, run_workers, worker_position

if TYPE_CHECKING:
    from core.orchestrator import Orchestrator

log = logging.getLogger(__name__)
console = Console()


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


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    from core.orchestrator import build_orchestrator

    problems = validate_settings(settings)
    if problems:
        raise StartupError("\n".join(f"{p.message} Fix: {p.fix}" for p in problems))
    try:
        orchestrator = await build_orchestrator(settings)
    except (AgentsFileError, CheckpointsUnavailable, StoreUnavailableError) as exc:  # a bad AGENTS_FILE, an
        # unreachable Chroma server or an unusable DATABASE_URL: one
        # sentence with its fix, no traceback (and never the URL's password)
        raise StartupError(str(exc)) from None
    frontends: list[Any] = []
    runner: web.AppRunner | None = None
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    try:
        await _check_store(orchestrator)
        extra_routes: list[web.RouteDef] = []
        if slack_enabled(settings):
            from bots.slack.app import SlackFrontend

            slack = SlackFrontend(settings, orchestrator)
            extra_routes.extend(slack.http_routes())
            frontends.append(slack)
        if discord_enabled(settings) and worker_position()[0] == 0:  # one gateway connection (not sharded yet)
            from bots.discord.bot import DiscordFrontend

            frontends.append(DiscordFrontend(settings, orchestrator))

        from bots.web.server import create_app

        app = create_app(orchestrator, extra_routes=extra_routes)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        index, count = worker_position()
        site = web.TCPSite(runner, settings.web_host, settings.web_port, reuse_port=count > 1 or None)
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
        for frontend in reversed(frontends):
            with contextlib.suppress(Exception):
                await frontend.stop()
        if runner is not None:
            await runner.cleanup()
        await orchestrator.aclose()


def run_command(workers: int = typer.Option(1, "--workers", min=1, max=64,
                                           help="Worker processes sharing the web port (needs REDIS_URL).")
                ) -> None:
    """Serve every configured front-end: web always, Slack and Discord when their tokens are set."""
    from core.logging_setup import setup_logging
    from core.settings import load_settings

    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        check_workers(settings, workers)
        if workers > 1:
            raise typer.Exit(run_workers(workers))
        asyncio.run(serve(settings))
    except StartupError as exc:
        console.print(f"[red]Cannot start:[/] {exc}")
        raise typer.Exit(2)
    except KeyboardInterrupt:  # pragma: no cover - signal handlers normally catch it first
        pass
