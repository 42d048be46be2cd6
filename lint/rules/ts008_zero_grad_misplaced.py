"""TS008 zero-grad-misplaced: ``zero_grad()`` between ``backward()`` and ``step()`` wipes the gradients.

Each function body (and the module body) is read as straight-line code, statement by
statement, with loops entered twice (the second pass is the next iteration: a
``zero_grad()`` at the end of an iteration reaches the ``step()`` at the start of the
next). The finding is a ``O.zero_grad()`` (or ``M.zero_grad()`` / ``for p in
M.parameters(): p.grad = None`` where ``O`` is built from ``M.parameters()`` in this
file) that runs after a ``backward()`` (since ``O``'s last step) and is followed by
``O.step()`` / ``scaler.step(O)`` with no backward in between. The ``zero_grad()`` is
reported: it is the line to move.

Deliberately not reported: ``zero_grad()`` before the backward or after the step;
gradient accumulation (``if (i + 1) % k == 0: step(); zero_grad()``); another
optimizer's ``zero_grad()`` (a GAN clearing the discriminator after the generator's
backward); anything that may put gradients back between the ``zero_grad()`` and the step
(an assignment to ``.grad``, a call whose name mentions ``backward`` or ``grad`` other
than clipping: gradient surgery, PCGrad); events inside a branch are only trusted on
that branch (after an ``if``, what happened in it is forgotten); closures (LBFGS) are
judged as their own functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import libcst as cst

from ..names import dotted
from ..modes import last_component
from ..patterns import calls_in, method_name, receiver_text
from ..rule import LintRule

_BACKWARD = frozenset({"backward", "manual_backward"})
#: Calls that may set gradients (gradient surgery, manual all-reduce): they end a zero_grad's reach.
_MAY_SET_GRADS = re.compile(r"grad", re.I)
_NOT_SETTING_GRADS = re.compile(r"clip|zero_grad|no_grad|enable_grad|requires_grad|grad_norm|set_grad_enabled", re.I)
_GRAD_CLEARING = frozenset({"zero_", "detach_", "requires_grad_"})


@dataclass
class _State:
    """What definitely happened on the current path."""

    events: int = 0
    last_backward: int = -1
    #: optimizer text -> event number of its last step
    stepped: Dict[str, int] = field(default_factory=dict)
    #: receiver text (optimizer or model) -> (event number, the zero_grad node to report)
    zeroed: Dict[str, tuple] = field(default_factory=dict)

    def copy(self) -> "_State":
        return _State(self.events, self.last_backward, dict(self.stepped), dict(self.zeroed))


def _is_none(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value == "None"


class ZeroGradMisplaced(LintRule):
    CODE = "TS008"
    TRIGGERS = ("zero_grad", ".grad = None", ".grad=None")

    VALID = [
        # the canonical order
        "for x, y in loader:\n"
        "    optimizer.zero_grad()\n"
        "    loss = loss_fn(model(x), y)\n"
        "    loss.backward()\n"
        "    optimizer.step()\n",
        # zero_grad after the step
        "for x, y in loader:\n"
        "    loss = loss_fn(model(x), y)\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
        "    optimizer.zero_grad(set_to_none=True)\n",
        # gradient accumulation
        "for i, (x, y) in enumerate(loader):\n"
        "    loss = loss_fn(model(x), y) / 4\n"
        "    loss.backward()\n"
        "    if (i + 1) % 4 == 0:\n"
        "        optimizer.step()\n"
        "        optimizer.zero_grad()\n",
        # AMP
        "for x, y in loader:\n"
        "    optimizer.zero_grad()\n"
        "    scaler.scale(loss_fn(model(x), y)).backward()\n"
        "    scaler.unscale_(optimizer)\n"
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
        "    scaler.step(optimizer)\n"
        "    scaler.update()\n",
        # GAN: the discriminator's gradients are cleared after the generator's backward
        "for real in loader:\n"
        "    opt_d.zero_grad()\n"
        "    d_loss(D(real), D(G(z).detach())).backward()\n"
        "    opt_d.step()\n"
        "    opt_g.zero_grad()\n"
        "    g_loss = g_criterion(D(G(z)))\n"
        "    g_loss.backward()\n"
        "    opt_d.zero_grad()\n"
        "    opt_g.step()\n",
        # gradients put back by hand in a loop
        "for x, y in loader:\n"
        "    loss_fn(model(x), y).backward()\n"
        "    saved = [p.grad.clone() for p in model.parameters()]\n"
        "    optimizer.zero_grad()\n"
        "    for p, g in zip(model.parameters(), saved):\n"
        "        p.grad = g * 0.5\n"
        "    optimizer.step()\n",
        # a backward after the zero_grad
        "for x, y in loader:\n"
        "    probe_loss(model(x)).backward()\n"
        "    log_grad_norms(model)\n"
        "    optimizer.zero_grad()\n"
        "    loss_fn(model(x), y).backward()\n"
        "    optimizer.step()\n",
        # gradient surgery: gradients are put back by hand
        "for x, y in loader:\n"
        "    grads = []\n"
        "    for loss in losses(model(x), y):\n"
        "        loss.backward(retain_graph=True)\n"
        "        grads.append([p.grad.clone() for p in model.parameters()])\n"
        "        optimizer.zero_grad()\n"
        "    for p, g in zip(model.parameters(), project(grads)):\n"
        "        p.grad = g\n"
        "    optimizer.step()\n",
        "for x, y in loader:\n"
        "    loss_fn(model(x), y).backward()\n"
        "    optimizer.zero_grad()\n"
        "    pcgrad.pc_backward(losses)\n"
        "    optimizer.step()\n",
        # zero_grad in a branch that never reaches the step
        "for x, y in loader:\n"
        "    loss = loss_fn(model(x), y)\n"
        "    loss.backward()\n"
        "    if not torch.isfinite(loss):\n"
        "        optimizer.zero_grad()\n"
        "        continue\n"
        "    optimizer.step()\n",
        # LBFGS closure
        "def closure():\n"
        "    optimizer.zero_grad()\n"
        "    loss = loss_fn(model(x), y)\n"
        "    loss.backward()\n"
        "    return loss\n"
        "for _ in range(10):\n"
        "    optimizer.step(closure)\n",
        # another model's gradients thrown away before this optimizer's step (a frozen encoder)
        "opt_a = torch.optim.SGD(encoder.parameters(), lr=0.1)\n"
        "opt_b = torch.optim.SGD(head.parameters(), lr=0.1)\n"
        "for x, y in loader:\n"
        "    loss_fn(head(encoder(x)), y).backward()\n"
        "    encoder.zero_grad()\n"
        "    opt_b.step()\n",
    ]
    INVALID = [
        "for x, y in loader:\n"
        "    loss = loss_fn(model(x), y)\n"
        "    loss.backward()\n"
        "    optimizer.zero_grad()  # expect: TS008\n"
        "    optimizer.step()\n",
        # zero_grad at the end of the iteration, step at the start of the next
        "for x, y in loader:\n"
        "    optimizer.step()\n"
        "    loss = loss_fn(model(x), y)\n"
        "    loss.backward()\n"
        "    optimizer.zero_grad()  # expect: TS008\n",
        # the model's zero_grad, the optimizer built from its parameters
        "import torch\n"
        "model = Net()\n"
        "optimizer = torch.optim.Adam(model.parameters())\n"
        "for x, y in loader:\n"
        "    loss_fn(model(x), y).backward()\n"
        "    model.zero_grad()  # expect: TS008\n"
        "    optimizer.step()\n",
        # p.grad = None by hand
        "import torch\n"
        "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for x, y in loader:\n"
        "    loss_fn(model(x), y).backward()\n"
        "    for p in model.parameters():  # expect: TS008\n"
        "        p.grad = None\n"
        "    optimizer.step()\n",
        # AMP, in a method
        "class Trainer:\n"
        "    def train_step(self, x, y):\n"
        "        with torch.autocast('cuda'):\n"
        "            loss = self.loss_fn(self.model(x), y)\n"
        "        self.scaler.scale(loss).backward()\n"
        "        self.optimizer.zero_grad(set_to_none=True)  # expect: TS008\n"
        "        self.scaler.step(self.optimizer)\n"
        "        self.scaler.update()\n",
        # the encoder's gradients wiped before its own optimizer steps
        "opt_a = torch.optim.SGD(encoder.parameters(), lr=0.1)\n"
        "opt_b = torch.optim.SGD(head.parameters(), lr=0.1)\n"
        "for x, y in loader:\n"
        "    loss_fn(head(encoder(x)), y).backward()\n"
        "    opt_b.step()\n"
        "    encoder.zero_grad()  # expect: TS008\n"
        "    opt_a.step()\n",
        # inside the accumulation branch
        "for i, (x, y) in enumerate(loader):\n"
        "    loss_fn(model(x), y).backward()\n"
        "    if (i + 1) % 4 == 0:\n"
        "        optimizer.zero_grad()  # expect: TS008\n"
        "        optimizer.step()\n",
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self._reported: set = set()
        self._calls: Dict[int, List[cst.Call]] = {}
        #: optimizer text -> texts of the models whose parameters it was built from
        self._built_from: Dict[str, List[str]] = {}

    def visit_Assign(self, node: cst.Assign) -> None:
        if not isinstance(node.value, cst.Call):
            return
        text = cst.Module([]).code_for_node(node.value)
        models = re.findall(r"([A-Za-z_][\w.]*)\.(?:named_)?parameters\s*\(", text)
        if models:
            for target in node.targets:
                name = dotted(target.target)
                if name is not None:
                    self._built_from.setdefault(name, []).extend(models)

    def leave_Module(self, node: cst.Module) -> None:
        self._block(node.body, _State())

    # -- the walk --------------------------------------------------------------------------

    def _block(self, statements: Sequence[cst.CSTNode], state: _State) -> _State:
        for statement in statements:
            state = self._statement(statement, state)
        return state

    def _statement(self, statement: cst.CSTNode, state: _State) -> _State:
        if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
            body = statement.body
            if isinstance(body, cst.IndentedBlock):
                self._block(body.body, _State())
            return state
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                self._small(small, state)
            return state
        if isinstance(statement, (cst.For, cst.While)):
            clearing = self._clearing_loop(statement)
            if clearing is not None:
                self._zero(clearing, statement, state)
                return state
            self._events_in_header(statement, state)
            first = self._block(statement.body.body, state.copy())
            if first.zeroed:  # something cleared at the end of an iteration may reach the next one's step
                self._block(statement.body.body, first.copy())
            return self._after_branches(state, [first])
        if isinstance(statement, cst.If):
            self._events_in(statement.test, state)
            branches = [self._block(statement.body.body, state.copy())]
            orelse = statement.orelse
            if isinstance(orelse, cst.If):
                branches.append(self._statement(orelse, state.copy()))
            elif isinstance(orelse, cst.Else):
                branches.append(self._block(orelse.body.body, state.copy()))
            return self._after_branches(state, branches)
        if isinstance(statement, cst.With):
            for item in statement.items:
                self._events_in(item.item, state)
            return self._block(statement.body.body, state)
        if isinstance(statement, (cst.Try, cst.TryStar)):
            state = self._block(statement.body.body, state)
            for handler in statement.handlers:
                self._block(handler.body.body, state.copy())
            if statement.orelse is not None:
                state = self._block(statement.orelse.body.body, state)
            if statement.finalbody is not None:
                state = self._block(statement.finalbody.body.body, state)
            return state
        return _State(events=state.events)  # anything else (match...): forget

    @staticmethod
    def _after_branches(before: _State, branches: List[_State]) -> _State:
        """After an ``if`` / a loop: keep only what held before and every branch left untouched
        (a backward, a step or a gradient assignment in any branch may have changed it)."""
        after = before.copy()
        after.events = max(b.events for b in branches)
        after.zeroed = {target: record for target, record in before.zeroed.items()
                        if all(b.zeroed.get(target) == record and b.last_backward == before.last_backward
                               for b in branches)}
        for branch in branches:
            for optimizer, when in branch.stepped.items():
                if before.stepped.get(optimizer) != when:
                    after.zeroed.pop(optimizer, None)
                    after.stepped[optimizer] = max(when, after.stepped.get(optimizer, -1))
        return after

    def _events_in_header(self, loop: cst.CSTNode, state: _State) -> None:
        if isinstance(loop, cst.For):
            self._events_in(loop.iter, state)
        elif isinstance(loop, cst.While):
            self._events_in(loop.test, state)

    def _small(self, small: cst.BaseSmallStatement, state: _State) -> None:
        self._events_in(small, state)
        if isinstance(small, (cst.Assign, cst.AugAssign, cst.AnnAssign)):
            targets = [t.target for t in small.targets] if isinstance(small, cst.Assign) else [small.target]
            value = getattr(small, "value", None)
            for target in targets:
                if isinstance(target, cst.Attribute) and target.attr.value == "grad" and \
                        not (value is not None and _is_none(value)):
                    state.zeroed.clear()  # gradients put back by hand

    def _events_in(self, node: cst.CSTNode, state: _State) -> None:
        calls = self._calls.get(id(node))
        if calls is None:
            calls = self._calls[id(node)] = list(calls_in(node))
        for call in calls:
            name = method_name(call)
            if name is None and isinstance(call.func, cst.Name):
                name = call.func.value
            if name is None:
                continue
            if name in _BACKWARD or self.context.qualified_name(call.func) == "torch.autograd.backward" \
                    or "backward" in name.lower():
                state.events += 1
                state.last_backward = state.events
                state.zeroed.clear()
            elif name == "zero_grad":
                target = receiver_text(call)
                if target is not None:
                    self._zero(target, call, state)
            elif name == "step":
                self._step(call, state)
            elif _MAY_SET_GRADS.search(name) and not _NOT_SETTING_GRADS.search(name):
                state.zeroed.clear()

    def _zero(self, target: str, node: cst.CSTNode, state: _State) -> None:
        state.events += 1
        if state.last_backward > state.stepped.get(target, -1) and state.last_backward >= 0:
            state.zeroed[target] = (state.events, node)

    def _step(self, call: cst.Call, state: _State) -> None:
        target = receiver_text(call)
        if target is None:
            return
        if "scaler" in last_component(target).lower() and call.args:
            target = dotted(call.args[0].value)
            if target is None:
                return
        state.events += 1
        culprit = state.zeroed.pop(target, None)
        if culprit is None:
            for model in self._built_from.get(target, ()):
                culprit = state.zeroed.pop(model, None)
                if culprit is not None:
                    break
        if culprit is not None and state.last_backward < culprit[0] and id(culprit[1]) not in self._reported:
            self._reported.add(id(culprit[1]))
            self.report(culprit[1], f"{target}.step() then sees no gradients")
        state.stepped[target] = state.events

    @staticmethod
    def _clearing_loop(loop: cst.CSTNode) -> Optional[str]:
        """``M`` for ``for p in M.parameters(): p.grad = None`` (or ``p.grad.zero_()``), else None."""
        if not isinstance(loop, cst.For) or not isinstance(loop.target, cst.Name):
            return None
        if not (isinstance(loop.iter, cst.Call) and method_name(loop.iter) in ("parameters",)):
            return None
        model = receiver_text(loop.iter)
        name = loop.target.value
        body = loop.body.body
        if model is None or not body:
            return None
        for statement in body:
            if not isinstance(statement, cst.SimpleStatementLine):
                return None
            for small in statement.body:
                if isinstance(small, cst.Assign) and _is_none(small.value) and \
                        all(dotted(t.target) == f"{name}.grad" for t in small.targets):
                    continue
                if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call) and \
                        method_name(small.value) in _GRAD_CLEARING and \
                        (receiver_text(small.value) or "").startswith(f"{name}.grad"):
                    continue
                return None
        return model
