"""TS011 loss-accumulated-with-graph: a backpropagated loss tensor summed (or appended) across iterations.

The pattern, in one function (or module-level script code): inside a loop,
``acc += X`` / ``acc = acc + X`` / ``acc.append(X)`` where ``X`` still holds the
autograd graph of a name ``L`` (``loss``, ``loss * n``, ``loss.mean()``; not
``loss.item()``, ``loss.detach()``, ``float(loss)``), and ``L`` is
backpropagated in that same loop (``L.backward()``, ``scaler.scale(L).backward()``,
``accelerator.backward(L)``) while bound to the same value. Such a loss has
done its job: keeping it in an accumulator keeps every iteration's graph alive.

Deliberately not reported:

* the accumulator is itself backpropagated anywhere in the function, directly
  or through a name computed from it (``loss_sum = loss_sum + l`` then one
  ``loss_sum.backward()``; ``losses.append(l)`` then
  ``torch.stack(losses).mean().backward()``; ``mean = total / n; mean.backward()``);
* the accumulation runs under ``torch.no_grad()`` / ``inference_mode()``;
* the accumulator is re-initialised earlier in the same loop body (a
  per-iteration sum, not an accumulation across iterations);
* a loss that is never backpropagated in the loop (an evaluation loop without
  ``no_grad`` that sums losses is TS004's business; a function summing loss
  terms and returning them is the legitimate way to build a loss).
"""

from __future__ import annotations

from typing import Optional, Set, Tuple

import libcst as cst

from ..loss_flow import BACKWARD_METHODS, LossFlow, expression_text
from ..patterns import in_no_grad, method_name, receiver
from ..values import enclosing_scope
from ..rule import Fix, LintRule

_LOOPS = (cst.For, cst.While)


def _accumulation(node: cst.CSTNode) -> Optional[Tuple[cst.BaseExpression, cst.BaseExpression]]:
    """(accumulator, added value) for ``acc += x``, ``acc = acc + x`` / ``x + acc``, ``acc.append(x)``."""
    if isinstance(node, cst.AugAssign) and isinstance(node.operator, cst.AddAssign):
        return node.target, node.value
    if isinstance(node, cst.Assign) and len(node.targets) == 1 and isinstance(node.value, cst.BinaryOperation) \
            and isinstance(node.value.operator, cst.Add):
        target = expression_text(node.targets[0].target)
        if target is None:
            return None
        if expression_text(node.value.left) == target:
            return node.targets[0].target, node.value.right
        if expression_text(node.value.right) == target:
            return node.targets[0].target, node.value.left
        return None
    if isinstance(node, cst.Expr) and isinstance(node.value, cst.Call) and method_name(node.value) == "append" \
            and len(node.value.args) == 1 and node.value.args[0].keyword is None and not node.value.args[0].star:
        target = receiver(node.value)
        return (target, node.value.args[0].value) if target is not None else None
    return None


def _item_fix(node: cst.CSTNode, loss: str, backwards: list) -> Optional[Fix]:
    """``total += loss`` -> ``total += loss.item()``, only where ``loss`` is certainly a scalar.

    It is: ``loss.backward()`` with no gradient argument runs in the same loop, and
    backward() without one accepts only a scalar, so ``.item()`` cannot fail there.
    """
    if not (isinstance(node, cst.AugAssign) and isinstance(node.value, cst.Name) and node.value.value == loss):
        return None
    scalar = any(
        not call.call.args and isinstance(call.call.func, cst.Attribute) and call.call.func.attr.value == "backward"
        and isinstance(call.call.func.value, cst.Name) and call.call.func.value.value == loss
        for call in backwards)
    if not scalar:
        return None
    item = cst.Call(func=cst.Attribute(value=node.value, attr=cst.Name("item")))
    return Fix(node.with_changes(value=item), f"accumulate {loss}.item()")


