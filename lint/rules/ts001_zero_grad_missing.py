"""TS001 zero-grad-missing: a training loop runs ``backward()`` and ``optimizer.step()`` but never clears gradients.

The unit judged is a loop. For each optimizer step, the innermost enclosing
``for``/``while`` (in the same function) that also runs a backward is the
training loop; if nothing anywhere inside that loop clears gradients, the step
is reported: from the second iteration on it consumes the sum of every batch's
gradients so far.

"Clears gradients" is read generously, since a false alarm is worse than a miss:
any call whose name mentions ``zero_grad`` / ``clear_grad`` / ``reset_grad`` (any
receiver, any arguments, or a ``zero_grad=True`` keyword), any assignment or ``del``
of ``<x>.grad``, an overwriting in-place method on ``<x>.grad`` or ``<x>.grad.data``
(``zero_()``, ``fill_()``, ``copy_()``, ``detach_()``, ``mul_(0)``; not a rescaling such
as ``mul_(0.5)``), ``setattr(p, "grad", ...)``, and a call to a function of this file
that (transitively) does one of those, or that is passed as an argument (a closure).

Deliberately not reported: a step with no enclosing loop (Lightning's
``training_step``, a one-step helper called from a loop elsewhere), an LBFGS
``step(closure)`` whose backward is inside the closure, a loop body that ends in
an unconditional ``break``/``return`` (a one-iteration smoke test), a loop that
rebuilds its optimizer each iteration, and files that use another autograd
framework without torch. Known miss: a loop with two optimizers where only one
is cleared (any clearing in the loop silences the rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Set, Union

import libcst as cst

from ..names import dotted
from ..patterns import method_name, receiver
from ..rule import FileContext, LintRule

_CLEARING_NAME = re.compile(r"zero_?grad|clear_?grad|reset_?grad|foreach_zero_", re.IGNORECASE)
_BACKWARD_METHODS = frozenset({"backward", "manual_backward"})
_BACKWARD_FUNCTIONS = frozenset({"torch.autograd.backward"})
# camelCase / snake_case tokens that name an optimizer: opt, optD, opt_g, g_opt, genOpt, optimizer...
_OPTIMIZER_TOKEN = re.compile(r"(?:^|_)opt(?:$|_|\d)|^opt[A-Z]|[a-z0-9]Opt(?:$|_|\d|[A-Z])")
_NOT_OPTIMIZER = re.compile(r"sched", re.IGNORECASE)
# Files that use one of these and no torch-family import are another framework's training code.
_TORCH_FAMILY = frozenset({
    "torch", "torchvision", "torchaudio", "torchtext", "pytorch_lightning", "lightning", "lightning_fabric",
    "accelerate", "transformers", "deepspeed", "timm", "torch_geometric", "fairseq", "apex", "ignite",
    "diffusers", "peft", "trl", "functorch", "torchmetrics", "detectron2", "mmcv", "mmengine",
})
_OTHER_FRAMEWORKS = frozenset({
    "numpy", "jax", "flax", "optax", "tensorflow", "keras", "mxnet", "mlx", "tinygrad", "paddle", "chainer",
    "micrograd", "mindspore", "cupy", "autograd", "theano", "jittor", "megengine",
})
# In-place methods on ``<x>.grad`` / ``<x>.grad.data`` that overwrite it (``mul_``/``add_``/``div_`` only rescale).
_OVERWRITING_METHODS = frozenset({"zero_", "fill_", "copy_", "detach_", "set_", "resize_", "requires_grad_"})


@dataclass(eq=False)
class _Loop:
    node: Union[cst.For, cst.While]
    backward: bool = False
    clears: bool = False
    #: Names this loop calls or passes along (``self._reset_grads()`` -> ``_reset_grads``), resolved at the end.
    calls: Set[str] = field(default_factory=set)
    #: Dotted names (re)bound inside the loop: an optimizer built per iteration is a fresh one.
    assigned: Set[str] = field(default_factory=set)
    runs_once: bool = False


@dataclass(eq=False)
class _Function:
    name: str
    #: Clears gradients itself or in a nested function (what a caller of it may rely on).
    clears: bool = False
    #: Clears gradients in its own body (used only for the message).
    clears_here: bool = False
    calls: Set[str] = field(default_factory=set)


@dataclass(eq=False)
class _Step:
    call: cst.Call
    #: Enclosing loops of the same function, innermost first.
    loops: Sequence[_Loop]
    #: The enclosing function (or the module), to say in the message whether it clears outside the loop.
    function: _Function


def _optimizer_like(name: str) -> bool:
    return bool(_OPTIMIZER_TOKEN.search(name) or "optim" in name.lower()) and not _NOT_OPTIMIZER.search(name)


def _receiver_name(call: cst.Call) -> Optional[str]:
    """Dotted text of the step's receiver; ``optimizers`` for ``optimizers[i].step()``."""
    target = receiver(call)
    if isinstance(target, cst.Subscript):
        target = target.value
    return dotted(target) if target is not None else None


