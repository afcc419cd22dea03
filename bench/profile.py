"""Summarise a py-spy profile in collapsed-stack form (what `SWITCHBOARD_BENCH_PROFILE` records).

`python -m bench.profile FILE [N]` prints the N functions with the most samples, inclusive (anywhere on the
stack) and self (at its top), as shares of all samples: the "top lines" the performance notes quote.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def _frame(raw: str) -> str:
    """`function (path/to/module.py:123)` → `function (module.py)`: one entry per function, not per line."""
    name, _, where = raw.partition(" (")
    where = _FRAME_LINE.sub(")", "(" + where) if where else ""
    short = where.rsplit("/", 1)[-1].strip("()")
    return f"{name} ({short})" if short else name


def summarise(text: str) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        count = int(match["count"])
        frames = [_frame(f) for f in match["stack"].split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, inclusive, own


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    top = int(argv[1]) if len(argv) > 1 else 25
    total, inclusive, own = summarise(Path(argv[0]).read_text())
    if not total:
        print("no samples")
        return 1
    print(f"{total} samples\n\ninclusive:")
    for frame, count in inclusive.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print("\nself:")
    for frame, count in own.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
