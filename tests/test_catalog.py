"""The rule catalog is the public contract: codes, names, docs, and the detectors that exist."""

from __future__ import annotations

import re

import pytest

from pytest_trainsafe import detectors
from pytest_trainsafe.catalog import RULES, UnknownCodeError, expand_codes

SECTIONS = ["What it does", "Why is this bad?", "Known problems", "Example", "Use instead",
            "Runtime detection", "Options", "References"]


def test_codes_and_names_are_unique_and_well_formed() -> None:
    assert len({rule.name for rule in RULES.values()}) == len(RULES)
    for code, rule in RULES.items():
        assert re.fullmatch(r"TS\d{3}", code) and rule.code == code
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule.name)
        assert rule.message and rule.hint and not rule.message.endswith(".")


@pytest.mark.parametrize("code", list(RULES))
def test_every_required_detector_exists(code: str) -> None:
    required = RULES[code].required
    if "S" in required:
        assert code in detectors.static_codes(), f"{code} needs a static detector"
    if "R" in required:
        assert code in detectors.runtime_codes(), f"{code} needs a runtime detector"


@pytest.mark.parametrize("code", list(RULES))
def test_every_rule_is_documented_in_the_fixed_sections(code: str) -> None:
    doc = RULES[code].doc()
    assert doc.startswith(f"# {code} {RULES[code].name}\n")
    headings = re.findall(r"^## (.+)$", doc, flags=re.MULTILINE)
    assert headings == SECTIONS


def test_selectors_expand_codes_prefixes_and_names() -> None:
    assert expand_codes(["TS001", "layer-in-forward", "TS01"], "test")[:2] == ["TS001", "TS002"]
    assert "TS019" in expand_codes(["TS01"], "test")
    with pytest.raises(UnknownCodeError, match="unknown rule code 'TS1234' in pyproject.toml"):
        expand_codes(["TS1234"], "pyproject.toml")