class LossAccumulatedWithGraph(LintRule):
    CODE = "TS011"
    TRIGGERS = ("backward",)

    VALID = [
        # the canonical running loss
        "import torch\n"
        "def train(model, loader, criterion, optimizer):\n"
        "    running_loss = 0.0\n"
        "    for x, y in loader:\n"
        "        optimizer.zero_grad()\n"
        "        loss = criterion(model(x), y)\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        "        running_loss += loss.item()\n"
        "    return running_loss / len(loader)\n",
        # .item() times the batch size, float(), .detach(), .data, .cpu().item()
        "def train(model, loader, criterion, optimizer):\n"
        "    total, seen, hist = 0.0, 0, []\n"
        "    for x, y in loader:\n"
        "        loss = criterion(model(x), y)\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        "        total += loss.item() * x.size(0)\n"
        "        total += float(loss)\n"
        "        total = total + loss.detach()\n"
        "        total += loss.data\n"
        "        total += loss.cpu().item()\n"
        "        hist.append(loss.item())\n"
        "        hist.append(loss.detach().cpu())\n",
        # accumulated under no_grad
        "import torch\n"
        "def train(model, loader, criterion, optimizer):\n"
        "    total = torch.zeros(())\n"
        "    for x, y in loader:\n"
        "        loss = criterion(model(x), y)\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        "        with torch.no_grad():\n"
        "            total += loss\n",
        # gradient accumulation: the sum itself is backpropagated once
        "def step(model, chunks, criterion, optimizer):\n"
        "    loss_sum = 0\n"
        "    for x, y in chunks:\n"
        "        l = criterion(model(x), y)\n"
        "        loss_sum = loss_sum + l\n"
        "    loss_sum.backward()\n"
        "    optimizer.step()\n",
        # a list of losses stacked and backpropagated
        "import torch\n"
        "def step(model, chunks, criterion, optimizer):\n"
        "    losses = []\n"
        "    for x, y in chunks:\n"
        "        losses.append(criterion(model(x), y))\n"
        "    torch.stack(losses).mean().backward()\n"
        "    optimizer.step()\n",
        # the accumulated sum is backpropagated through another expression (scaled)
        "def train(model, loader, criterion, optimizer, scaler, k):\n"
        "    acc = 0\n"
        "    for i, (x, y) in enumerate(loader):\n"
        "        loss = criterion(model(x), y)\n"
        "        acc = acc + loss\n"
        "        if i % k == 0:\n"
        "            scaler.scale(acc / k).backward()\n"
        "            acc = 0\n",
        # a multi-task loss built in an inner loop, then backpropagated
        "def train(model, loader, heads, criterion, optimizer):\n"
        "    for x, y in loader:\n"
        "        loss = 0\n"
        "        for head in heads:\n"
        "            loss += criterion(head(model(x)), y)\n"
        "        loss.backward()\n"
        "        optimizer.step()\n",
        # a loss function summing terms, no backward at all
        "def compute_loss(outputs, targets, criterion):\n"
        "    total = 0\n"
        "    for out, y in zip(outputs, targets):\n"
        "        total += criterion(out, y)\n"
        "    return total\n"
        "def train(model, loader, optimizer):\n"
        "    for x, y in loader:\n"
        "        loss = compute_loss(model(x), y, None)\n"
        "        loss.backward()\n",
        # the loss name is rebound to a number before the accumulation
        "def train(model, loader, criterion, optimizer):\n"
        "    total = 0\n"
        "    for x, y in loader:\n"
        "        loss = criterion(model(x), y)\n"
        "        loss.backward()\n"
        "        loss = loss.item()\n"
        "        total += loss\n",
        # a per-iteration sum, reset at the top of the loop body
        "def train(model, loader, criterion, optimizer, log):\n"
        "    for x, y in loader:\n"
        "        step_total = 0\n"
        "        loss = criterion(model(x), y)\n"
        "        loss.backward()\n"
        "        step_total += loss\n"
        "        log(step_total)\n",
        # no loop: a single step
        "def step(model, x, y, criterion, total):\n"
        "    loss = criterion(model(x), y)\n"
        "    loss.backward()\n"
        "    total += loss\n"
        "    return total\n",
        # an evaluation loop (no backward): TS004's concern, not this rule's
        "import torch\n"
        "def evaluate(model, loader, criterion):\n"
        "    total = 0\n"
        "    with torch.no_grad():\n"
        "        for x, y in loader:\n"
        "            total += criterion(model(x), y)\n"
        "    return total / len(loader)\n",
        # the accumulated value is something else than the backpropagated loss
        "def train(model, loader, criterion, optimizer):\n"
        "    correct = 0\n"
        "    for x, y in loader:\n"
        "        out = model(x)\n"
        "        loss = criterion(out, y)\n"
        "        loss.backward()\n"
        "        correct += (out.argmax(1) == y).sum()\n"
        "        seen = x.size(0)\n",
        # the accumulated sum is backpropagated through another name
        "def train(model, loader, criterion):\n"
        "    total = 0\n"
        "    for x, y in loader:\n"
        "        loss = criterion(model(x), y)\n"
        "        loss.backward(retain_graph=True)\n"
        "        total = total + loss\n"
        "    mean = total / len(loader)\n"
        "    mean.backward()\n",
        # the accumulated sum is backpropagated with retain_graph (unusual but deliberate)
        "def train(model, loader, criterion):\n"
        "    total = 0\n"
        "    for x, y in loader:\n"
        "        loss = criterion(model(x), y)\n"
        "        loss.backward(retain_graph=True)\n"
        "        total = total + loss\n"
        "    total.backward()\n",
    ]
    INVALID = [
        # the PyTorch FAQ's example
        "def train(model, loader, criterion, optimizer):\n"
        "    total_loss = 0\n"
        "    for x, y in loader:\n"
        "        optimizer.zero_grad()\n"
        "        loss = criterion(model(x), y)\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        "        total_loss += loss  # expect: TS011\n"
        "    return total_loss / len(loader)\n",
        # before the backward, spelled out, weighted by the batch size
        "import torch.nn.functional as F\n"
        "def train(model, loader, optimizer):\n"
        "    running = 0.0\n"
        "    for x, y in loader:\n"
        "        loss = F.cross_entropy(model(x), y)\n"
        "        running = running + loss * x.size(0)  # expect: TS011\n"
        "        loss.backward()\n"
        "        optimizer.step()\n",
        # a list of losses kept for the epoch summary
        "import torch\n"
        "def train(model, loader, criterion, optimizer):\n"
        "    losses = []\n"
        "    for x, y in loader:\n"
        "        loss = criterion(model(x), y)\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        "        losses.append(loss)  # expect: TS011\n"
        "    print(torch.stack(losses).mean().item())\n",
        # on self, with AMP scaling, in nested epoch loops
        "class Trainer:\n"
        "    def fit(self, loader, epochs):\n"
        "        for epoch in range(epochs):\n"
        "            self.epoch_loss = 0\n"
        "            for x, y in loader:\n"
        "                loss = self.criterion(self.model(x), y)\n"
        "                self.scaler.scale(loss).backward()\n"
        "                self.scaler.step(self.optimizer)\n"
        "                self.epoch_loss += loss  # expect: TS011\n",
        # module-level script code, a loss from a HuggingFace-style output
        "for batch in loader:\n"
        "    outputs = model(**batch)\n"
        "    loss = outputs.loss\n"
        "    accelerator.backward(loss)\n"
        "    optimizer.step()\n"
        "    history['train'].append(loss)  # expect: TS011\n",
    ]

    def visit_Module(self, node: cst.Module) -> None:
        #: Scopes (functions, the module) with a backward call of their own: the only ones worth a flow analysis.
        self._with_backward: Set[int] = set()

    def visit_Call(self, node: cst.Call) -> None:
        if method_name(node) in BACKWARD_METHODS or self.context.qualified_name(node.func) == "torch.autograd.backward":
            self._with_backward.add(id(enclosing_scope(self.context)))

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        if id(node) in self._with_backward:
            self._check(node)

    def leave_Module(self, node: cst.Module) -> None:
        if id(node) in self._with_backward:
            self._check(node)

    def _check(self, scope: cst.CSTNode) -> None:
        flow = LossFlow(self.context, scope, frozenset(), collect=(cst.AugAssign, cst.Assign, cst.Expr))
        if not flow.backward_calls:
            return
        for node, ancestors in flow.collected:
            found = _accumulation(node)
            if found is None:
                continue
            target, value = found
            accumulator = expression_text(target)
            loop = next((a for a in reversed(ancestors) if isinstance(a, _LOOPS)), None)
            if accumulator is None or loop is None or flow.backpropagated(accumulator) \
                    or in_no_grad(self.context, ancestors[::-1]) or self._reset_before(flow, accumulator, loop, node):
                continue
            for name in flow.graph_sources(value):
                backwards = [call for call in flow.backward_calls_of(name) if any(a is loop for a in call.ancestors)]
                if name.value != accumulator and backwards:
                    self.report(node, f"`{accumulator}` keeps the graph of `{name.value}`",
                                fix=_item_fix(node, name.value, backwards))
                    break

    @staticmethod
    def _reset_before(flow: LossFlow, accumulator: str, loop: cst.CSTNode, node: cst.CSTNode) -> bool:
        """Whether ``accumulator`` is re-bound (not from itself) in ``loop``'s body before ``node``."""
        at = flow.index(node)
        for other, ancestors in flow.collected:
            if not isinstance(other, cst.Assign) or flow.index(other) >= at or not any(a is loop for a in ancestors):
                continue
            if any(expression_text(t.target) == accumulator for t in other.targets) \
                    and accumulator not in flow.mentions(other.value):
                return True
        return False
