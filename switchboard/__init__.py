"""The composition root: the `switchboard` command, `switchboard run` and the doctor's wiring.

It sits above `core/`, `knowledge/` and `bots/` and is the only place that knows all three; none of them imports
it (`tests/test_boundaries.py` checks the directions).
"""
