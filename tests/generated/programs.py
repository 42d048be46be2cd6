"""Training programs composed from fragments, each with the findings it must produce, known by construction.

A user's training script combines the same few moves (build a model and an optimizer,
iterate batches, forward, loss, backward, step, clear the gradients, evaluate, log,
move devices) in endless orders and styles. ``programs()`` is a hypothesis strategy that
draws one ``Choices`` (one option per axis below), renders it to a small but complete
script (``main()``, ``nn.Linear(4, 8)``-sized models, 3-4 batches of 2-4 samples, CPU,
seeded: it runs in well under a second) and derives from the same choices the codes
each detector must report (``Program.static``, ``Program.runtime``) and the line each
finding belongs to (``Program.marks``, also written in the source as ``# expect: TSNNN``).

Axes (the first option of each is the most ordinary one: hypothesis shrinks towards it):

``layer``
    where the model's head is built: ``init`` (in ``__init__``), ``init_helper`` (a method
    only ``__init__`` calls), ``forward`` (``head = nn.Linear(...)`` in ``forward``),
    ``forward_helper`` (in a method ``forward`` calls), ``replaced`` (``model.head = ...``
    in ``main`` before the optimizer is built), ``replaced_late`` (the same, after it).
``dropout``
    whether the model has an ``nn.Dropout`` (a layer whose behaviour depends on the mode).
``data``
    a ``list`` of ``(x, y)`` tuples, or a ``DataLoader(TensorDataset(...))``.
``loop``
    ``plain`` (the batch loop in ``main``), ``helper`` (``train_step(...)`` called from the
    loop), ``trainer`` (a ``Trainer`` class whose ``fit`` loops), ``accumulate`` (``loss / 2``,
    step and clear every 2 batches), ``closure`` (``optimizer.step(closure)``, the forward and
    backward in the closure; SGD, Adam or LBFGS).
``epochs``
    1 (no epoch loop) or 2 (an epoch loop around the batch loop).
``zero_grad``
    ``optimizer`` / ``model`` / ``set_to_none`` (``zero_grad(set_to_none=True|False)``) /
    ``grad_none`` (``for p in model.parameters(): p.grad = None``), each at the ``start`` or
    the ``end`` (after the step) of an iteration; ``absent``; ``per_epoch`` (once per epoch,
    outside the batch loop); ``misplaced`` (``optimizer.zero_grad()`` or ``model.zero_grad()``
    between ``backward()`` and ``step()``).
``restore_train``
    ``model.train()`` at the start of each epoch's training.
``clip``, ``scheduler``
    gradient clipping before each step; a ``StepLR`` stepped after each epoch.
``eval``
    ``none``; ``single`` (one forward, no loop); ``no_grad`` (the loop under ``with
    torch.no_grad()`` / ``torch.inference_mode()``); ``decorator`` (``@torch.no_grad()`` on
    ``evaluate``); ``caller`` (``evaluate`` without a context of its own, called under ``with
    torch.no_grad():``); ``grad_on`` (the loop with autograd on). With ``eval_mode`` (whether
    ``model.eval()``, or ``model.train(False)`` as ``eval_call`` says, runs first), ``eval_where`` (``inline`` in the training function or in an
    ``evaluate`` ``helper``) and ``eval_when`` (``after`` training, or after each ``epoch``).
``loss``
    ``ce`` (``F.cross_entropy``), ``criterion`` (``nn.CrossEntropyLoss()``), ``nll``
    (``nll_loss(log_softmax(out))``), ``bce`` (``binary_cross_entropy_with_logits`` on logits),
    ``bce_probs`` (``binary_cross_entropy(sigmoid(out))``), ``softmax_ce`` /
    ``softmax_criterion`` (softmax output fed to cross-entropy), ``sigmoid_bce`` (sigmoid
    output fed to ``binary_cross_entropy_with_logits``), ``zero_temperature``
    (``cross_entropy(out / TEMPERATURE, y)`` with ``TEMPERATURE = 0.0``: NaN).
``running``
    how the training loss is logged: ``none``, ``item`` (``running += loss.item()``),
    ``detach`` (``running += loss.detach()``), ``tensor`` (``running += loss``).
``summary``
    a statistic of the trained weights: ``none``, ``method`` (``t.sum()``), ``torch_sum``,
    ``floats`` (``sum(history)``), ``numel`` (``sum(p.numel() for p in ...)``), ``builtin``
    (``sum(t)``), ``builtin_items`` (``sum(v.item() for v in t)``), ``listcomp``
    (``sum([v.item() for v in t])``).
``device``
    ``none``; ``moved`` (``DEVICE = torch.device("cpu")``, model and every batch moved);
    ``discarded`` (``x.to(DEVICE)`` as a statement in the training loop); ``mismatch`` (at the
    end, the model is moved to ``TARGET = torch.device("meta")``, standing for an
    accelerator, and called on a CPU batch: the program ends with torch's RuntimeError).

Ground truth (``bugs()``; each code is reported by every side it has, at the marked line,
unless ``LIMITATIONS`` documents otherwise; ``Program.static`` / ``Program.runtime`` may name
a code the side does not have, such as TS016 for the linter: the properties compare only the
codes each side has, read from ``pytest_trainsafe.detectors``):

=====  ======================================================================================
TS001  the gradients are never cleared between two steps: ``zero_grad`` is ``absent`` or
       ``per_epoch`` (with 2 epochs the second epoch's steps consume the first epoch's
       gradients); there are always >= 2 steps with a backward in between. Marked: the
       ``step()`` line.
TS002  ``layer`` is ``forward`` or ``forward_helper``: a throw-away ``nn.Linear`` per call.
       Marked: the construction.
TS003  ``device == mismatch``: the final probe feeds a CPU batch to a model on ``meta``.
       Runtime only (the linter's TS003 is about tensors created in ``forward``). Marked:
       ``h = self.body(x)`` in ``forward``, the user's line nearest to the failing layer.
TS004  an evaluation LOOP (>= 2 batches of one size) after ``model.eval()`` with autograd on
       (``eval == grad_on`` and ``eval_mode``); never a single forward, never without
       ``model.eval()`` (the other half of that bug, train mode under no_grad, is TS006).
       Marked: the model call in the loop.
TS005  ``summary`` is ``builtin``, ``builtin_items`` or ``listcomp``: Python's ``sum()``
       walks a tensor row by row. Marked: the ``sum(...)`` line.
TS006  an evaluation loop under no_grad (``no_grad`` / ``decorator`` / ``caller``) without
       ``model.eval()``, on a model with dropout. Marked: the model call in the loop.
TS007  ``model.eval()`` runs in an epoch (``eval_when == epoch``, 2 epochs) and the next
       epoch trains without ``model.train()`` (``not restore_train``), on a model with
       dropout. Marked: the ``eval()`` call.
TS008  ``zero_grad`` is ``misplaced``: the step sees no gradients. Marked: the
       ``zero_grad()`` line.
TS010  ``loss`` is ``softmax_ce`` or ``softmax_criterion``. Marked: the loss line.
TS011  ``running == tensor``: every step's loss graph is kept by the accumulator. Marked:
       the accumulation (``running += ...``).
TS012  ``device == discarded``. Static only. Marked: the bare ``x.to(DEVICE)``.
TS015  ``layer == replaced_late``: the new head is not in the optimizer. Marked: the
       ``model.head = ...`` line.
TS016  ``loss == zero_temperature``: logits divided by ``TEMPERATURE = 0.0`` make the loss
       and every gradient NaN. Runtime only. Marked: the ``step()`` line.
TS019  ``loss == sigmoid_bce``. Marked: the loss line.
=====  ======================================================================================

Every other code is expected from neither side: a report of it is a false positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

from hypothesis import strategies as st

LAYERS = ("init", "init_helper", "forward", "forward_helper", "replaced", "replaced_late")
DATA = ("list", "loader")
LOOPS = ("plain", "helper", "trainer", "accumulate", "closure")
OPTIMIZERS = ("SGD", "Adam")
CLEARING = ("optimizer", "model", "set_to_none", "grad_none")
ZERO_GRADS = CLEARING + ("absent", "per_epoch", "misplaced")
EVALS = ("none", "single", "no_grad", "decorator", "caller", "grad_on")
#: Evaluations that run with autograd off.
NO_GRAD_EVALS = ("no_grad", "decorator", "caller")
NO_GRAD_APIS = ("torch.no_grad()", "torch.inference_mode()")
LOSSES = ("ce", "criterion", "nll", "bce", "bce_probs", "softmax_ce", "softmax_criterion", "sigmoid_bce",
          "zero_temperature")
RUNNING = ("none", "item", "detach", "tensor")
SUMMARIES = ("none", "method", "torch_sum", "floats", "numel", "builtin", "builtin_items", "listcomp")
DEVICES = ("none", "moved", "discarded", "mismatch")


@dataclass(frozen=True)
class Choices:
    """One option per axis (see the module docstring)."""

    layer: str = "init"
    dropout: bool = False
    data: str = "list"
    optimizer: str = "SGD"
    loop: str = "plain"
    epochs: int = 1
    zero_grad: str = "optimizer"
    zero_grad_at: str = "start"
    set_to_none: bool = True
    #: Whose ``zero_grad()`` a ``misplaced`` clearing calls: ``optimizer`` or ``model``.
    misplaced_by: str = "optimizer"
    restore_train: bool = True
    #: ``torch.nn.utils.clip_grad_norm_`` between the backward and the step.
    clip: bool = False
    #: ``StepLR`` stepped after each epoch's training.
    scheduler: bool = False
    eval: str = "none"
    #: How eval mode is set: ``eval()`` or ``train(False)``.
    eval_call: str = "eval()"
    no_grad_api: str = "torch.no_grad()"
    eval_mode: bool = True
    eval_where: str = "inline"
    eval_when: str = "after"
    loss: str = "ce"
    running: str = "none"
    summary: str = "none"
    device: str = "none"
    train_batches: int = 4
    batch_size: int = 2
    val_batches: int = 2
    val_batch_size: int = 2


@dataclass
class Program:
    """A rendered program: its source, and what each detector must report on it."""

    choices: Choices
    source: str
    #: Codes the linter must report on ``source`` (all other codes: none).
    static: FrozenSet[str]
    #: Codes the runtime monitor must report while ``main()`` runs.
    runtime: FrozenSet[str]
    #: code -> the line (1-based) both detectors must point at.
    marks: Dict[str, int] = field(default_factory=dict)
    #: ``main()`` ends with torch's RuntimeError (the device mismatch really happens).
    raises: bool = False

    def __str__(self) -> str:  # what hypothesis prints for a falsifying example
        numbered = "\n".join(f"{n:3d}  {line}" for n, line in enumerate(self.source.splitlines(), start=1))
        return (f"{self.choices}\nstatic={sorted(self.static)} runtime={sorted(self.runtime)} "
                f"marks={self.marks}\n{numbered}")

    __repr__ = __str__


# -- ground truth --------------------------------------------------------------------------


def trains_after_eval(c: Choices) -> bool:
    """``model.eval()`` ran in an epoch and the next epoch trains without ``model.train()``."""
    return c.eval != "none" and c.eval_mode and c.eval_when == "epoch" and c.epochs == 2 and not c.restore_train


def steps_before_last_backward(c: Choices) -> int:
    """Optimizer steps taken before the program's last backward."""
    if c.loop == "accumulate":
        return c.epochs * (c.train_batches // 2) - 1
    return c.epochs * c.train_batches - 1


def bugs(c: Choices) -> FrozenSet[str]:
    """The codes whose mistake the program of ``c`` makes (the truth table of the module docstring)."""
    found = set()
    if c.layer in ("forward", "forward_helper"):
        found.add("TS002")
    if c.layer == "replaced_late":
        found.add("TS015")
    if c.zero_grad in ("absent", "per_epoch"):
        found.add("TS001")
    if c.zero_grad == "misplaced":
        found.add("TS008")
    if c.eval == "grad_on" and c.eval_mode:
        found.add("TS004")
    if c.eval in NO_GRAD_EVALS and not c.eval_mode and c.dropout:
        found.add("TS006")
    if trains_after_eval(c) and c.dropout:
        found.add("TS007")
    if c.loss in ("softmax_ce", "softmax_criterion"):
        found.add("TS010")
    if c.loss == "sigmoid_bce":
        found.add("TS019")
    if c.loss == "zero_temperature":
        found.add("TS016")
    if c.running == "tensor":
        found.add("TS011")
    if c.summary in ("builtin", "builtin_items", "listcomp"):
        found.add("TS005")
    if c.device == "mismatch":
        found.add("TS003")
    if c.device == "discarded":
        found.add("TS012")
    return frozenset(found)


@dataclass(frozen=True)
class Limitation:
    """A documented way one detector departs from the truth: it misses a finding, or makes an extra one."""

    code: str
    side: str  # "static" or "runtime"
    effect: str  # "miss" or "extra"
    applies: Callable[[Choices], bool]
    documented: str


#: Every departure from ``bugs()`` that a detector is allowed, each documented in the rule's doc
#: (pytest_trainsafe/docs/). Nothing else narrows the properties: any other difference between a
#: detector and ``bugs()`` fails them.
LIMITATIONS: Tuple[Limitation, ...] = (
    Limitation("TS001", "static", "miss", lambda c: c.loop in ("helper", "closure"),
               "TS001.md, Known misses: the backward and the step in a helper called from a loop elsewhere; "
               "a closure without zero_grad() (the backward is in the closure, not in the loop)"),
    Limitation("TS001", "runtime", "miss", lambda c: c.optimizer == "LBFGS" and c.clip,
               "TS001.md, Known misses (runtime): an LBFGS closure that clips the gradients in place and never "
               "clears them (a gradient changed in place between two evaluations looks cleared)"),
    Limitation("TS003", "static", "miss", lambda c: True,
               "TS003.md, Known misses (static): a model or batch never moved (the linter's side is tensors "
               "created in forward() without device=)"),
    Limitation("TS004", "runtime", "miss", trains_after_eval,
               "TS004.md, Known misses (runtime): a module whose eval-mode outputs are backpropagated elsewhere "
               "in the same test (the next epoch trains it in eval mode)"),
    Limitation("TS005", "runtime", "miss", lambda c: c.summary == "listcomp",
               "TS005.md, Known misses (runtime): list comprehensions (sum([x for x in t]))"),
    Limitation("TS006", "static", "miss", lambda c: c.eval == "caller",
               "TS006.md, Known misses (static): a loop without no_grad in a helper whose caller turns it off"),
    Limitation("TS006", "static", "extra",
               lambda c: c.loop == "trainer" and c.eval in ("no_grad", "decorator") and not c.eval_mode,
               "TS006.md, Known problems: the linter knows a model has no dropout only when it sees it built "
               "under the name it is called by (not a trainer's self.model)"),
    Limitation("TS007", "static", "miss", lambda c: c.loop in ("closure", "helper"),
               "TS007.md, Known misses (static): training whose forward and backward run in a closure "
               "(optimizer.step(closure)) or in a per-batch helper without a loop of its own (train_step)"),
    Limitation("TS007", "static", "extra", lambda c: c.loop == "trainer" and trains_after_eval(c),
               "TS007.md, Known problems: the linter knows a model has no dropout only when it sees it built "
               "under the name it is called by (not a trainer's self.model)"),
    Limitation("TS007", "runtime", "miss", lambda c: c.zero_grad == "misplaced",
               "TS007.md, Known misses (runtime): steps that find no gradient at all (a misplaced zero_grad(), "
               "TS008) are not judged"),
    Limitation("TS008", "static", "miss", lambda c: c.loop == "closure",
               "TS008.md, Known misses (static): a zero_grad() and a step in different functions (a closure)"),
    Limitation("TS008", "static", "miss", lambda c: c.loop == "trainer" and c.misplaced_by == "model",
               "TS008.md, Known misses (static): an optimizer built in another function and cleared through its "
               "model (a trainer's self.model.zero_grad() before self.optimizer.step())"),
    Limitation("TS015", "runtime", "miss", lambda c: c.zero_grad == "misplaced" and c.misplaced_by == "model",
               "TS015.md, Known misses (runtime): gradients are read at the steps, so a model.zero_grad() "
               "between the backward and the step (TS008) hides the new layer's gradients"),
    Limitation("TS011", "static", "miss", lambda c: c.loop == "helper",
               "TS011.md, Known misses (static): the accumulation and the backward in different functions "
               "(total += train_step(batch))"),
    Limitation("TS011", "static", "miss", lambda c: c.loop == "closure",
               "TS011.md, Known misses (static): a loss reached through a name the linter does not recognise "
               "(the loss a closure returns through loss = optimizer.step(closure))"),
    Limitation("TS012", "static", "miss", lambda c: c.data == "list",
               "TS012.md, Known misses: the items of a plain list of batches not named like a loader"),
    Limitation("TS011", "runtime", "miss", lambda c: steps_before_last_backward(c) < 3,
               "TS011.md, Known misses (runtime): a run with fewer than four optimizer steps"),
)


def truth(c: Choices) -> Tuple[FrozenSet[str], FrozenSet[str]]:
    """(static codes, runtime codes) the program of ``c`` must produce: ``bugs()`` and ``LIMITATIONS``."""
    sides = {"static": set(bugs(c)), "runtime": set(bugs(c))}
    for limitation in LIMITATIONS:
        if limitation.applies(c):
            codes = sides[limitation.side]
            (codes.discard if limitation.effect == "miss" else codes.add)(limitation.code)
    return frozenset(sides["static"]), frozenset(sides["runtime"])


# -- rendering -----------------------------------------------------------------------------


class _Source:
    """Lines with indentation; a line may carry the codes a detector must report there."""

    def __init__(self, expected: FrozenSet[str]) -> None:
        self.lines: List[str] = []
        self.marks: Dict[str, int] = {}
        self.expected = expected

    def add(self, depth: int, text: str = "", *codes: Optional[str]) -> None:
        """Add a line; of ``codes`` (those a detector would report at this line), the expected ones are marked."""
        marked = [code for code in codes if code in self.expected]
        if marked:
            text += f"  # expect: {', '.join(marked)}"
            for code in marked:
                assert code not in self.marks, f"{code} marked twice"
                self.marks[code] = len(self.lines) + 1
        self.lines.append(("    " * depth + text) if text else "")

    def blank(self, count: int = 1) -> None:
        for _ in range(count):
            self.add(0)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class _Names:
    """How the training function refers to the model and the optimizer (``self.model`` in a trainer)."""

    def __init__(self, model: str, optimizer: str) -> None:
        self.model = model
        self.optimizer = optimizer


def _loss(c: Choices, out: str) -> str:
    """The loss expression of style ``c.loss`` on the model output ``out`` and the targets ``y``."""
    onehot = "F.one_hot(y, 3).float()"
    return {
        "ce": f"F.cross_entropy({out}, y)",
        "criterion": f"criterion({out}, y)",
        "nll": f"F.nll_loss(F.log_softmax({out}, dim=1), y)",
        "bce": f"F.binary_cross_entropy_with_logits({out}, {onehot})",
        "bce_probs": f"F.binary_cross_entropy(torch.sigmoid({out}), {onehot})",
        "softmax_ce": f"F.cross_entropy(F.softmax({out}, dim=1), y)",
        "softmax_criterion": f"criterion({out}.softmax(dim=1), y)",
        "sigmoid_bce": f"F.binary_cross_entropy_with_logits(torch.sigmoid({out}), {onehot})",
        "zero_temperature": f"F.cross_entropy({out} / TEMPERATURE, y)",
    }[c.loss]


_LOSS_CODES = ("TS010", "TS019")


def _header(src: _Source, c: Choices) -> None:
    src.add(0, '"""A generated training program (tests/generated/programs.py)."""')
    src.add(0, "import torch")
    src.add(0, "import torch.nn.functional as F")
    src.add(0, "from torch import nn")
    if c.data == "loader":
        src.add(0, "from torch.utils.data import DataLoader, TensorDataset")
    src.blank()
    if c.device in ("moved", "discarded"):
        src.add(0, 'DEVICE = torch.device("cpu")')
    if c.device == "mismatch":
        src.add(0, 'TARGET = torch.device("meta")  # stands for the accelerator')
    if c.loss in ("criterion", "softmax_criterion"):
        src.add(0, "criterion = nn.CrossEntropyLoss()")
    if c.loss == "zero_temperature":
        src.add(0, "TEMPERATURE = 0.0")
    src.blank(2)


def _model(src: _Source, c: Choices) -> None:
    body = "nn.Linear(4, 8), nn.ReLU()" + (", nn.Dropout(0.5)" if c.dropout else "")
    src.add(0, "class Net(nn.Module):")
    src.add(1, "def __init__(self) -> None:")
    src.add(2, "super().__init__()")
    src.add(2, f"self.body = nn.Sequential({body})")
    if c.layer == "init_helper":
        src.add(2, "self.head = self._make_head()")
    elif c.layer not in ("forward", "forward_helper"):
        src.add(2, "self.head = nn.Linear(8, 3)")
    src.blank()
    if c.layer == "init_helper":
        src.add(1, "def _make_head(self) -> nn.Module:")
        src.add(2, "return nn.Linear(8, 3)")
        src.blank()
    src.add(1, "def forward(self, x: torch.Tensor) -> torch.Tensor:")
    src.add(2, "h = self.body(x)", "TS003")
    if c.layer == "forward":
        src.add(2, "head = nn.Linear(8, 3)", "TS002")
        src.add(2, "return head(h)")
    elif c.layer == "forward_helper":
        src.add(2, "return self._project(h)")
        src.blank()
        src.add(1, "def _project(self, h: torch.Tensor) -> torch.Tensor:")
        src.add(2, "head = nn.Linear(8, 3)", "TS002")
        src.add(2, "return head(h)")
    else:
        src.add(2, "return self.head(h)")
    src.blank(2)


def _data(src: _Source, c: Choices) -> None:
    src.add(0, "def make_batches(count: int, size: int, seed: int):")
    src.add(1, "generator = torch.Generator().manual_seed(seed)")
    if c.data == "list":
        src.add(1, "return [(torch.randn(size, 4, generator=generator), "
                   "torch.randint(0, 3, (size,), generator=generator))")
        src.add(1, "        for _ in range(count)]")
    else:
        src.add(1, "inputs = torch.randn(count * size, 4, generator=generator)")
        src.add(1, "targets = torch.randint(0, 3, (count * size,), generator=generator)")
        src.add(1, "return DataLoader(TensorDataset(inputs, targets), batch_size=size)")
    src.blank(2)


def _move_batch(src: _Source, depth: int, c: Choices, training: bool) -> None:
    """Move ``x, y`` to ``DEVICE`` (``discarded``: the training loop throws ``x.to(DEVICE)`` away)."""
    if c.device == "moved" or (c.device == "discarded" and not training):
        src.add(depth, "x, y = x.to(DEVICE), y.to(DEVICE)")
    elif c.device == "discarded":
        src.add(depth, "x.to(DEVICE)", "TS012")
        src.add(depth, "y = y.to(DEVICE)")


def _clear(src: _Source, depth: int, c: Choices, n: _Names, *codes: str) -> None:
    """The gradient clearing of style ``c.zero_grad`` (``misplaced`` / ``per_epoch``: a ``zero_grad()`` call)."""
    style = c.zero_grad
    if style == "model" or (style == "misplaced" and c.misplaced_by == "model"):
        src.add(depth, f"{n.model}.zero_grad()", *codes)
    elif style == "set_to_none":
        src.add(depth, f"{n.optimizer}.zero_grad(set_to_none={c.set_to_none})", *codes)
    elif style == "grad_none":
        src.add(depth, f"for p in {n.model}.parameters():", *codes)
        src.add(depth + 1, "p.grad = None")
    else:
        src.add(depth, f"{n.optimizer}.zero_grad()", *codes)


def _clip(src: _Source, depth: int, c: Choices, n: _Names) -> None:
    if c.clip:
        src.add(depth, f"torch.nn.utils.clip_grad_norm_({n.model}.parameters(), max_norm=1.0)")


def _log(src: _Source, depth: int, c: Choices, value: str = "loss") -> None:
    """Accumulate the training loss into ``running``, in the style ``c.running``."""
    if c.running == "item":
        src.add(depth, f"running += {value}.item()")
    elif c.running == "detach":
        src.add(depth, f"running += {value}.detach()")
    elif c.running == "tensor":
        src.add(depth, f"running += {value}", "TS011")


def _step_body(src: _Source, depth: int, c: Choices, n: _Names) -> None:
    """Forward, loss, backward, (misplaced clearing), step, with the clearing at the start or the end."""
    regular = c.zero_grad in CLEARING
    if regular and c.zero_grad_at == "start":
        _clear(src, depth, c, n)
    src.add(depth, f"out = {n.model}(x)")
    src.add(depth, f"loss = {_loss(c, 'out')}", *_LOSS_CODES)
    src.add(depth, "loss.backward()")
    if c.zero_grad == "misplaced":
        _clear(src, depth, c, n, "TS008")
    _clip(src, depth, c, n)
    src.add(depth, f"{n.optimizer}.step()", "TS001", "TS016")
    if regular and c.zero_grad_at == "end":
        _clear(src, depth, c, n)


def _train_step_helper(src: _Source, c: Choices) -> None:
    returned = "loss" if c.running == "tensor" else "loss.detach()" if c.running == "detach" else "loss.item()"
    src.add(0, "def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, "
               "y: torch.Tensor):")
    _step_body(src, 1, c, _Names("model", "optimizer"))
    src.add(1, f"return {returned}")
    src.blank(2)


def _batch_loop(src: _Source, depth: int, c: Choices, n: _Names, batches: str) -> None:
    """The loop over the training batches, in the shape ``c.loop``."""
    regular = c.zero_grad in CLEARING
    inner = depth + 1
    if c.loop == "accumulate":
        src.add(depth, f"for i, (x, y) in enumerate({batches}):")
        _move_batch(src, inner, c, training=True)
        if regular and c.zero_grad_at == "start":
            src.add(inner, "if i % 2 == 0:")
            _clear(src, inner + 1, c, n)
        src.add(inner, f"loss = {_loss(c, f'{n.model}(x)')} / 2", *_LOSS_CODES)
        src.add(inner, "loss.backward()")
        src.add(inner, "if (i + 1) % 2 == 0:")
        if c.zero_grad == "misplaced":
            _clear(src, inner + 1, c, n, "TS008")
        _clip(src, inner + 1, c, n)
        src.add(inner + 1, f"{n.optimizer}.step()", "TS001", "TS016")
        if regular and c.zero_grad_at == "end":
            _clear(src, inner + 1, c, n)
        _log(src, inner, c)
        return
    src.add(depth, f"for x, y in {batches}:")
    _move_batch(src, inner, c, training=True)
    if c.loop == "helper":
        if c.running == "none":
            src.add(inner, f"train_step({n.model}, {n.optimizer}, x, y)")
        else:
            src.add(inner, f"running += train_step({n.model}, {n.optimizer}, x, y)", "TS011")
    elif c.loop == "closure":
        src.add(inner, "def closure() -> torch.Tensor:")
        if regular and c.zero_grad_at == "start":
            _clear(src, inner + 1, c, n)
        src.add(inner + 1, f"loss = {_loss(c, f'{n.model}(x)')}", *_LOSS_CODES)
        src.add(inner + 1, "loss.backward()")
        if c.zero_grad == "misplaced":
            _clear(src, inner + 1, c, n, "TS008")
        _clip(src, inner + 1, c, n)
        src.add(inner + 1, "return loss")
        src.blank()
        step = f"{n.optimizer}.step(closure)"
        src.add(inner, step if c.running == "none" else f"loss = {step}", "TS001", "TS016")
        if regular and c.zero_grad_at == "end":
            _clear(src, inner, c, n)
        _log(src, inner, c)
    else:  # plain, trainer
        _step_body(src, inner, c, n)
        _log(src, inner, c)


def _eval_loop(src: _Source, depth: int, c: Choices, model: str, batches: str) -> None:
    """``correct`` / ``total`` over the validation batches; the model call is where TS004 / TS006 point."""
    src.add(depth, "correct = total = 0")
    src.add(depth, f"for x, y in {batches}:")
    _move_batch(src, depth + 1, c, training=False)
    src.add(depth + 1, f"out = {model}(x)", "TS004", "TS006")
    src.add(depth + 1, "correct += (out.argmax(dim=1) == y).sum().item()")
    src.add(depth + 1, "total += y.numel()")


def _set_eval(src: _Source, depth: int, c: Choices, model: str) -> None:
    if c.eval_mode:
        src.add(depth, f"{model}.{c.eval_call}", "TS007")


def _single(src: _Source, depth: int, c: Choices, model: str, batches: str) -> str:
    """One forward on the first validation batch; returns the accuracy expression."""
    src.add(depth, f"x, y = next(iter({batches}))")
    _move_batch(src, depth, c, training=False)
    return f"{model}(x).argmax(dim=1).eq(y).float().mean().item()"


def _eval_helper(src: _Source, c: Choices) -> None:
    """``evaluate(model, batches) -> float`` for the helper-shaped evaluations."""
    if c.eval == "decorator":
        src.add(0, f"@{c.no_grad_api}")
    src.add(0, "def evaluate(model: nn.Module, batches) -> float:")
    _set_eval(src, 1, c, "model")
    if c.eval == "single":
        src.add(1, f"return {_single(src, 1, c, 'model', 'batches')}")
    elif c.eval == "no_grad":
        src.add(1, f"with {c.no_grad_api}:")
        _eval_loop(src, 2, c, "model", "batches")
        src.add(1, "return correct / total")
    else:
        _eval_loop(src, 1, c, "model", "batches")
        src.add(1, "return correct / total")
    src.blank(2)


def _evaluation(src: _Source, depth: int, c: Choices, model: str, batches: str) -> None:
    """The evaluation at its place in the training function (``history`` collects the results)."""
    if c.eval == "none":
        return
    if c.eval_where == "helper":
        if c.eval == "caller":
            src.add(depth, f"with {c.no_grad_api}:")
            src.add(depth + 1, f"history.append(evaluate({model}, {batches}))")
        else:
            src.add(depth, f"history.append(evaluate({model}, {batches}))")
        return
    _set_eval(src, depth, c, model)
    if c.eval == "single":
        src.add(depth, f"history.append({_single(src, depth, c, model, batches)})")
        return
    if c.eval in NO_GRAD_EVALS:  # inline, all three are a with block
        src.add(depth, f"with {c.no_grad_api}:")
        _eval_loop(src, depth + 1, c, model, batches)
    else:
        _eval_loop(src, depth, c, model, batches)
    src.add(depth, "history.append(correct / total)")


def _summary(src: _Source, depth: int, c: Choices, model: str) -> None:
    """A statistic of the trained first layer's weights, appended to ``history``."""
    if c.summary == "none":
        return
    if c.summary in ("method", "torch_sum", "builtin", "builtin_items", "listcomp"):
        src.add(depth, f"row_sums = {model}.body[0].weight.detach().sum(dim=1)")
    expression = {
        "method": "row_sums.sum().item()",
        "torch_sum": "torch.sum(row_sums).item()",
        "floats": "sum(history)",
        "numel": f"sum(p.numel() for p in {model}.parameters())",
        "builtin": "float(sum(row_sums))",
        "builtin_items": "sum(v.item() for v in row_sums)",
        "listcomp": "sum([v.item() for v in row_sums])",
    }[c.summary]
    src.add(depth, f"history.append({expression})", "TS005")


def _training(src: _Source, depth: int, c: Choices, n: _Names, train: str, val: str) -> None:
    """Epoch loop (or not), batch loop, evaluation, summary: the body of ``main`` or ``Trainer.fit``."""
    src.add(depth, "history = []")
    if c.scheduler:
        src.add(depth, f"scheduler = torch.optim.lr_scheduler.StepLR({n.optimizer}, step_size=1, gamma=0.9)")
    if c.running != "none":
        src.add(depth, "running = 0.0")
    inner = depth
    if c.epochs == 2:
        src.add(depth, "for epoch in range(2):")
        inner = depth + 1
    if c.restore_train:
        src.add(inner, f"{n.model}.train()")
    if c.zero_grad == "per_epoch":
        src.add(inner, f"{n.optimizer}.zero_grad()")
    _batch_loop(src, inner, c, n, train)
    if c.scheduler:
        src.add(inner, "scheduler.step()")
    if c.eval_when == "epoch":
        _evaluation(src, inner, c, n.model, val)
    else:
        _evaluation(src, depth, c, n.model, val)
    if c.running != "none":
        src.add(depth, "history.append(float(running))")
    _summary(src, depth, c, n.model)


def render(c: Choices) -> Program:
    """The program of ``c``, with its ground truth."""
    static, runtime = truth(c)
    src = _Source(static | runtime)
    # Named as users name them: a DataLoader is a ``loader``, a list of batches ``batches``.
    train, val = ("train_loader", "val_loader") if c.data == "loader" else ("train_batches", "val_batches")
    _header(src, c)
    _model(src, c)
    _data(src, c)
    if c.loop == "helper":
        _train_step_helper(src, c)
    if c.eval_where == "helper" and c.eval != "none":
        _eval_helper(src, c)
    if c.loop == "trainer":
        src.add(0, "class Trainer:")
        src.add(1, "def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:")
        src.add(2, "self.model = model")
        src.add(2, "self.optimizer = optimizer")
        src.blank()
        src.add(1, f"def fit(self, {train}, {val}) -> list:")
        _training(src, 2, c, _Names("self.model", "self.optimizer"), train, val)
        src.add(2, "return history")
        src.blank(2)
    src.add(0, "def main() -> list:")
    src.add(1, "torch.manual_seed(0)")
    src.add(1, "model = Net().to(DEVICE)" if c.device in ("moved", "discarded") else "model = Net()")
    if c.layer == "replaced":
        src.add(1, "model.head = nn.Linear(8, 3)")
    extra = ", max_iter=3" if c.optimizer == "LBFGS" else ""
    src.add(1, f"optimizer = torch.optim.{c.optimizer}(model.parameters(), lr=0.1{extra})")
    if c.layer == "replaced_late":
        src.add(1, "model.head = nn.Linear(8, 3)", "TS015")
    src.add(1, f"{train} = make_batches({c.train_batches}, {c.batch_size}, seed=1)")
    src.add(1, f"{val} = make_batches({c.val_batches}, {c.val_batch_size}, seed=2)")
    if c.loop == "trainer":
        src.add(1, f"history = Trainer(model, optimizer).fit({train}, {val})")
    else:
        _training(src, 1, c, _Names("model", "optimizer"), train, val)
    if c.device == "mismatch":
        src.add(1, "model.to(TARGET)")
        src.add(1, f"probe, _ = next(iter({val}))")
        src.add(1, "with torch.no_grad():")
        src.add(2, "model(probe)")
    src.add(1, "return history")
    src.blank(2)
    src.add(0, 'if __name__ == "__main__":')
    src.add(1, "main()")
    missing = (static | runtime) - set(src.marks)
    assert not missing, f"no line marked for {missing}"
    return Program(c, src.text(), static, runtime, dict(src.marks), raises=c.device == "mismatch")


# -- the strategy --------------------------------------------------------------------------


@st.composite
def choices(draw: st.DrawFn) -> Choices:
    """One consistent set of choices (options that make no sense together are not drawn)."""
    loop = draw(st.sampled_from(LOOPS))
    epochs = draw(st.sampled_from((1, 2)))
    evaluation = draw(st.sampled_from(EVALS))
    return Choices(
        layer=draw(st.sampled_from(LAYERS)),
        dropout=draw(st.booleans()),
        data=draw(st.sampled_from(DATA)),
        # LBFGS needs a closure (it evaluates it up to max_iter times per step).
        optimizer=draw(st.sampled_from(OPTIMIZERS + (("LBFGS",) if loop == "closure" else ()))),
        loop=loop,
        epochs=epochs,
        zero_grad=draw(st.sampled_from([z for z in ZERO_GRADS if z != "per_epoch" or epochs == 2])),
        zero_grad_at=draw(st.sampled_from(("start", "end"))),
        set_to_none=draw(st.booleans()),
        misplaced_by=draw(st.sampled_from(("optimizer", "model"))),
        restore_train=draw(st.booleans()),
        clip=draw(st.booleans()),
        scheduler=draw(st.booleans()),
        eval=evaluation,
        eval_call=draw(st.sampled_from(("eval()", "train(False)"))),
        no_grad_api=draw(st.sampled_from(NO_GRAD_APIS)),
        eval_mode=draw(st.booleans()),
        # ``decorator`` and ``caller`` are shapes of an evaluate() helper by definition.
        eval_where="helper" if evaluation in ("decorator", "caller") else draw(st.sampled_from(("inline", "helper"))),
        eval_when=draw(st.sampled_from(("after", "epoch") if epochs == 2 else ("after",))),
        loss=draw(st.sampled_from(LOSSES)),
        running=draw(st.sampled_from(RUNNING)),
        summary=draw(st.sampled_from(SUMMARIES)),
        device=draw(st.sampled_from(DEVICES)),
        # accumulate steps every 2 batches: 4 batches give 2 steps per epoch.
        train_batches=4 if loop == "accumulate" else draw(st.integers(3, 4)),
        batch_size=draw(st.integers(2, 4)),
        val_batches=draw(st.integers(2, 3)),
        val_batch_size=draw(st.integers(2, 4)),
    )


def programs() -> st.SearchStrategy[Program]:
    """Rendered programs with their ground truth."""
    return choices().map(render)
