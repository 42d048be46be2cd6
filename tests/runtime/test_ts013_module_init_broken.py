"""TS013 at runtime: module classes whose initialiser never initialised them, and the legitimate look-alikes.

Each finding must point at the ``def`` line marked ``# TS013 here`` (where the linter
reports it too).
"""

from __future__ import annotations

import dataclasses
from typing import List, Tuple

import pytest
import torch
from torch import nn

from helpers import finding_lines, found_lines, marked_lines, watch, watch_outcome
from pytest_trainsafe.finding import Finding

CODES = ["TS013"]


# -- the bug ---------------------------------------------------------------------------


class MisspelledNet(nn.Module):
    def __int__(self) -> None:  # TS013 here
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def call_misspelled() -> None:
    model = MisspelledNet()
    with pytest.raises(AttributeError):
        model(torch.randn(3, 4))


def test_a_misspelled_init_is_reported_at_its_def_line_when_the_module_is_called() -> None:
    assert found_lines(call_misspelled, codes=CODES) == marked_lines(MisspelledNet, codes=CODES)


class NoSuperNet(nn.Module):
    def __init__(self) -> None:  # TS013 here
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def build_without_super() -> None:
    NoSuperNet()


def failing_test_findings(function) -> Tuple[List[Finding], BaseException]:
    findings, error = watch_outcome(function, codes=CODES)
    assert isinstance(error, AttributeError), error
    return findings, error


def test_a_missing_super_init_is_reported_at_the_init_when_the_test_fails_on_torchs_error() -> None:
    findings, error = failing_test_findings(build_without_super)
    assert finding_lines(findings) == marked_lines(NoSuperNet, codes=CODES)
    assert findings[0].detail == "NoSuperNet.__init__ assigns a layer or parameter before super().__init__()"
    assert str(error) == "cannot assign module before Module.__init__() call"


def test_torchs_error_reaches_the_test_unchanged() -> None:
    with pytest.raises(AttributeError, match=r"^cannot assign module before Module.__init__\(\) call$"):
        watch(build_without_super, codes=CODES)


class LateSuper(nn.Module):
    def __init__(self) -> None:  # TS013 here
        self.weight = nn.Parameter(torch.zeros(2))
        super().__init__()


class Child(LateSuper):
    def __init__(self) -> None:
        super().__init__()


def build_late_super_through_a_child() -> None:
    Child()


def test_a_parameter_assigned_before_super_init_is_reported_at_the_init_that_did_it() -> None:
    findings, _ = failing_test_findings(build_late_super_through_a_child)
    assert finding_lines(findings) == marked_lines(LateSuper, codes=CODES)


def test_the_error_is_found_behind_the_one_the_test_raised_from_it() -> None:
    def build_in_a_factory() -> None:
        try:
            NoSuperNet()
        except AttributeError as exc:
            raise AttributeError("could not build the model") from exc

    findings, _ = failing_test_findings(build_in_a_factory)
    assert finding_lines(findings) == marked_lines(NoSuperNet, codes=CODES)


@dataclasses.dataclass(eq=False)
class DataNoSuper(nn.Module):
    head: nn.Module


def build_a_dataclass_module_without_super() -> None:
    DataNoSuper(nn.Linear(2, 2))  # TS013 here


def test_a_generated_init_is_reported_at_the_line_that_built_the_module() -> None:
    findings, _ = failing_test_findings(build_a_dataclass_module_without_super)
    assert finding_lines(findings) == marked_lines(build_a_dataclass_module_without_super, codes=CODES)


def test_an_error_the_test_handles_itself_is_not_seen() -> None:
    """Only the error a test fails with is looked at: nothing runs on attribute assignments."""
    def handled() -> None:
        try:
            NoSuperNet()
        except AttributeError:
            pass

    assert watch(handled, codes=CODES) == []


# -- legitimate look-alikes: silent --------------------------------------------------------


class Proper(nn.Module):
    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.fc = nn.Linear(4, 2)

    def __int__(self) -> int:
        return 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class NoInit(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class Base(nn.Module):
    def __init__(self) -> None:
        super(Base, self).__init__()
        self._init_()

    def _init_(self) -> None:
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class Hooked(Base):
    def _init_(self) -> None:  # a hook the base's __init__ calls: not a misspelling
        self.fc = nn.Linear(4, 3)


class Converts(nn.Module):
    def __int__(self) -> int:  # a real conversion, no __init__ needed
        return 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def use_legitimate_modules() -> None:
    x = torch.randn(3, 4)
    for model in (Proper(), NoInit(), Hooked(), Converts(), nn.Sequential(nn.Linear(4, 4), nn.ReLU())):
        model(x)
        model.train()
        model.eval()
    assert int(Proper()) == 2


def test_legitimate_modules_are_silent() -> None:
    assert found_lines(use_legitimate_modules, codes=CODES) == set()


def attribute_errors_of_other_kinds() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises((TypeError, AttributeError)):
        model.weight = torch.zeros(2, 2)  # a plain tensor over a parameter: torch's TypeError
    with pytest.raises(AttributeError):
        model.no_such_thing


def test_other_assignment_errors_are_not_findings() -> None:
    assert found_lines(attribute_errors_of_other_kinds, codes=CODES) == set()


def test_module_attribute_assignment_is_never_patched() -> None:
    original = vars(nn.Module)["__setattr__"]
    seen = []
    watch(lambda: seen.append(vars(nn.Module)["__setattr__"] is original), codes=CODES)
    assert seen == [True]


@dataclasses.dataclass(eq=False)
class DataModule(nn.Module):
    width: int = 2

    def __post_init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(self.width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_a_dataclass_module_initialised_in_post_init_is_silent() -> None:
    assert found_lines(lambda: DataModule()(torch.randn(3, 2)), codes=CODES) == set()
