"""TS011 static: focused cases beyond the inline VALID / INVALID examples."""

from __future__ import annotations

from helpers import expected, found, lint

CODES = ["TS011"]


def test_the_message_names_the_accumulator_and_the_loss() -> None:
    source = """
        def train(model, loader, criterion, optimizer):
            total = 0
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                total += loss
    """
    (finding,) = lint(source, CODES)
    assert finding.line == 7
    assert "`total` keeps the graph of `loss`" in finding.message


def test_a_while_loop_and_a_backward_under_a_condition_are_reported() -> None:
    source = """
        def train(model, batches, criterion, optimizer, accumulate):
            step, total = 0, 0
            while step < len(batches):
                x, y = batches[step]
                loss = criterion(model(x), y) / accumulate
                if step % accumulate == 0:
                    loss.backward()
                total = loss + total  # expect: TS011
                step += 1
    """
    assert found(source, CODES) == expected(source)


def test_a_loss_bound_by_the_loop_itself_is_followed() -> None:
    source = """
        def replay(losses):
            kept = []
            for loss in losses:
                loss.backward(retain_graph=True)
                kept.append(loss)  # expect: TS011
    """
    assert found(source, CODES) == expected(source)


def test_the_accumulator_read_by_autograd_grad_is_in_use() -> None:
    source = """
        import torch
        def meta_step(model, tasks, criterion, params):
            meta_loss = 0
            for x, y in tasks:
                loss = criterion(model(x), y)
                loss.backward(retain_graph=True)
                meta_loss = meta_loss + loss
            return torch.autograd.grad(meta_loss, params)
    """
    assert found(source, CODES) == set()


def test_a_loss_backpropagated_in_another_loop_is_not_this_rule() -> None:
    source = """
        def train(model, loader, criterion, optimizer):
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
            total = 0
            for _ in range(3):
                total += loss
    """
    assert found(source, CODES) == set()


def test_a_closure_is_its_own_scope() -> None:
    source = """
        def train(model, loader, criterion, optimizer):
            total = 0
            for x, y in loader:
                def closure():
                    optimizer.zero_grad()
                    loss = criterion(model(x), y)
                    loss.backward()
                    return loss
                total += optimizer.step(closure).item()
    """
    assert found(source, CODES) == set()


def test_noqa_silences_the_line() -> None:
    source = """
        def train(model, loader, criterion):
            total = 0
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                total += loss  # noqa: TS011
    """
    assert found(source, CODES) == set()
