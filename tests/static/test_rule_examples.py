"""Every static rule's inline VALID / INVALID examples, as tests (Fixit's convention).

An INVALID example must be reported exactly on the lines marked
``# expect: TSNNN``; a VALID one must not be reported at all.
"""

from __future__ import annotations

import pytest

from helpers import expected, found
from trainsafe_lint.rules import all_rules

RULES = all_rules()


def _cases(kind: str):
    for code, rule in sorted(RULES.items()):
        for index, source in enumerate(getattr(rule, kind)):
            yield pytest.param(code, source, id=f"{code}-{kind.lower()}-{index}")


@pytest.mark.parametrize("code, source", list(_cases("VALID")))
def test_valid_example_is_not_reported(code: str, source: str) -> None:
    assert found(source, [code]) == set()


@pytest.mark.parametrize("code, source", list(_cases("INVALID")))
def test_invalid_example_is_reported_on_its_marked_lines(code: str, source: str) -> None:
    marks = expected(source)
    assert marks, "an INVALID example must mark at least one line with '# expect: TSNNN'"
    assert found(source, [code]) == marks


def test_every_rule_has_both_kinds_of_examples() -> None:
    for code, rule in RULES.items():
        assert rule.VALID and rule.INVALID, code
