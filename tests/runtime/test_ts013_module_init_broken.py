"""TS013 at runtime: module classes whose initialiser never initialised them, and the legitimate look-alikes.

Each finding must point at the ``def`` line marked ``# TS013 here`` (where the linter
reports it too).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from helpers import found_lines, marked_lines, watch

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


def test_a_missing_super_init_is_reported_at_the_init_and_torchs_error_still_raised() -> None:
    with pytest.raises(AttributeError, match="before Module.__init__"):
        watch(build_without_super, codes=CODES)

    holder = []

    def run() -> None:
        try:
            NoSuperNet()
        except AttributeError as error:
            holder.append(error)

    assert found_lines(run, codes=CODES) == marked_lines(NoSuperNet, codes=CODES)
    assert "cannot assign module before Module.__init__() call" in str(holder[0])


class LateSuper(nn.Module):
    def __init__(self) -> None:  # TS013 here
        self.weight = nn.Parameter(torch.zeros(2))
        super().__init__()


class Child(LateSuper):
    def __init__(self) -> None:
        super().__init__()


def build_late_super_through_a_child() -> None:
    try:
        Child()
    except AttributeError:
        pass


def test_a_parameter_assigned_before_super_init_is_reported_at_the_init_that_did_it() -> None:
    assert found_lines(build_late_super_through_a_child, codes=CODES) == marked_lines(LateSuper, codes=CODES)


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


def test_the_setattr_wrapper_is_removed_after_the_test() -> None:
    original = nn.Module.__setattr__
    watch(lambda: nn.Linear(2, 2), codes=CODES)
    assert nn.Module.__setattr__ is original


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
