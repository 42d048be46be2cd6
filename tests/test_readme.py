"""The README tells the truth: its rule table matches the code, CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_trainsafe import detectors
from pytest_trainsafe.catalog import RULES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_rule_table_lists_every_rule_with_the_detectors_that_exist() -> None:
    rows = re.findall(r"^\| (TS\d{3}) \| `([a-z0-9-]+)` \| (✓?) \| (✓?) \|$", README, flags=re.MULTILINE)
    assert [code for code, *_ in rows] == list(RULES)
    for code, name, static, runtime in rows:
        assert name == RULES[code].name
        assert bool(static) == (code in detectors.static_codes()), code
        assert bool(runtime) == (code in detectors.runtime_codes()), code


def test_ci_runs_exactly_the_readme_test_command() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    test_command = next(b.strip() for b in blocks if "pytest" in b and "pip install" in b)
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_lines == [test_command]
