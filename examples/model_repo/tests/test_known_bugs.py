"""Regression tests for the tool itself: bugs we once had must stay visible.

The ``trainsafe`` fixture watches a test (with or without ``--trainsafe``) and hands
its findings to the test instead of failing it, so a test can assert that a
deliberately buggy variant of our training code *is* flagged. The buggy lines carry
``# noqa: TSNNN`` so that ``trainsafe lint`` (pre-commit, CI) accepts them.
"""

import torch
import torch.nn.functional as F

from tinynet import TinyNet, make_loaders


def train_without_zero_grad(model, loader, optimizer):
    """train_one_epoch as it was before the fix: gradients of every batch piled up."""
    model.train()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()  # noqa: TS001 - the bug this test keeps visible


@torch.no_grad()
def count_correct_with_builtin_sum(model, loader):
    """evaluate() as it was before the fix: Python's sum() looped over every prediction."""
    model.eval()
    correct = 0
    for x, y in loader:
        correct += int(sum(model(x).argmax(dim=1) == y))  # noqa: TS005 - the bug this test keeps visible
    return correct


def _loaders():
    torch.manual_seed(0)
    return make_loaders(samples=64, batch_size=16)


def test_a_missing_zero_grad_is_flagged(trainsafe):
    train_loader, _ = _loaders()
    model = TinyNet()
    train_without_zero_grad(model, train_loader, torch.optim.SGD(model.parameters(), lr=0.1))

    assert trainsafe.codes == {"TS001"}
    (finding,) = trainsafe.findings
    assert finding.path.endswith("test_known_bugs.py")
    assert "noqa: TS001" in open(finding.path).read().splitlines()[finding.line - 1]


def test_counting_with_the_builtin_sum_is_flagged(trainsafe):
    _, val_loader = _loaders()
    count_correct_with_builtin_sum(TinyNet(), val_loader)

    assert trainsafe.codes == {"TS005"}
