"""TS018 at runtime: tensors handed to SummaryWriter.add_scalar / add_scalars, and the look-alikes.

TensorBoard is an optional dependency: the tests against the real
``torch.utils.tensorboard.SummaryWriter`` skip without it. The others run the
check against a stand-in writer module with TensorBoard's signatures, to test
the mechanism itself everywhere.
"""

from __future__ import annotations

import sys
import types
from typing import Callable

import pytest
import torch
from torch import nn

from helpers import finding_lines, marked_lines, watch

CODES = ["TS018"]


class StandInWriter:
    """TensorBoard's SummaryWriter logging API (signatures of torch 2.14), recording what it gets."""

    def __init__(self) -> None:
        self.logged: list = []

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, new_style=False,
                   double_precision=False):
        self.logged.append((tag, scalar_value, global_step))

    def add_scalars(self, main_tag, tag_scalar_dict, global_step=None, walltime=None):
        self.logged.append((main_tag, tag_scalar_dict, global_step))


@pytest.fixture
def writer_module(monkeypatch: pytest.MonkeyPatch) -> type:
    module = types.ModuleType("torch.utils.tensorboard.writer")
    module.SummaryWriter = StandInWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard.writer", module)
    return StandInWriter


def _train(writer, log: Callable) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(torch.randn(8, 4)), torch.randn(8, 1))
        loss.backward()
        optimizer.step()
        log(writer, loss, step)


# -- the bug ---------------------------------------------------------------------------


def log_the_tensor(writer, loss, step) -> None:
    writer.add_scalar("loss/train", loss, step)  # TS018 here


def log_detached_by_keyword(writer, loss, step) -> None:
    writer.add_scalar(tag="loss/train", scalar_value=loss.detach(), global_step=step)  # TS018 here


def log_in_a_dict(writer, loss, step) -> None:
    writer.add_scalars("loss", {"train": loss.item(), "raw": loss}, step)  # TS018 here


@pytest.mark.parametrize("log", [log_the_tensor, log_detached_by_keyword, log_in_a_dict])
def test_a_tensor_logged_is_reported_at_the_logging_line(writer_module: type, log: Callable) -> None:
    writer = writer_module()
    findings = watch(_train, writer, log, codes=CODES)
    assert finding_lines(findings) == marked_lines(log, codes=CODES)
    assert len(writer.logged) == 3  # the user's call went through, unchanged


def test_the_message_says_what_was_logged(writer_module: type) -> None:
    (finding,) = watch(_train, writer_module(), log_the_tensor, codes=CODES)
    assert "add_scalar('loss/train') got a torch.float32 tensor with its autograd graph" in finding.message


# -- legitimate look-alikes: silent ------------------------------------------------------


def log_numbers(writer, loss, step) -> None:
    writer.add_scalar("loss/train", loss.item(), step)
    writer.add_scalar("loss/float", float(loss.detach()), global_step=step)
    writer.add_scalars("loss", {"train": loss.item()}, step)
    writer.add_scalar("step", step)


def test_numbers_are_silent(writer_module: type) -> None:
    assert watch(_train, writer_module(), log_numbers, codes=CODES) == []


def test_the_writer_is_restored_after_the_test(writer_module: type) -> None:
    originals = writer_module.add_scalar, writer_module.add_scalars
    watch(_train, writer_module(), log_the_tensor, codes=CODES)
    assert (writer_module.add_scalar, writer_module.add_scalars) == originals


def test_without_tensorboard_imported_nothing_is_patched_or_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("torch.utils.tensorboard", "torch.utils.tensorboard.writer", "tensorboardX", "tensorboardX.writer"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert watch(_train, StandInWriter(), log_the_tensor, codes=CODES) == []
    assert "torch.utils.tensorboard.writer" not in sys.modules and "tensorboard" not in sys.modules


# -- the real SummaryWriter (needs TensorBoard) ---------------------------------------------


def test_the_real_summary_writer_is_watched(tmp_path) -> None:
    tensorboard = pytest.importorskip("torch.utils.tensorboard")
    writer = tensorboard.SummaryWriter(log_dir=str(tmp_path))
    try:
        findings = watch(_train, writer, log_the_tensor, codes=CODES)
        assert finding_lines(findings) == marked_lines(log_the_tensor, codes=CODES)
        assert watch(_train, writer, log_numbers, codes=CODES) == []
    finally:
        writer.close()
