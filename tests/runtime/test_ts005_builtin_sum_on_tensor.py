"""TS005 at runtime: Python's sum() walking a tensor, and every legitimate use of sum() next to tensors.

Lines the finding must point at end with ``# TS005 here``.
"""

from __future__ import annotations

import builtins
import inspect
import pickle
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

from conftest import devices
from helpers import found_lines, marked_lines, watch

CODES = ["TS005"]


# -- the bug ---------------------------------------------------------------------------------


def sum_of_a_loss_vector(device: str) -> None:
    losses = torch.rand(16, device=device)
    total = sum(losses)  # TS005 here
    assert total.dim() == 0


def sum_of_a_matrix(device: str) -> None:
    logits = torch.randn(8, 3, device=device)
    column_sums = sum(logits)  # TS005 here
    assert column_sums.shape == (3,)  # a vector, not the scalar people expect


def sum_with_start(device: str) -> None:
    weights = torch.ones(4, 2, device=device)
    sum(weights, torch.zeros(2, device=device))  # TS005 here


def generator_of_rows(device: str) -> None:
    weight = nn.Linear(4, 6).to(device).weight
    penalty = sum(row.norm() for row in weight)  # TS005 here
    penalty.backward()


def generator_of_items(device: str) -> None:
    """One device sync per element: reported too (see the check's docstring)."""
    scores = torch.rand(10, device=device)
    sum(s.item() for s in scores)  # TS005 here


def generator_over_a_reshaped_tensor_with_grad(device: str) -> None:
    flat = torch.randn(12, device=device, requires_grad=True)
    sum(row.max() for row in flat.view(4, 3))  # TS005 here


def generator_under_no_grad(device: str) -> None:
    with torch.no_grad():
        batch = torch.randn(5, 3, device=device)
        sum(x.abs().max() for x in batch)  # TS005 here


BUGS = [sum_of_a_loss_vector, sum_of_a_matrix, sum_with_start, generator_of_rows, generator_of_items,
        generator_over_a_reshaped_tensor_with_grad, generator_under_no_grad]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bug", BUGS, ids=lambda f: f.__name__)
def test_sum_over_a_tensor_is_reported_at_the_call(bug: Callable, device: str) -> None:
    assert found_lines(bug, device, codes=CODES) == marked_lines(bug, codes=CODES)


def test_message_gives_the_shape() -> None:
    (finding,) = watch(sum_of_a_matrix, "cpu", codes=CODES)
    assert finding.code == "TS005"
    assert finding.detail == "sum() over a tensor of shape (8, 3): 8 Python-level additions"
    (finding,) = watch(generator_of_rows, "cpu", codes=CODES)
    assert finding.detail == "sum() over a generator that iterates a tensor row by row"


def test_generator_is_not_consumed_by_the_check() -> None:
    seen = []

    def run() -> None:
        t = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
        gen = (row.sum() for row in t)
        next(gen)  # partly consumed before sum() sees it
        seen.append(sum(gen))

    assert len(watch(run, codes=CODES)) == 1
    assert seen[0].item() == 5.0 + 9.0


# -- what the wrapper must leave exactly as it was ---------------------------------------------


def test_results_and_errors_are_unchanged() -> None:
    results = []

    def run() -> None:
        t = torch.arange(12.0).reshape(4, 3)
        results.append(sum(t))
        results.append(sum([1, 2, 3], 10))
        results.append(sum([0.5, 0.25], start=1.0))
        results.append(sum(x for x in t))
        for bad in ((), (1,), (["a", "b"],)):
            with pytest.raises(TypeError):
                sum(*bad)
        with pytest.raises(TypeError):
            sum(torch.tensor(3.0))  # iteration over a 0-d tensor: torch's own error

    watch(run, codes=CODES)
    assert torch.equal(results[0], torch.tensor([18.0, 22.0, 26.0]))
    assert results[1:3] == [16, 1.75]
    assert torch.equal(results[3], results[0])


