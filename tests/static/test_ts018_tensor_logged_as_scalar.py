"""TS018 static: focused cases beyond the inline VALID / INVALID examples."""

from __future__ import annotations

from helpers import expected, found, lint

CODES = ["TS018"]


def test_the_call_is_reported_on_its_first_line() -> None:
    source = """
        import torch.nn.functional as F
        def step(model, x, y, writer, i):
            loss = F.nll_loss(model(x), y)
            writer.add_scalar(
                "loss",
                loss,
                i,
            )
    """
    (finding,) = lint(source, CODES)
    assert finding.line == 5


def test_a_loss_module_bound_at_module_level_and_a_lightning_logger() -> None:
    source = """
        import torch.nn as nn
        criterion = nn.BCEWithLogitsLoss().to("cpu")
        def training_step(self, batch, i):
            x, y = batch
            loss = criterion(self(x), y)
            self.logger.experiment.add_scalar("train/loss", loss.mean(), self.global_step)  # expect: TS018
            return loss
    """
    assert found(source, CODES) == expected(source)


def test_a_backpropagated_name_of_unknown_origin_is_a_tensor() -> None:
    source = """
        def step(model, batch, writer, i):
            out = model(**batch)
            loss = out["loss"]
            loss.backward()
            writer.add_scalar("loss", loss, i)  # expect: TS018
    """
    assert found(source, CODES) == expected(source)


def test_a_name_reused_for_a_number_after_the_backward_is_not() -> None:
    source = """
        def step(model, batch, writer, i, compute):
            loss = compute(model, batch)
            loss.backward()
            loss = compute(model, batch).item()
            writer.add_scalar("loss", loss, i)
    """
    assert found(source, CODES) == set()


def test_noqa_silences_the_line() -> None:
    source = """
        def step(model, x, y, criterion, writer, i):
            loss = criterion(model(x), y)
            writer.add_scalar("loss", loss, i)  # noqa: TS018
    """
    assert found(source, CODES) == set()
