"""RecentKeys: bounded memory of what was handled (redeliveries, threads the bot answers in)."""

from bots.dedupe import RecentKeys


def test_first_time_is_true_once_for_any_of_the_keys() -> None:
    seen = RecentKeys()
    assert seen.first_time("Ev1", ("C1", "1.0"))
    assert not seen.first_time("Ev1")  # a redelivery
    assert not seen.first_time("Ev2", ("C1", "1.0"))  # the same message by another event
    assert seen.first_time(None, ("C1", "2.0"))  # missing keys are ignored


def test_the_oldest_keys_are_forgotten_past_capacity_and_add_refreshes() -> None:
    seen = RecentKeys(capacity=3)
    for key in "abc":
        seen.add(key)
    seen.add("a")  # refreshed: now the newest
    seen.add("d")
    assert "b" not in seen and {"a", "c", "d"} <= {k for k in "abcd" if k in seen} and len(seen) == 3


async def test_shared_keys_fall_back_to_this_replicas_memory_while_the_store_is_away() -> None:
    from bots.dedupe import FallbackDeliveryKeys

    class Flaky:
        def __init__(self) -> None:
            self.up, self.seen = True, set()

        async def first_time(self, *keys):
            if not self.up:
                raise ConnectionError("redis is away")
            fresh = not any(k in self.seen for k in keys)
            self.seen.update(keys)
            return fresh

    shared = Flaky()
    keys = FallbackDeliveryKeys(shared)
    assert await keys.first_time("Ev1") and not await keys.first_time("Ev1")
    shared.up = False
    assert await keys.first_time("Ev2")  # answered, not dropped, while the store is away
    assert not await keys.first_time("Ev2") and not await keys.first_time("Ev1")  # still caught locally
    shared.up = True
    shared.seen.add("Ev3")  # another replica answered it meanwhile
    assert not await keys.first_time("Ev3")
