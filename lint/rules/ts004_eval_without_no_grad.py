"""TS004 eval-without-no-grad: a loop evaluates a model put in eval mode, with autograd on.

The pattern: ``X.eval()`` (or ``X.train(False)``, ``X = ....eval()``) and, later in the
same function (or module-level script), a ``for`` / ``while`` loop or a comprehension
that calls ``X(...)`` - an evaluation pass - outside any ``torch.no_grad()`` /
``torch.inference_mode()`` / ``torch.set_grad_enabled(False)``. The model call in the
loop is reported (the first one per loop).

Deliberately not reported, because autograd may well be wanted or already off:

* the call is under a no-grad ``with`` (also one we cannot resolve but that looks like
  one: ``with ctx:``, ``with torch.set_grad_enabled(is_train):``), the function is
  decorated with no_grad / inference_mode, or ``torch.set_grad_enabled(False)`` ran
  earlier in the function (or anywhere at module level);
* the function does gradient work: it mentions ``requires_grad`` (saliency, adversarial
  inputs, frozen parameters), ``.grad``, an attack or an attribution method by name
  (``pgd_attack``, ``x_adv``, ``saliency``), ``torch.autograd.grad`` / ``torch.autograd.functional`` /
  ``torch.func`` / ``torch.enable_grad``, or calls ``backward`` / ``optimizer.step()`` /
  ``zero_grad()`` inside the same loop or after the model call, itself or through a
  function of this file that does (``train_step(model, batch)``; the outputs may be
  backpropagated: adversarial evaluation, a frozen backbone in a training loop);
* the model may differentiate its own output: the call passes a keyword such as
  ``compute_force=`` / ``compute_grad=`` / ``stress=``, or the file calls
  ``torch.autograd.grad`` anywhere (interatomic potentials: forces = -dE/dx; no_grad
  would break them);
* the function is only ever called from this file under a no-grad context (an eval
  helper called from ``main()`` inside ``with torch.no_grad():``), or it is never called
  but passed around by name (a callback: its caller's context is unknown);
* a single forward (no loop: a unit test), a loop over a literal list (``for shape in
  [(1, 3), (2, 3)]``: shapes, not batches), Lightning's ``validation_step`` & co.
  (the framework disables autograd), files of another framework (no torch import but a
  jax / flax / paddle / tensorflow one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

import libcst as cst

from ..modes import EVAL_MODE, mode_change
from ..names import dotted
from ..patterns import NO_GRAD_CONTEXTS, SET_GRAD_ENABLED, in_no_grad, method_name, receiver_text
from ..rule import LintRule

_LOOPS = (cst.For, cst.While, cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)
_SCOPES = (cst.Module, cst.FunctionDef, cst.ClassDef)
#: ``for shape in [(1, 3), (2, 3)]``: a handful of cases written out, not a pass over batches.
_LITERALS = (cst.List, cst.Tuple, cst.Set)
#: Qualified-name prefixes of explicit gradient work: a function using them wants autograd on.
_GRAD_APIS = ("torch.autograd.functional.", "torch.func.", "functorch.", "torch.enable_grad",
              "torch.autograd.enable_grad", "torch.autograd.grad_mode.enable_grad")
_GRAD_CALLS = frozenset({"torch.autograd.grad", "torch.autograd.backward", "torch.autograd.functional"})
_GRAD_SWITCHES = SET_GRAD_ENABLED | {"torch._C._set_grad_enabled"}
#: Methods a training framework (Lightning) calls with autograd already off.
_FRAMEWORK_EVAL_HOOKS = ("validation_step", "validation_epoch_end", "test_step", "test_epoch_end",
                         "predict_step", "on_validation_", "on_test_", "on_predict_")
_OTHER_FRAMEWORKS = frozenset({"jax", "flax", "tensorflow", "keras", "paddle", "mindspore", "oneflow",
                               "mxnet", "jittor", "megengine"})
#: ``model(batch, compute_force=True)``: a model that differentiates its output itself, needs autograd.
_GRAD_KEYWORDS = re.compile(r"force|grad|stress|virial|hessian|jacobian|deriv", re.IGNORECASE)
#: Names that say the function uses gradients: ``x.requires_grad_()``, ``x.grad``, an attack
#: (``pgd_attack``, ``x_adv``, ``perturbation``), an attribution method (saliency, Grad-CAM).
_GRADIENT_WORDS = re.compile(r"requires_grad|^grad$|attack|adversar|fgsm|pgd|perturb|^adv_|_adv$|^adv$|"
                             r"saliency|grad_?cam|attribution|integrated_grad", re.IGNORECASE)
_DEF = re.compile(r"\bdef\s+([A-Za-z_]\w*)")


@dataclass
class _Candidate:
    call: cst.Call
    model: str
    position: int
    loop: cst.CSTNode
    #: The scope's calls of this file's functions, (position, ids of the enclosing loops, name): filled
    #: in as the walk goes on, read at the end (a training helper called in the loop is training).
    helper_calls: List[Tuple[int, FrozenSet[int], str]] = field(default_factory=list)


@dataclass
class _Scope:
    """What one function (or the module, or a class body) has shown so far."""

    node: cst.CSTNode
    name: Optional[str]
    parent: Optional["_Scope"]
    eval_mode: Dict[str, bool] = field(default_factory=dict)
    candidates: List[_Candidate] = field(default_factory=list)
    #: (position, ids of the enclosing loops) of each backward / optimizer step / zero_grad.
    training: List[Tuple[int, FrozenSet[int]]] = field(default_factory=list)
    #: (position, ids of the enclosing loops, name) of each call of a function defined in this file.
    helper_calls: List[Tuple[int, FrozenSet[int], str]] = field(default_factory=list)
    grad_work: bool = False
    grad_off_at: Optional[int] = None


@dataclass
class _CallSite:
    caller: Optional[str]
    grad_off: bool
    #: ``obj.name(...)`` (a method call) rather than ``name(...)``.
    method: bool


def _is_true(expression: cst.BaseExpression) -> bool:
    return isinstance(expression, cst.Name) and expression.value == "True"


def _mode_argument(call: cst.Call) -> Optional[cst.BaseExpression]:
    """The ``mode`` argument of ``torch.set_grad_enabled(mode)``, if given."""
    for arg in call.args:
        if arg.keyword is None or arg.keyword.value == "mode":
            return arg.value
    return None


def _eval_mode_change(call: cst.Call) -> Optional[bool]:
    """True for ``X.eval()`` / ``X.train(False)``, False for ``X.train()`` / ``X.train(<other>)``, else None.

    :func:`modes.mode_change`, except that a ``train()`` with one argument under another keyword
    (``trainer.train(epochs=3)``) counts here as leaving eval mode too.
    """
    change = mode_change(call)
    if change is None:
        return False if method_name(call) == "train" and len(call.args) == 1 else None
    return change == EVAL_MODE


def _is_optimizer(text: Optional[str]) -> bool:
    """``optimizer`` / ``self.opt_g`` / ``scaler`` (``scaler.step(optimizer)``): the receiver of a training step."""
    text = (text or "").lower()
    return "opt" in text or "scaler" in text


def _chain_root(expression: cst.BaseExpression) -> Optional[str]:
    """``model`` for ``model.to(device).half()``: the name a method chain starts from."""
    while isinstance(expression, cst.Call) and isinstance(expression.func, cst.Attribute):
        expression = expression.func.value
    return dotted(expression) if not isinstance(expression, cst.Call) else None


def _chain_has_eval(expression: cst.BaseExpression) -> bool:
    """Whether ``expression`` is a method chain ending in or passing through ``.eval()`` (``Net().to(d).eval()``)."""
    while isinstance(expression, cst.Call) and isinstance(expression.func, cst.Attribute):
        if _eval_mode_change(expression):
            return True
        expression = expression.func.value
    return False


class EvalWithoutNoGrad(LintRule):
    CODE = "TS004"
    TRIGGERS = (".eval(", "train(False", "train(mode=False")

    VALID = [
        # the canonical evaluation loops
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    with torch.no_grad():\n"
        "        for x, y in loader:\n"
        "            out = model(x)\n",
        "import torch\n"
        "@torch.no_grad()\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    return [model(x) for x, _ in loader]\n",
        "import torch\n"
        "@torch.no_grad\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    for x, y in loader:\n"
        "        out = model(x)\n",
        "import torch\n"
        "@torch.inference_mode()\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    for x, y in loader:\n"
        "        out = model(x)\n",
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    for x, y in loader:\n"
        "        with torch.no_grad():\n"
        "            out = model(x)\n",
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    with torch.inference_mode():\n"
        "        for x, y in loader:\n"
        "            out = model(x)\n",
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    torch.set_grad_enabled(False)\n"
        "    for x, y in loader:\n"
        "        out = model(x)\n",
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    torch.set_grad_enabled(mode=False)\n"
        "    for x, y in loader:\n"
        "        out = model(x)\n",
        # an eval helper called under no_grad
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    for x, y in loader:\n"
        "        out = model(x)\n"
        "def main():\n"
        "    with torch.no_grad():\n"
        "        evaluate(model, loader)\n",
        "import torch\n"
        "class Trainer:\n"
        "    def validate(self):\n"
        "        self.model.eval()\n"
        "        for x, y in self.loader:\n"
        "            out = self.model(x)\n"
        "    def fit(self):\n"
        "        with torch.no_grad():\n"
        "            self.validate()\n",
        # gradient work through an eval-mode model: adversarial examples, saliency
        "import torch\n"
        "import torch.nn.functional as F\n"
        "def fgsm_eval(model, loader, eps):\n"
        "    model.eval()\n"
        "    for x, y in loader:\n"
        "        x = x.clone().requires_grad_()\n"
        "        loss = F.cross_entropy(model(x), y)\n"
        "        loss.backward()\n"
        "        adv = x + eps * x.grad.sign()\n"
        "        out = model(adv)\n",
        "import torch\n"
        "def fgsm_eval(model, loader, loss_fn, eps):\n"
        "    model.eval()\n"
        "    for x, y in loader:\n"
        "        delta = torch.zeros_like(x)\n"
        "        loss = loss_fn(model(x + delta), y)\n"
        "        loss.backward()\n",
        "import torch\n"
        "def saliency(model, images):\n"
        "    model.eval()\n"
        "    maps = []\n"
        "    for x in images:\n"
        "        x.requires_grad_()\n"
        "        score = model(x).max()\n"
        "        maps.append(score)\n"
        "    return maps\n",
        "import torch\n"
        "def attributions(model, images):\n"
        "    model.eval()\n"
        "    return [torch.autograd.grad(model(x).sum(), x)[0] for x in images]\n",
        # adversarial evaluation where the attack (elsewhere) backpropagates through the model
        "import torch\n"
        "def robust_eval(model, loader, attack):\n"
        "    model.eval()\n"
        "    for x, y in loader:\n"
        "        clean = model(x)\n"
        "        x_adv = attack.perturb(x, y)\n"
        "        robust = model(x_adv)\n",
        # a frozen model: parameters do not require grad, no graph is built
        "import torch\n"
        "def extract(backbone, loader):\n"
        "    backbone.eval()\n"
        "    backbone.requires_grad_(False)\n"
        "    return [backbone(x) for x, _ in loader]\n",
        # a single forward in a test, no loop
        "import torch\n"
        "def test_output_shape():\n"
        "    model = Net()\n"
        "    model.eval()\n"
        "    out = model(torch.randn(2, 3))\n"
        "    assert out.shape == (2, 10)\n",
        # a loop over a literal list of shapes: not a pass over batches
        "import torch\n"
        "def test_output_shapes():\n"
        "    model = Net().eval()\n"
        "    for batch in [1, 2, 4]:\n"
        "        assert model(torch.randn(batch, 3)).shape == (batch, 10)\n",
        "import torch\n"
        "model.eval()\n"
        "traced = torch.jit.trace(model, example)\n",
        # Lightning runs validation_step with autograd off, and no .eval() in sight
        "import torch\n"
        "import lightning as L\n"
        "class Lit(L.LightningModule):\n"
        "    def validation_step(self, batch, batch_idx):\n"
        "        x, y = batch\n"
        "        self.log('val_loss', self.loss(self.model(x), y))\n",
        # training loops
        "import torch\n"
        "def train(model, loader, opt, loss_fn):\n"
        "    model.train()\n"
        "    for x, y in loader:\n"
        "        opt.zero_grad()\n"
        "        loss_fn(model(x), y).backward()\n"
        "        opt.step()\n",
        "import torch\n"
        "def distill(teacher, student, loader, opt, loss_fn):\n"
        "    teacher.eval()\n"
        "    for x, y in loader:\n"
        "        with torch.no_grad():\n"
        "            target = teacher(x)\n"
        "        loss = loss_fn(student(x), target)\n"
        "        loss.backward()\n"
        "        opt.step()\n",
        "import torch\n"
        "def finetune(backbone, head, loader, opt, loss_fn):\n"
        "    backbone.eval()  # frozen batch-norm statistics\n"
        "    for x, y in loader:\n"
        "        loss = loss_fn(head(backbone(x)), y)\n"
        "        opt.zero_grad()\n"
        "        loss.backward()\n"
        "        opt.step()\n",
        # the eval switch of the transfer-learning tutorial
        "import torch\n"
        "def train_model(model, loaders, opt, loss_fn):\n"
        "    for phase in ['train', 'val']:\n"
        "        if phase == 'train':\n"
        "            model.train()\n"
        "        else:\n"
        "            model.eval()\n"
        "        for x, y in loaders[phase]:\n"
        "            with torch.set_grad_enabled(phase == 'train'):\n"
        "                out = model(x)\n",
        "import torch\n"
        "import contextlib\n"
        "def run(model, loader, train):\n"
        "    model.eval()\n"
        "    with torch.no_grad() if not train else contextlib.nullcontext():\n"
        "        for x, y in loader:\n"
        "            out = model(x)\n",
        "import torch\n"
        "import contextlib\n"
        "def run(model, loader):\n"
        "    model.eval()\n"
        "    with contextlib.ExitStack() as stack:\n"
        "        stack.enter_context(torch.no_grad())\n"
        "        for x, y in loader:\n"
        "            out = model(x)\n",
        "import torch\n"
        "import contextlib\n"
        "def run(model, loader, train):\n"
        "    model.train(train)\n"
        "    ctx = contextlib.nullcontext() if train else torch.no_grad()\n"
        "    with ctx:\n"
        "        for x, y in loader:\n"
        "            out = model(x)\n",
        # a fresh model (train mode) under the same name
        "import torch\n"
        "def compare(loader):\n"
        "    model = Net().eval()\n"
        "    model = Net()\n"
        "    for x, y in loader:\n"
        "        out = model(x)\n",
        # back in train mode before the loop
        "import torch\n"
        "def fit(model, loader):\n"
        "    model.eval()\n"
        "    model.train()\n"
        "    for x, y in loader:\n"
        "        out = model(x)\n",
        # a callback: called by a framework whose context is unknown here
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    for x, y in loader:\n"
        "        out = model(x)\n"
        "trainer.add_callback(evaluate)\n",
        # interatomic potentials differentiate their energy inside forward: autograd must stay on
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    for batch in loader:\n"
        "        out = model(batch, compute_force=True, training=False)\n",
        "import torch\n"
        "class Potential(torch.nn.Module):\n"
        "    def forward(self, pos):\n"
        "        energy = self.net(pos).sum()\n"
        "        return energy, -torch.autograd.grad(energy, pos)[0]\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    for pos in loader:\n"
        "        energy, forces = model(pos)\n",
        # another framework's eval()
        "import jax\n"
        "from flax import nnx\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    for x, y in loader:\n"
        "        out = model(x)\n",
    ]
    INVALID = [
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    correct = 0\n"
        "    for x, y in loader:\n"
        "        out = model(x)  # expect: TS004\n"
        "        correct += (out.argmax(1) == y).sum().item()\n"
        "    return correct\n",
        "import torch\n"
        "model.eval()\n"
        "for x, y in loader:\n"
        "    preds = model(x).argmax(1)  # expect: TS004\n",
        "import torch\n"
        "def evaluate(model, batches):\n"
        "    model.eval()\n"
        "    i = 0\n"
        "    while i < len(batches):\n"
        "        out = model(batches[i])  # expect: TS004\n"
        "        i += 1\n",
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    for x, y in loader:\n"
        "        out = model(x)  # expect: TS004\n"
        "def main():\n"
        "    model = Net()\n"
        "    evaluate(model, loader)\n"
        "    with torch.no_grad():\n"
        "        evaluate(model, loader)\n",
        "import torch\n"
        "class Trainer:\n"
        "    def validate(self):\n"
        "        self.model.eval()\n"
        "        return [self.model(x) for x, _ in self.val_loader]  # expect: TS004\n",
        "import torch\n"
        "def predict(loader):\n"
        "    model = Net().to('cpu').eval()\n"
        "    for x in loader:\n"
        "        yield model(x)  # expect: TS004\n",
        "import torch\n"
        "def predict(model, loader, device):\n"
        "    model.eval()\n"
        "    model = model.to(device)\n"
        "    for x in loader:\n"
        "        yield model(x.to(device))  # expect: TS004\n",
        # training first, then an evaluation loop in the same epoch loop
        "import torch\n"
        "def fit(model, train_loader, val_loader, opt, loss_fn, epochs):\n"
        "    for epoch in range(epochs):\n"
        "        model.train()\n"
        "        for x, y in train_loader:\n"
        "            opt.zero_grad()\n"
        "            loss_fn(model(x), y).backward()\n"
        "            opt.step()\n"
        "        model.eval()\n"
        "        for x, y in val_loader:\n"
        "            val_loss = loss_fn(model(x), y).item()  # expect: TS004\n",
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self._scope: Optional[_Scope] = None
        self._position = 0
        self._defined: Set[str] = set(_DEF.findall(context.source))
        self._call_sites: Dict[str, List[_CallSite]] = {}
        #: Names of the functions (False) and methods (True) defined in the file.
        self._kinds: Dict[str, Set[bool]] = {}
        self._referenced: Set[str] = set()
        self._pending: List[Tuple[str, _Candidate]] = []
        self._imports: Set[str] = set()
        #: The file calls torch.autograd.grad & co somewhere (a model that differentiates inside forward).
        self._file_differentiates = False
        #: Functions of this file that run a backward / step / zero_grad themselves (``train_step``).
        self._training_functions: Set[str] = set()

    # -- scopes ------------------------------------------------------------------------

    def visit_Module(self, node: cst.Module) -> None:
        self._scope = _Scope(node, None, None)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        outer = self._scope
        self._kinds.setdefault(node.name.value, set()).add(outer is not None and isinstance(outer.node, cst.ClassDef))
        self._scope = _Scope(node, node.name.value, outer)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._scope = _Scope(node, None, self._scope)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        scope = self._close()
        if not scope.candidates or node.name.value.startswith(_FRAMEWORK_EVAL_HOOKS):
            return
        self._pending.extend((node.name.value, candidate) for candidate in self._flaggable(scope))

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self._close()

    def leave_Module(self, node: cst.Module) -> None:
        scope = self._scope
        assert scope is not None
        if self._imports & _OTHER_FRAMEWORKS and not self._imports & {"torch", "torchvision", "transformers"}:
            return
        if scope.grad_off_at is not None:
            return  # torch.set_grad_enabled(False) at module level: a script with autograd off globally
        if self._file_differentiates:
            return  # its models may need autograd at evaluation (forces = -dE/dx): no_grad would break them
        for candidate in self._flaggable(scope):
            self._flag(candidate)
        memo: Dict[str, bool] = {}
        for name, candidate in self._pending:
            if not self._only_called_without_grad(name, memo, set()):
                self._flag(candidate)

    def _close(self) -> _Scope:
        scope = self._scope
        assert scope is not None and scope.parent is not None
        if scope.grad_work and isinstance(scope.node, cst.FunctionDef):
            outer = scope.parent  # a nested function's gradient work counts for the functions around it
            while outer is not None and isinstance(outer.node, cst.FunctionDef):
                outer.grad_work = True
                outer = outer.parent
        self._scope = scope.parent
        return scope

    # -- what the walk records -------------------------------------------------------

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            self._imports.add((dotted(alias.name) or "").partition(".")[0])

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if not node.relative and node.module is not None:
            self._imports.add((dotted(node.module) or "").partition(".")[0])

    def visit_Assign(self, node: cst.Assign) -> None:
        """``model = Net().eval()`` puts ``model`` in eval mode; ``model = Net()`` is a fresh model in train mode."""
        scope = self._scope
        assert scope is not None
        evaluating = _chain_has_eval(node.value)
        root = _chain_root(node.value)
        for target in node.targets:
            text = dotted(target.target)
            if text is None or text == root and not evaluating:
                continue  # ``model = model.to(device)``: the same module, in the same mode
            if evaluating or text in scope.eval_mode:
                scope.eval_mode[text] = evaluating

    def visit_Name(self, node: cst.Name) -> None:
        scope = self._scope
        if scope is not None and _GRADIENT_WORDS.search(node.value) and not self._clears_grad(node):
            scope.grad_work = True
            return
        if node.value in self._defined:
            self._note_reference(node)

    def _clears_grad(self, node: cst.Name) -> bool:
        """``p.grad = None`` / ``del p.grad``: a training loop's hand-written ``zero_grad()``, not gradient work."""
        stack = self.context.stack
        if node.value != "grad" or len(stack) < 4:
            return False
        attribute, holder = stack[-2], stack[-3]
        if not (isinstance(attribute, cst.Attribute) and attribute.attr is node):
            return False
        if isinstance(holder, cst.Del):
            return True
        assign = stack[-4]
        return isinstance(holder, cst.AssignTarget) and isinstance(assign, cst.Assign) \
            and isinstance(assign.value, cst.Name) and assign.value.value == "None"

    def visit_Call(self, node: cst.Call) -> None:
        self._position += 1
        scope = self._scope
        assert scope is not None
        change = _eval_mode_change(node)
        if change is not None:
            target = receiver_text(node)
            if target is not None:
                scope.eval_mode[target] = change
            return
        name = method_name(node)
        if name is not None and ("backward" in name or name == "zero_grad" or
                                 (name == "step" and _is_optimizer(receiver_text(node)))):
            scope.training.append((self._position, frozenset(id(loop) for loop in self._loops())))
            if isinstance(scope.node, cst.FunctionDef):
                self._training_functions.add(scope.node.name.value)
            return
        qualified = self.context.qualified_name(node.func)
        if qualified is not None:
            if qualified in _GRAD_CALLS or qualified.startswith(_GRAD_APIS):
                scope.grad_work = True
                self._file_differentiates = True
            elif qualified in _GRAD_SWITCHES and isinstance(self.context.stack[-2], cst.Expr):
                mode = _mode_argument(node)
                if mode is not None and not _is_true(mode) and scope.grad_off_at is None:
                    scope.grad_off_at = self._position
            elif qualified in NO_GRAD_CONTEXTS and scope.grad_off_at is None and \
                    not isinstance(self.context.stack[-2], (cst.WithItem, cst.Decorator)):
                # ``stack.enter_context(torch.no_grad())``, ``ctx = torch.no_grad() if ... else ...``:
                # entered somewhere we do not follow, so what comes next may run without autograd.
                scope.grad_off_at = self._position
            return
        model = dotted(node.func)
        if model is None:
            return
        if scope.eval_mode.get(model) and not any(
                arg.keyword is not None and _GRAD_KEYWORDS.search(arg.keyword.value) for arg in node.args):
            loop = self._innermost_loop(node)
            if loop is not None and not self._grad_off_here():
                scope.candidates.append(_Candidate(node, model, self._position, loop, scope.helper_calls))
        called = model.rpartition(".")[2]
        if called in self._defined:
            scope.helper_calls.append((self._position, frozenset(id(loop) for loop in self._loops()), called))
            grad_off = self._grad_off_here() or (scope.grad_off_at is not None)
            caller = scope.name if isinstance(scope.node, cst.FunctionDef) else None
            self._call_sites.setdefault(called, []).append(_CallSite(caller, grad_off, called != model))

    # -- helpers -----------------------------------------------------------------------

    def _loops(self) -> List[cst.CSTNode]:
        """Loops around the current node, innermost first, up to the enclosing function."""
        loops = []
        for node in self.context.ancestors():
            if isinstance(node, _SCOPES) or isinstance(node, cst.Lambda):
                break
            if isinstance(node, _LOOPS):
                loops.append(node)
        return loops

    def _innermost_loop(self, call: cst.Call) -> Optional[cst.CSTNode]:
        """The loop whose *body* runs ``call`` repeatedly (not a loop's iterable, not a literal list)."""
        child: cst.CSTNode = call
        for node in self.context.ancestors():
            if isinstance(node, _SCOPES) or isinstance(node, cst.Lambda):
                return None
            if isinstance(node, cst.While) and child is node.body:
                return node
            if isinstance(node, cst.For) and child is node.body and not isinstance(node.iter, _LITERALS):
                return node
            if isinstance(node, (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)) and \
                    (child is getattr(node, "elt", None) or child is getattr(node, "key", None) or
                     child is getattr(node, "value", None)) and not isinstance(node.for_in.iter, _LITERALS):
                return node
            child = node
        return None

    def _grad_off_here(self) -> bool:
        """Whether autograd is, or may well be, off at the current node through ``with`` blocks or decorators."""
        if in_no_grad(self.context):
            return True
        for node in self.context.ancestors():
            if isinstance(node, cst.With) and any(self._may_disable_grad(item.item) for item in node.items):
                return True
            if isinstance(node, cst.FunctionDef):
                return self._grad_off_function(node)
            if isinstance(node, cst.Lambda):
                return False
        return False

    def _grad_off_function(self, function: cst.FunctionDef) -> bool:
        """Decorated with something that disables (or explicitly manages) autograd."""
        return any(self._may_disable_grad(decorator.decorator) or self._mentions_grad(decorator.decorator)
                   for decorator in function.decorators)

    def _may_disable_grad(self, expression: cst.BaseExpression) -> bool:
        """A context we cannot prove leaves autograd on: ``set_grad_enabled(<not True>)``, an unknown name."""
        if isinstance(expression, cst.IfExp):  # ``torch.no_grad() if evaluating else nullcontext()``
            return self._may_disable_grad(expression.body) or self._may_disable_grad(expression.orelse)
        target = expression.func if isinstance(expression, cst.Call) else expression
        qualified = self.context.qualified_name(target)
        if qualified in SET_GRAD_ENABLED:
            mode = _mode_argument(expression) if isinstance(expression, cst.Call) else None
            return mode is None or not _is_true(mode)
        if qualified is not None and qualified.startswith("torch.") and "grad" not in qualified:
            return False  # torch.autocast, torch.cuda.amp.autocast...: known, autograd untouched
        if isinstance(expression, cst.Name) and qualified is None:
            return True  # ``with ctx:``: a context manager built elsewhere
        name = dotted(target)
        if name is not None and (name in self._defined or (qualified or "").startswith(".")):
            return True  # the project's own context manager: it may well disable autograd
        return self._mentions_grad(expression) or "eval" in (name or "").lower()

    def _mentions_grad(self, expression: cst.BaseExpression) -> bool:
        target = expression.func if isinstance(expression, cst.Call) else expression
        text = (dotted(target) or "").lower()
        return "grad" in text or "inference" in text

    def _note_reference(self, node: cst.Name) -> None:
        """Record a use of a file-defined function's name that is not a call (passed as a callback)."""
        stack = self.context.stack
        parent = stack[-2] if len(stack) > 1 else None
        if isinstance(parent, cst.Call) and parent.func is node:
            return
        if isinstance(parent, cst.Attribute) and parent.attr is node:
            grand = stack[-3] if len(stack) > 2 else None
            if isinstance(grand, cst.Call) and grand.func is parent:
                return
        if isinstance(parent, (cst.FunctionDef, cst.ClassDef, cst.Param)) or \
                (isinstance(parent, cst.Arg) and parent.keyword is node):
            return
        self._referenced.add(node.value)

    def _flaggable(self, scope: _Scope) -> List[_Candidate]:
        """The first candidate of each loop that no gradient work or autograd switch in ``scope`` excuses."""
        if scope.grad_work:
            return []
        flagged: List[_Candidate] = []
        loops: Set[int] = set()
        for candidate in scope.candidates:
            if id(candidate.loop) in loops:
                continue
            if scope.grad_off_at is not None and scope.grad_off_at < candidate.position:
                continue
            if any(position > candidate.position or id(candidate.loop) in enclosing
                   for position, enclosing in scope.training):
                continue
            loops.add(id(candidate.loop))
            flagged.append(candidate)
        return flagged

    def _only_called_without_grad(self, name: str, memo: Dict[str, bool], active: Set[str]) -> bool:
        """Whether every call of ``name`` in this file runs with autograd off (directly or through its callers).

        A function never called here is judged on its own, unless its name is passed
        around (a callback, whose caller's context is unknown).
        """
        if name in memo:
            return memo[name]
        if name in active:
            return False
        kinds = self._kinds.get(name, set())
        sites = [site for site in self._call_sites.get(name, []) if site.method in kinds]
        if not sites:
            return name in self._referenced
        active.add(name)
        answer = all(site.grad_off or (site.caller is not None and
                                       self._only_called_without_grad(site.caller, memo, active))
                     for site in sites)
        active.discard(name)
        memo[name] = answer
        return answer

    def _flag(self, candidate: _Candidate) -> None:
        if any(name in self._training_functions and (position > candidate.position or id(candidate.loop) in loops)
               for position, loops, name in candidate.helper_calls):
            return  # the loop (or what follows) trains through a helper: ``train_step(model, ...)`` per batch
        self.report(candidate.call, f"`{candidate.model}` is in eval mode")