def _is_grad(node: cst.BaseExpression) -> bool:
    """``<x>.grad`` or ``<x>.grad.data``."""
    if isinstance(node, cst.Attribute) and node.attr.value == "data":
        node = node.value
    return isinstance(node, cst.Attribute) and node.attr.value == "grad"


def _targets(node: cst.BaseExpression) -> List[cst.BaseExpression]:
    if isinstance(node, (cst.Tuple, cst.List)):
        return [leaf for element in node.elements for leaf in _targets(element.value)]
    if isinstance(node, cst.StarredElement):
        return _targets(node.value)
    return [node]


def _is_zero(call: cst.Call) -> bool:
    value = call.args[0].value if len(call.args) == 1 else None
    return isinstance(value, (cst.Integer, cst.Float)) and value.evaluated_value == 0


def _runs_once(loop: Union[cst.For, cst.While]) -> bool:
    """A body that always leaves after its first pass (``break``/``return``/``raise`` at its top level)."""
    body = loop.body.body if isinstance(loop.body, cst.IndentedBlock) else ()
    for statement in body:
        if isinstance(statement, cst.SimpleStatementLine) and any(
                isinstance(small, (cst.Break, cst.Return, cst.Raise)) for small in statement.body):
            return True
    if isinstance(loop, cst.For) and isinstance(loop.iter, cst.Call) and isinstance(loop.iter.func, cst.Name) \
            and loop.iter.func.value == "range" and len(loop.iter.args) == 1:
        value = loop.iter.args[0].value
        return isinstance(value, cst.Integer) and value.value in ("0", "1")
    return False