def test_builtin_sum_is_restored_after_the_test() -> None:
    original = builtins.sum
    during = []
    watch(lambda: during.append(builtins.sum), codes=CODES)
    assert during[0] is not original  # it was replaced while the test ran...
    assert builtins.sum is original  # ...and is the real builtin again afterwards


def test_builtin_sum_is_restored_when_the_test_fails() -> None:
    original = builtins.sum

    def failing() -> None:
        sum(torch.ones(3))
        raise ValueError("the test's own failure")

    with pytest.raises(ValueError):
        watch(failing, codes=CODES)
    assert builtins.sum is original


def test_the_stand_in_behaves_like_the_builtin() -> None:
    original = builtins.sum
    checks = []

    def run() -> None:
        stand_in = builtins.sum

        class Reducer:
            reduce = sum  # a builtin does not bind as a method: neither may its stand-in

        checks.append(Reducer().reduce([1, 2]) == 3)
        checks.append(stand_in == original and hash(stand_in) == hash(original))
        checks.append({original: "table entry"}.get(stand_in) == "table entry")  # pandas-style dispatch
        checks.append(pickle.loads(pickle.dumps(stand_in)) is stand_in)
        checks.append(str(inspect.signature(stand_in)) == str(inspect.signature(original)))

    watch(run, codes=CODES)
    assert checks == [True] * 5


# -- legitimate look-alikes: silent ------------------------------------------------------------


def sums_that_never_iterate_a_tensor(device: str) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses, floats = [], []
    for _ in range(3):
        x, y = torch.randn(8, 4, device=device), torch.randn(8, 1, device=device)
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        floats.append(loss.item())
    t = torch.randn(5, 3, device=device)
    sum(floats) / len(floats)
    sum(losses) / len(losses)  # a list of scalar losses
    sum([1, 2, 3])
    sum(range(10))
    sum(p.numel() for p in model.parameters())
    sum(p.grad.norm() for p in model.parameters())  # a generator over parameters, not over a tensor
    sum(t.tolist(), [])
    sum(t.flatten().tolist())
    sum(t.shape)
    t.sum()
    torch.sum(t, dim=0)
    sum(np.arange(4.0))
    sum(x for x in np.ones((3, 2)))
    sum(chunk.mean() for chunk in t.chunk(5))  # chunks keep their dimension: not rows
    sum(part.sum() for part in t.split(2))
    sum(out for out in (t, t * 2))  # a tuple of two tensors
    first, second = t.unbind(1)[:2]
    sum(v for v in (first, second))  # columns, not the rows of one tensor


def _foreign_function(module_name: str, filename: str) -> Callable:
    """A function that calls sum() on a tensor from code that is not the user's."""
    namespace = {"__name__": module_name}
    exec(compile("def reduce(t):\n    return sum(t)\n", filename, "exec"), namespace)
    return namespace["reduce"]


def test_the_same_call_in_user_code_is_reported_there() -> None:
    reduce = _foreign_function("project.metrics", "/home/me/project/metrics.py")
    findings = watch(reduce, torch.ones(3, 2), codes=CODES)
    assert [(f.path, f.line) for f in findings] == [("/home/me/project/metrics.py", 2)]


def sum_called_from_torch_or_a_library(device: str) -> None:
    t = torch.ones(3, 2, device=device)
    _foreign_function("torch._trainsafe_test_helper", "<torch helper>")(t)
    _foreign_function("somelib.ops", "/opt/venv/lib/python3.11/site-packages/somelib/ops.py")(t)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("look_alike", [sums_that_never_iterate_a_tensor, sum_called_from_torch_or_a_library],
                         ids=lambda f: f.__name__)
def test_look_alike_is_silent(look_alike: Callable, device: str) -> None:
    assert watch(look_alike, device, codes=CODES) == []


def test_compiled_code_still_traces_the_builtin() -> None:
    results = []

    def run() -> None:
        @torch.compile(fullgraph=True, backend="eager")
        def reduce(values, t):
            return sum(values) + sum(t)

        results.append(reduce([torch.ones(2), torch.ones(2)], torch.ones(3, 2)))

    watch(run, codes=CODES)
    assert torch.equal(results[0], torch.full((2,), 5.0))
