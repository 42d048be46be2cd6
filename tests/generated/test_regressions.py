"""Regression tests from shrunk counterexamples of the generated-program properties.

Each program here is the minimal form of a disagreement ``test_generated_programs.py``
found between a detector and the ground truth, written out so that it stays fixed
whatever the generator becomes. ``# expect: TSNNN`` marks the line a finding belongs to;
``static_only`` / ``runtime_only`` name codes one side is documented not to report.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Dict, Iterable, Set

from helpers import expected, lint, load_script, watch
from pytest_trainsafe.detectors import runtime_codes, static_codes

_names = itertools.count()


def _by_code(pairs: Iterable) -> Dict[str, Set[int]]:
    found: Dict[str, Set[int]] = {}
    for line, code in pairs:
        found.setdefault(code, set()).add(line)
    return found


def check_both(source: str, static_only: Iterable[str] = (), runtime_only: Iterable[str] = ()) -> None:
    """The linter and the runtime monitor report exactly the marked lines (each side: the codes it has)."""
    source = textwrap.dedent(source)
    marks = expected(source)
    static_want = _by_code((line, code) for line, code in marks
                           if code in static_codes() and code not in runtime_only)
    static_got = _by_code((f.line, f.code) for f in lint(source) if f.code in static_codes())
    assert static_got == static_want, "linter"
    with tempfile.TemporaryDirectory(prefix="trainsafe-regression-") as folder:
        path = Path(folder) / "regression_program.py"
        path.write_text(source)
        name = f"trainsafe_regression_{next(_names)}"
        try:
            findings = watch(load_script(path, name).main)
        finally:
            sys.modules.pop(name, None)
    runtime_want = _by_code((line, code) for line, code in marks
                            if code in runtime_codes() and code not in static_only)
    runtime_got = _by_code((f.line, f.code) for f in findings if f.code in runtime_codes())
    assert runtime_got == runtime_want, "plugin"
    assert all(Path(f.path).name == path.name for f in findings)


_PRELUDE = """\
import torch
import torch.nn.functional as F
from torch import nn


def make_batches(count, size, seed):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 4, generator=generator), torch.randint(0, 3, (size,), generator=generator))
            for _ in range(count)]
"""


def test_a_closure_that_clears_after_its_backward_is_zero_grad_misplaced() -> None:
    # Found with loop=closure, zero_grad=misplaced: the runtime check judged steps only before
    # the closure had run. The linter documents this shape (zero_grad and step in different
    # functions) as a miss.
    check_both(_PRELUDE + """

def main():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in make_batches(3, 2, seed=1):
        def closure():
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.zero_grad()  # expect: TS008
            return loss

        optimizer.step(closure)
""", runtime_only=["TS008"])


def test_an_lbfgs_closure_that_clears_after_its_backward_is_zero_grad_misplaced() -> None:
    check_both(_PRELUDE + """

def main():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3)
    for x, y in make_batches(3, 2, seed=1):
        def closure():
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            model.zero_grad()  # expect: TS008
            return loss

        optimizer.step(closure)
""", runtime_only=["TS008"])


def test_an_lbfgs_closure_that_clears_first_is_silent() -> None:
    check_both(_PRELUDE + """

def main():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3)
    for x, y in make_batches(3, 2, seed=1):
        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        optimizer.step(closure)
""")


def test_a_one_batch_eval_check_after_each_epoch_is_not_an_evaluation_pass() -> None:
    # Found with eval=single, eval_when=epoch: the runtime check took the same line called once
    # per epoch (with training steps in between) for a loop over batches.
    check_both(_PRELUDE + """

def check(model, batches):
    model.eval()
    x, y = next(iter(batches))
    return (model(x).argmax(dim=1) == y).float().mean().item()


def main():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train, val = make_batches(3, 2, seed=1), make_batches(2, 2, seed=2)
    history = []
    for epoch in range(2):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        history.append(check(model, val))
    return history