class ZeroGradMissing(LintRule):
    CODE = "TS001"
    TRIGGERS = ("backward",)

    VALID = [
        # zero_grad at the start of each iteration
        "import torch\nfor x, y in loader:\n    optimizer.zero_grad()\n    loss = loss_fn(model(x), y)\n"
        "    loss.backward()\n    optimizer.step()\n",
        # zero_grad at the end of the iteration
        "import torch\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n"
        "    optimizer.zero_grad()\n",
        # gradient accumulation: step and clear every k batches
        "import torch\nfor i, (x, y) in enumerate(loader):\n    (loss_fn(model(x), y) / k).backward()\n"
        "    if (i + 1) % k == 0:\n        opt.step()\n        opt.zero_grad()\n",
        # p.grad = None by hand, or overwritten
        "import torch\nfor x, y in loader:\n    for p in model.parameters():\n        if p.grad is not None:\n"
        "            p.grad.mul_(0)\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n",
        "import torch\nfor x, y in loader:\n    for p in model.parameters():\n        p.grad = None\n"
        "    loss_fn(model(x), y).backward()\n    optimizer.step()\n",
        # model.zero_grad(), set_to_none
        "import torch\nfor x, y in loader:\n    model.zero_grad(set_to_none=True)\n"
        "    loss_fn(model(x), y).backward()\n    optimizer.step()\n",
        # old-style in-place clearing
        "import torch\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n"
        "    for p in model.parameters():\n        if p.grad is not None:\n            p.grad.data.zero_()\n",
        "import torch\nfor x, y in loader:\n    for p in params:\n        p.grad.detach_()\n        p.grad.zero_()\n"
        "    loss_fn(model(x), y).backward()\n    optimizer.step()\n",
        "import torch\nfor x, y in loader:\n    for p in params:\n        del p.grad\n"
        "    loss_fn(model(x), y).backward()\n    optimizer.step()\n",
        # nested micro-batch loop, cleared in the outer loop
        "import torch\nfor batch in loader:\n    optimizer.zero_grad()\n    for micro in batch.chunk(4):\n"
        "        loss_fn(model(micro)).backward()\n    optimizer.step()\n",
        # a helper method of this file that clears the gradients (transitively)
        "import torch\nclass Trainer:\n    def fit(self):\n        for x, y in self.loader:\n"
        "            self._reset()\n            self.loss(x, y).backward()\n            self.optimizer.step()\n\n"
        "    def _reset(self):\n        self._clear()\n\n"
        "    def _clear(self):\n        for p in self.model.parameters():\n            p.grad = None\n",
        # names that say what they do, defined elsewhere
        "from utils import reset_grads\nimport torch\nfor x, y in loader:\n    reset_grads(model)\n"
        "    loss_fn(model(x), y).backward()\n    optimizer.step()\n",
        "import paddle\nimport torch\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n"
        "    opt.step()\n    opt.clear_grad()\n",
        # LBFGS: the backward is in the closure, which clears
        "import torch\nopt = torch.optim.LBFGS(model.parameters())\nfor i in range(10):\n    def closure():\n"
        "        opt.zero_grad()\n        loss = loss_fn(model(x), y)\n        loss.backward()\n        return loss\n"
        "    opt.step(closure)\n",
        # LBFGS closure without zero_grad: not a loop running backward itself (a known miss)
        "import torch\ndef closure():\n    loss = loss_fn(model(x), y)\n    loss.backward()\n    return loss\n"
        "for i in range(10):\n    optimizer.step(closure)\n",
        # GAN with both clearings
        "import torch\nfor real in loader:\n    netD.zero_grad()\n    lossD = d_loss(netD(real), netD(netG(z).detach()))\n"
        "    lossD.backward()\n    optimizerD.step()\n    netG.zero_grad()\n    lossG = g_loss(netD(netG(z)))\n"
        "    lossG.backward()\n    optimizerG.step()\n",
        # while loop
        "import torch\nstep = 0\nwhile step < max_steps:\n    opt.zero_grad()\n    loss_fn(model(x), y).backward()\n"
        "    opt.step()\n    step += 1\n",
        # Lightning: no loop, the trainer clears
        "import torch\nimport lightning as L\nclass Model(L.LightningModule):\n    def training_step(self, batch, i):\n"
        "        opt = self.optimizers()\n        loss = self.loss(batch)\n        self.manual_backward(loss)\n"
        "        opt.step()\n        return loss\n",
        # a one-step helper called from a loop elsewhere
        "import torch\ndef train_step(model, optimizer, x, y):\n    loss = loss_fn(model(x), y)\n    loss.backward()\n"
        "    optimizer.step()\n    return loss\n",
        # scheduler.step() is not an optimizer step
        "import torch\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    scheduler.step()\n"
        "    lr_scheduler.step()\n    sched.step()\n",
        "import torch\nfrom torch.optim.lr_scheduler import StepLR\nwarm = StepLR(opt, 10)\nfor x, y in loader:\n"
        "    loss_fn(model(x), y).backward()\n    warm.step()\n",
        # RL: env.step(action) is not an optimizer step; the optimizer is cleared
        "import torch\nfor episode in range(100):\n    state, done = env.reset(), False\n    while not done:\n"
        "        action = policy(state)\n        state, reward, done, info = env.step(action)\n"
        "    optimizer.zero_grad()\n    loss = policy_loss()\n    loss.backward()\n    optimizer.step()\n",
        # AMP with GradScaler, cleared
        "import torch\nscaler = torch.cuda.amp.GradScaler()\nfor x, y in loader:\n    optimizer.zero_grad()\n"
        "    with torch.autocast('cuda'):\n        loss = loss_fn(model(x), y)\n    scaler.scale(loss).backward()\n"
        "    scaler.step(optimizer)\n    scaler.update()\n",
        # accelerate, cleared
        "import torch\nfrom accelerate import Accelerator\naccelerator = Accelerator()\nfor x, y in loader:\n"
        "    with accelerator.accumulate(model):\n        loss = loss_fn(model(x), y)\n"
        "        accelerator.backward(loss)\n        optimizer.step()\n        optimizer.zero_grad()\n",
        # DeepSpeed's engine.step() clears the gradients itself, and is not an optimizer
        "import torch\nfor batch in loader:\n    loss = model_engine(batch)\n    model_engine.backward(loss)\n"
        "    model_engine.step()\n",
        # a one-iteration smoke test
        "import torch\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n    break\n",
        "import torch\nfor _ in range(1):\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n",
        # a fresh model and optimizer per iteration: one step each
        "import torch\nfor lr in (0.1, 0.01):\n    model = Net()\n    optimizer = torch.optim.SGD(model.parameters(), lr=lr)\n"
        "    loss_fn(model(x), y).backward()\n    optimizer.step()\n",
        # the backward is in another function called by the loop
        "import torch\nfor x, y in loader:\n    loss = train_step(x, y)\n    optimizer.step()\n",
        # autograd.grad does not accumulate into .grad
        "import torch\nfor x, y in loader:\n    grads = torch.autograd.grad(loss_fn(model(x), y), params)\n"
        "    for p, g in zip(params, grads):\n        p.grad = g\n    optimizer.step()\n",
        # another framework's training code
        "import numpy as np\nfor x, y in batches:\n    out = net.forward(x)\n    net.backward(loss.backward(out, y))\n"
        "    optimizer.step()\n",
        # SAM-style steps with zero_grad=True
        "import torch\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.first_step(zero_grad=True)\n"
        "    loss_fn(model(x), y).backward()\n    optimizer.step(zero_grad=True)\n",
        # an options object is not an optimizer
        "import torch\nfor x, y in loader:\n    optimizer.zero_grad()\n    loss_fn(model(x), y).backward()\n"
        "    optimizer.step()\n    options.step()\n",
    ]
    INVALID = [
        # the plain bug
        "import torch\nfor x, y in loader:\n    loss = loss_fn(model(x), y)\n    loss.backward()\n"
        "    optimizer.step()  # expect: TS001\n",
        # zero_grad only before the loop
        "import torch\noptimizer.zero_grad()\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n"
        "    optimizer.step()  # expect: TS001\n",
        # zero_grad only once per epoch
        "import torch\nfor epoch in range(10):\n    opt.zero_grad()\n    for x, y in loader:\n"
        "        loss_fn(model(x), y).backward()\n        opt.step()  # expect: TS001\n",
        # an optimizer recognised by its constructor, not its name
        "import torch\nfrom torch import optim\nclass Trainer:\n    def __init__(self, model):\n"
        "        self.tuner = optim.AdamW(model.parameters())\n\n    def fit(self, loader):\n"
        "        for x, y in loader:\n            self.loss(x, y).backward()\n            self.tuner.step()  # expect: TS001\n",
        # AMP: scaler.step(optimizer), and a while loop
        "import torch\nscaler = torch.amp.GradScaler('cuda')\nstep = 0\nwhile step < 100:\n"
        "    scaler.scale(loss_fn(model(x), y)).backward()\n    scaler.step(optimizer)  # expect: TS001\n"
        "    scaler.update()\n    step += 1\n",
        # GAN with no clearing at all: both steps
        "import torch\nfor real in loader:\n    d_loss(netD(real), netD(netG(z).detach())).backward()\n"
        "    opt_d.step()  # expect: TS001\n    g_loss(netD(netG(z))).backward()\n    optG.step()  # expect: TS001\n",
        # accelerate, torch.autograd.backward, scheduler alongside
        "import torch\nfor x, y in loader:\n    accelerator.backward(loss_fn(model(x), y))\n"
        "    self.optimizer.step()  # expect: TS001\n    self.lr_scheduler.step()\n",
        "import torch\nfor x, y in loader:\n    torch.autograd.backward([loss_fn(model(x), y)])\n"
        "    g_opt.step()  # expect: TS001\n",
        # rescaling the gradients by hand is not clearing them
        "import torch\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    for p in model.parameters():\n"
        "        p.grad.data.mul_(0.5)\n    optimizer.step()  # expect: TS001\n",
        # a conditional break does not make it a single iteration
        "import torch\nfor i, (x, y) in enumerate(loader):\n    loss_fn(model(x), y).backward()\n"
        "    optimizer.step()  # expect: TS001\n    if i == 10:\n        break\n",
    ]

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        # Innermost last; a None entry is a function/lambda/class boundary.
        self._frames: List[Optional[_Loop]] = []
        #: Enclosing functions, innermost last; the first entry stands for the module's own code.
        self._functions: List[_Function] = [_Function("")]
        self._all_functions: List[_Function] = []
        self._all_loops: List[_Loop] = []
        self._steps: List[_Step] = []
        self._optimizers: Set[str] = set()
        self._schedulers: Set[str] = set()
        self._scalers: Set[str] = set()
        self._imports: Set[str] = set()

    # -- structure ---------------------------------------------------------------------

    def _enter_loop(self, node: Union[cst.For, cst.While]) -> None:
        loop = _Loop(node, runs_once=_runs_once(node))
        self._frames.append(loop)
        self._all_loops.append(loop)
        if isinstance(node, cst.For):
            self._bind(node.target)

    def visit_For(self, node: cst.For) -> None:
        self._enter_loop(node)

    def leave_For(self, node: cst.For) -> None:
        self._frames.pop()

    def visit_While(self, node: cst.While) -> None:
        self._enter_loop(node)

    def leave_While(self, node: cst.While) -> None:
        self._frames.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        function = _Function(node.name.value)
        self._functions.append(function)
        self._all_functions.append(function)
        self._frames.append(None)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._functions.pop()
        self._frames.pop()

    def visit_Lambda(self, node: cst.Lambda) -> None:
        self._frames.append(None)

    def leave_Lambda(self, node: cst.Lambda) -> None:
        self._frames.pop()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._frames.append(None)

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self._frames.pop()

    def _local_loops(self) -> List[_Loop]:
        """Loops of the current function, innermost first."""
        loops = []
        for frame in reversed(self._frames):
            if frame is None:
                break
            loops.append(frame)
        return loops

    # -- events ------------------------------------------------------------------------

    def _clear(self) -> None:
        """Gradients are cleared here: every enclosing loop and function, across nested defs."""
        for frame in self._frames:
            if frame is not None:
                frame.clears = True
        for function in self._functions:
            function.clears = True
        self._functions[-1].clears_here = True

    def _call_name(self, name: str) -> None:
        for frame in self._frames:
            if frame is not None:
                frame.calls.add(name)
        for function in self._functions:
            function.calls.add(name)

    def _bind(self, target: cst.BaseExpression) -> None:
        names = [text for leaf in _targets(target) if (text := dotted(leaf)) is not None]
        for loop in self._local_loops():
            loop.assigned.update(names)

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            self._imports.add((dotted(alias.name) or "").partition(".")[0])

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.relative:
            self._imports.add(".")
        elif node.module is not None:
            self._imports.add((dotted(node.module) or "").partition(".")[0])

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._assigned(target.target, node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._assigned(node.target, node.value)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._assigned(node.target, None)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self._bind(node.asname.name)

    def _assigned(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression]) -> None:
        leaves = _targets(target)
        if any(_is_grad(leaf) or (isinstance(leaf, cst.Subscript) and _is_grad(leaf.value)) for leaf in leaves):
            self._clear()
        self._bind(target)
        if isinstance(value, cst.Call) and len(leaves) == 1:
            name = dotted(leaves[0])
            kind = self.context.qualified_name(value.func) or ""
            if name is None or not kind.startswith("torch."):
                return
            if kind.endswith("GradScaler"):
                self._scalers.add(name)
            elif ".lr_scheduler." in kind or ".swa_utils." in kind:
                self._schedulers.add(name)
            elif kind.startswith("torch.optim.") and kind.rpartition(".")[2][:1].isupper():
                self._optimizers.add(name)

    def visit_Del(self, node: cst.Del) -> None:
        if any(_is_grad(leaf) for leaf in _targets(node.target)):
            self._clear()

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        method = method_name(node)
        name = method if method is not None else (func.value if isinstance(func, cst.Name) else None)
        if name is not None:
            if _CLEARING_NAME.search(name):
                self._clear()
                return
            self._call_name(name)
            if method is not None and _is_grad(func.value) and (  # type: ignore[attr-defined]
                    method in _OVERWRITING_METHODS or (method == "mul_" and _is_zero(node))):
                self._clear()  # p.grad.zero_(), p.grad.data.zero_(), p.grad.detach_(), p.grad.mul_(0)...
                return
            if name == "setattr" and len(node.args) >= 2 and isinstance(node.args[1].value, cst.SimpleString) \
                    and node.args[1].value.evaluated_value == "grad":
                self._clear()
                return
        for arg in node.args:
            if isinstance(arg.value, (cst.Name, cst.Attribute)):
                passed = arg.value.value if isinstance(arg.value, cst.Name) else arg.value.attr.value
                self._call_name(passed)  # a clearing function handed over (a closure, a callback)
            if arg.keyword is not None and _CLEARING_NAME.search(arg.keyword.value) \
                    and not (isinstance(arg.value, cst.Name) and arg.value.value == "False"):
                self._clear()
        if method in _BACKWARD_METHODS or (
                method is None and self.context.qualified_name(func) in _BACKWARD_FUNCTIONS):
            for loop in self._local_loops():
                loop.backward = True
        elif method == "step":
            loops = self._local_loops()
            if loops:
                self._steps.append(_Step(node, loops, self._functions[-1]))

    # -- conclusion --------------------------------------------------------------------

    def leave_Module(self, node: cst.Module) -> None:
        if not self._steps or (self._imports & _OTHER_FRAMEWORKS and not self._imports & (_TORCH_FAMILY | {"."})):
            return
        clearing = self._clearing_functions()
        for step in self._steps:
            if not self._is_optimizer_step(step.call):
                continue
            loop = next((candidate for candidate in step.loops if candidate.backward), None)
            if loop is None or loop.runs_once or loop.clears or loop.calls & clearing:
                continue
            if _receiver_name(step.call) in loop.assigned:
                continue  # a fresh optimizer per iteration
            self.report(step.call, "zero_grad() is called, but not inside this loop"
                        if step.function.clears_here else "")

    def _clearing_functions(self) -> Set[str]:
        """Names of this file's functions that clear gradients, directly or through each other."""
        clearing = {function.name for function in self._all_functions if function.clears}
        pending = [function for function in self._all_functions if not function.clears]
        changed = True
        while changed and pending:
            changed = False
            for function in list(pending):
                if function.calls & clearing:
                    clearing.add(function.name)
                    pending.remove(function)
                    changed = True
        return clearing

    def _is_optimizer_step(self, call: cst.Call) -> bool:
        name = _receiver_name(call)
        if name is None or name in self._schedulers:
            return False
        last = name.rpartition(".")[2]
        if name in self._scalers or "scaler" in last.lower():
            return any(arg.keyword is None for arg in call.args)  # scaler.step(optimizer)
        return name in self._optimizers or _optimizer_like(last)
