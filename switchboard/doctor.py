"""`switchboard doctor`'s wiring: the core's checks, then the chat front-ends', each isolated from the others."""

from __future__ import annotations

from bots.checks import CHAT_CHECKS
from bots.support.checks import check_support
from core.doctor import CORE_CHECKS, Check, CheckResult
from switchboard.sync_jobs import check_sources
from core.settings import Settings


async def check_coordination(settings: Settings) -> CheckResult:
    """Redis (REDIS_URL), which replicas and `--workers` share; in-process when unset."""
    from coordination import connect

    if settings.redis_url is None or not settings.redis_url.get_secret_value():
        return CheckResult("coordination", True, "in-process (one replica); set REDIS_URL to run several")
    coord = connect(settings.redis_url)
    try:
        problem = await coord.ping()
    finally:
        await coord.aclose()
    if problem:
        return CheckResult("coordination", False, problem, "start Redis, or fix REDIS_URL")
    return CheckResult("coordination", True, "Redis answers (shared by the replicas)")


async def check_replicas(settings: Settings) -> list[CheckResult]:
    """With Redis: the replicas alive on it, and whether one started here with these settings would share their
    conversations (what `switchboard run` refuses otherwise). Nothing to say without Redis."""
    from coordination import connect
    from switchboard.placement import FIX, Placement, clash

    if settings.redis_url is None or not settings.redis_url.get_secret_value():
        return []
    coord = connect(settings.redis_url)
    try:
        if await coord.ping():
            return []  # check_coordination already says Redis is unreachable
        alive = await coord.replicas.members()
    finally:
        await coord.aclose()
    problem = clash(Placement.of(settings, settings.replica_id or "this one"), alive)
    if problem:
        return [CheckResult("replicas", False, problem, FIX)]
    return [CheckResult("replicas", True, f"{len(alive)} alive on this Redis; one started with these settings would "
                                          "share their conversations")]


CHECKS: tuple[Check, ...] = (*CORE_CHECKS, check_coordination, check_replicas, check_sources, *CHAT_CHECKS,
                             check_support)


async def run_checks(settings: Settings, checks: tuple[Check, ...] = CHECKS) -> list[CheckResult]:
    results: list[CheckResult] = []
    for check in checks:
        results.extend(await _each(check, settings))
    return results


async def _each(check: Check, settings: Settings) -> list[CheckResult]:
    try:
        result = await check(settings)
    except Exception as exc:  # noqa: BLE001 - a broken check must not hide the others
        return [CheckResult(getattr(check, "__name__", "check"), False, f"the check itself failed: {exc}",
                            "report this as a bug")]
    return list(result) if isinstance(result, list) else [result]
