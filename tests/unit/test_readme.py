"""The README's table of the order's transitions is the state machine's (orders/lifecycle.py)."""

import re
from pathlib import Path

from orders import lifecycle

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_every_transition_with_its_sources_and_target():
    row = re.compile(r"^\| ([a-z ]+) \| ((?:`\w+`(?:, )?)+) → `(\w+)` \|", re.M)
    rows = {}
    for name, sources, target in row.findall(README.read_text()):
        rows[name] = (tuple(re.findall(r"`(\w+)`", sources)), target)

    assert rows == {str(t): (tuple(t.sources), t.target) for t in lifecycle.TRANSITIONS}
