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
