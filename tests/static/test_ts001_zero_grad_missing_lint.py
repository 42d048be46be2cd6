"""TS001 statically: cases the inline VALID/INVALID examples cannot express on their own."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from helpers import expected, found, lint

ROOT = Path(__file__).resolve().parents[2]
CODES = ["TS001"]


def _doc_block(section: str) -> str:
    doc = (ROOT / "pytest_trainsafe" / "docs" / "TS001.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}\n.*?```python\n(.*?)```", doc, flags=re.MULTILINE | re.DOTALL)
    assert match, section
    return match.group(1)


@pytest.mark.parametrize("kind", ["bad", "fixed"])
def test_the_example_scripts_are_reported_exactly_on_their_marked_lines(kind: str) -> None:
    source = (ROOT / "examples" / kind / "ts001_zero_grad_missing.py").read_text(encoding="utf-8")
    assert found(source, CODES) == expected(source)
    assert bool(expected(source)) == (kind == "bad")


def test_the_documented_example_is_reported_and_its_fix_is_not() -> None:
    example = _doc_block("Example")
    assert found(example, CODES) == expected(example) != set()
    assert found(_doc_block("Use instead"), CODES) == set()


def test_the_message_says_when_zero_grad_is_called_outside_the_loop() -> None:
    source = """\
        import torch

        def train(model, loader, optimizer):
            optimizer.zero_grad()
            for x, y in loader:
                model(x).sum().backward()
                optimizer.step()
        """
    [finding] = lint(source, CODES)
    assert finding.line == 7 and finding.detail == "zero_grad() is called, but not inside this loop"
    [plain] = lint(source.replace("optimizer.zero_grad()", "pass"), CODES)
    assert plain.detail == ""


def test_a_clearing_helper_defined_after_the_loop_counts() -> None:
    source = """\
        import torch

        def fit(model, loader, opt):
            for x, y in loader:
                clear(model)
                model(x).sum().backward()
                opt.step()

        def clear(model):
            for p in model.parameters():
                p.grad = None
        """
    assert found(source, CODES) == set()
    assert found(source.replace("p.grad = None", "print(p)"), CODES) == {(7, "TS001")}


def test_a_custom_optimizer_whose_step_clears_is_not_reported() -> None:
    source = """\
        import torch

        class PlainSGD:
            def __init__(self, params, lr):
                self.params, self.lr = list(params), lr

            @torch.no_grad()
            def step(self):
                for p in self.params:
                    p -= self.lr * p.grad
                    p.grad = None

        opt = PlainSGD(model.parameters(), 0.1)
        for x, y in loader:
            loss_fn(model(x), y).backward()
            opt.step()
        """
    assert found(source, CODES) == set()


def test_a_realistic_trainer_is_not_reported() -> None:
    source = """\
        import torch
        from torch import nn


        class Trainer:
            def __init__(self, model, loader, val_loader, accumulation=4):
                self.model, self.loader, self.val_loader = model, loader, val_loader
                self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
                self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, 1e-2, total_steps=100)
                self.scaler = torch.amp.GradScaler("cuda")
                self.accumulation = accumulation

            def fit(self, epochs):
                for epoch in range(epochs):
                    self.model.train()
                    for i, (x, y) in enumerate(self.loader):
                        with torch.autocast("cuda"):
                            loss = nn.functional.cross_entropy(self.model(x), y) / self.accumulation
                        self.scaler.scale(loss).backward()
                        if (i + 1) % self.accumulation == 0:
                            self.scaler.unscale_(self.optimizer)
                            nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                            self.scaler.step(self.optimizer)
                            self.scaler.update()
                            self.scheduler.step()
                            self._zero()
                    self.validate()

            def _zero(self):
                self.optimizer.zero_grad(set_to_none=True)

            @torch.no_grad()
            def validate(self):
                self.model.eval()
                for x, y in self.val_loader:
                    self.model(x)
        """
    assert found(source, CODES) == set()
    assert found(source.replace("self.optimizer.zero_grad(set_to_none=True)", "pass"), CODES) == {(23, "TS001")}


def test_a_step_in_a_nested_function_belongs_to_that_function() -> None:
    source = """\
        import torch
        for x, y in loader:
            loss_fn(model(x), y).backward()
            def apply():
                optimizer.step()
            apply()
        """
    assert found(source, CODES) == set()


def test_a_file_of_another_framework_is_not_linted_but_one_that_also_uses_torch_is() -> None:
    source = """\
        import numpy as np
        for x, y in batches:
            loss_fn(net(x), y).backward()
            optimizer.step()
        """
    assert found(source, CODES) == set()
    assert found(textwrap.dedent(source).replace("numpy", "torch"), CODES) == {(4, "TS001")}


def test_known_miss_a_gan_missing_only_one_zero_grad() -> None:
    """Any clearing in the loop silences it; the runtime check reports this one."""
    source = """\
        import torch
        for real in loader:
            netD.zero_grad()
            d_loss(netD(real), netD(netG(z).detach())).backward()
            optimizerD.step()
            g_loss(netD(netG(z))).backward()
            optimizerG.step()
        """
    assert found(source, CODES) == set()


def test_known_miss_an_lbfgs_closure_without_zero_grad() -> None:
    source = """\
        import torch
        optimizer = torch.optim.LBFGS(model.parameters())
        for _ in range(20):
            def closure():
                loss = loss_fn(model(x), y)
                loss.backward()
                return loss
            optimizer.step(closure)
        """
    assert found(source, CODES) == set()


def test_noqa_silences_the_step_line() -> None:
    source = """\
        import torch
        for x, y in loader:
            loss_fn(model(x), y).backward()
            optimizer.step()  # noqa: TS001
        """
    assert found(source, CODES) == set()