""")


def test_an_eval_loop_after_each_epoch_is_still_an_evaluation_pass() -> None:
    check_both(_PRELUDE + """

def main():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train, val = make_batches(3, 2, seed=1), make_batches(2, 2, seed=2)
    for epoch in range(2):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        model.eval()
        for x, y in val:
            out = model(x)  # expect: TS004
""")


def test_clearing_gradients_by_hand_does_not_hide_an_eval_loop_without_no_grad() -> None:
    # Found with zero_grad=grad_none, eval=grad_on: the linter took ``p.grad = None`` for
    # gradient work (like a saliency map's ``x.grad``) and excused the whole function.
    check_both(_PRELUDE + """

def main():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in make_batches(3, 2, seed=1):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        for p in model.parameters():
            p.grad = None
    model.eval()
    correct = 0
    for x, y in make_batches(2, 2, seed=2):
        out = model(x)  # expect: TS004
        correct += (out.argmax(dim=1) == y).sum().item()
    return correct
""")


def test_a_head_added_after_an_lbfgs_optimizer_is_reported_though_the_closure_clears_first() -> None:
    # Found with layer=replaced_late, LBFGS, zero_grad=model at the end: the runtime check looked
    # for gradients only as a step began, before the closure's backward, and after the previous
    # step's model.zero_grad() had set them to None.
    check_both(_PRELUDE + """

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(x))


def main():
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3)
    model.head = nn.Linear(8, 3)  # expect: TS015
    for x, y in make_batches(3, 2, seed=1):
        def closure():
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        optimizer.step(closure)
        model.zero_grad()
""")


def test_a_one_batch_check_in_an_epoch_loop_that_trains_through_a_helper_is_not_an_eval_pass() -> None:
    # Found with loop=helper, eval=single per epoch: the linter took the epoch loop for an
    # evaluation loop, not seeing the training inside train_step().
    check_both(_PRELUDE + """

def train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def main():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train, val = make_batches(3, 2, seed=1), make_batches(2, 2, seed=2)
    history = []
    for epoch in range(2):
        model.train()
        for x, y in train:
            train_step(model, optimizer, x, y)
        model.eval()
        x, y = val[0]
        history.append((model(x).argmax(dim=1) == y).float().mean().item())
    return history
""")


def test_a_one_batch_check_after_the_batch_loop_is_not_training_in_eval_mode() -> None:
    # Found with eval=single per epoch, restore_train=True, dropout: the linter took the check's
    # forward for a training call, because the epoch loop around it runs backward (in the batch loop).
    check_both(_PRELUDE + """

def main():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train, val = make_batches(3, 2, seed=1), make_batches(2, 2, seed=2)
    history = []
    for epoch in range(2):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        model.eval()
        x, y = val[0]
        history.append((model(x).argmax(dim=1) == y).float().mean().item())
    return history
""")


def test_the_same_check_without_model_train_is_train_mode_not_restored() -> None:
    check_both(_PRELUDE + """

def main():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train, val = make_batches(3, 2, seed=1), make_batches(2, 2, seed=2)
    history = []
    model.train()
    for epoch in range(2):
        for x, y in train:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        model.eval()  # expect: TS007
        x, y = val[0]
        history.append((model(x).argmax(dim=1) == y).float().mean().item())
    return history
""")


def test_an_lbfgs_loss_accumulated_over_four_steps_keeps_four_graphs() -> None:
    # Found with LBFGS, running=tensor, 4 batches: before the first step ended, each of the
    # closure's evaluations counted as a generation of its own, so the fourth step's backward
    # looked back at the first step's discarded evaluations instead of three steps.
    check_both(_PRELUDE + """

def main():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3)
    running = 0.0
    for x, y in make_batches(4, 2, seed=1):
        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        running += loss  # expect: TS011
    return running.item()
""", runtime_only=["TS011"])
