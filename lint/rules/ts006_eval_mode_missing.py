"""TS006 eval-mode-missing: an evaluation loop runs with the model still in train mode.

The pattern: a loop (``for`` / ``while`` / comprehension) that calls a model ``M(...)``
with autograd off (``with torch.no_grad()`` / ``inference_mode`` / a no-grad decorated
function), feeds it a different input each iteration, uses the result, does no gradient
work (no ``backward`` / ``step`` / ``zero_grad`` in the loop) and looks like an
evaluation (the function is named like one - ``evaluate``, ``validate``, ``test``,
``predict``... - or the loop computes a metric: a loss / accuracy call, ``argmax``,
``==``). The model is then in train mode when nothing on the way sets eval mode:

* in the function itself, no eval-ish call can run before the loop (``X.eval()`` on any
  receiver, ``X.train(False)``, ``X.train(flag)``, a call of a local function that does
  one of these, an unknown function with ``eval`` in its name); and either training ran
  earlier in the function (``backward`` / ``step`` / ``M.train()`` before the loop), or
  the model was built in the function / at module level (fresh modules are in train
  mode);
* otherwise (the model is a parameter, or ``self.X`` in a method) every call of the
  function in this file must be reached the same way, recursively; a function with no
  visible caller, or one passed around as a value (a callback), is not judged.

Deliberately not reported:

* ``M.train()`` right before the loop with no training in between: batch-norm
  recalibration or Monte-Carlo dropout, on purpose; the same input fed repeatedly
  (``for _ in range(T): model(x)``: Monte-Carlo sampling); a call whose result is
  discarded (``model(x)`` as a statement: a forward for its side effects, such as
  batch-norm statistics);
* frozen batch-norm (``model.backbone.eval()``) and any other eval-ish call before the
  loop, whatever its receiver (conservative);
* a model known to behave the same in both modes: every visible origin is built from
  classes of this file (or plain ``torch.nn`` layers) without dropout, batch-norm or a
  ``self.training`` branch;
* pytest test functions (``test*`` in test files, or without parameters): a forward there
  is a check, not an evaluation pass; loops over a literal list (sizes, shapes); losses,
  metrics, ``self(...)``, constructors;
* a model loaded whole (``torch.load``, ``torch.jit.load``, ``from_pretrained``, which
  puts Hugging Face models in eval mode) or aliased (``model = self.model``): its mode is
  decided elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Set

import libcst as cst

from ..names import dotted
from ..modes import (CallSite, EITHER_MODE, EVAL_MODE, ModeFlow, ModeFlowRule, TRAIN_MODE, argument_names,
    is_test_function, mode_change, related_receivers)
from ..names import bound_names

_EVAL_FUNCTION = re.compile(r"eval|valid|(^|_)val($|_)|(^|_)test|predict|infer|(^|_)score|metric|accuracy|"
                            r"(^|_)acc($|_)|benchmark", re.I)
_METRIC_CALL = re.compile(r"loss|criterion|accuracy|(^|_)acc($|_)|metric|score|correct|(^|_)f1|precision|recall|"
                          r"(^|_)auc|mse|mae|iou|dice|bleu|perplexity|^argmax$|^max$|^eq$|^topk$", re.I)
#: Calls that make a loop gradient work, not an evaluation pass.
_GRADIENT_WORK = frozenset({"backward", "step", "zero_grad", "manual_backward"})
_TRAINING = frozenset({"backward", "step", "manual_backward"})
_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)
_TRAIN, _SILENT = "train", "silent"
_RESTORED = re.compile(r"load|from_pretrained|restore|unpickle", re.I)
#: Methods returning the module they are called on (``torch.load(p).to(device)``).
_SAME_MODULE_METHODS = frozenset({"to", "cuda", "cpu", "float", "double", "half", "train", "requires_grad_"})


@dataclass
class _Candidate:
    site: CallSite
    loop: cst.CSTNode


class EvalModeMissing(ModeFlowRule):
    CODE = "TS006"
    TRIGGERS = ("no_grad", "inference_mode", "set_grad_enabled")

    VALID = [
        # the canonical evaluation function
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    correct = 0\n"
        "    with torch.no_grad():\n"
        "        for x, y in loader:\n"
        "            correct += (model(x).argmax(1) == y).sum().item()\n"
        "    return correct\n",
        # the caller sets eval mode
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    with torch.no_grad():\n"
        "        return [model(x).argmax(1) for x, _ in loader]\n"
        "def main():\n"
        "    model = Net()\n"
        "    model.eval()\n"
        "    print(evaluate(model, loader))\n",
        # ... in an epoch loop, after training
        "import torch\n"
        "@torch.no_grad()\n"
        "def validate(net, loader, criterion):\n"
        "    return sum(criterion(net(x), y).item() for x, y in loader)\n"
        "def main():\n"
        "    net = Net()\n"
        "    for epoch in range(3):\n"
        "        net.train()\n"
        "        train_one_epoch(net, loader)\n"
        "        net.eval()\n"
        "        print(validate(net, val_loader, criterion))\n",
        # no visible caller: the caller elsewhere may well call eval()
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    with torch.no_grad():\n"
        "        return [model(x).argmax(1) for x, _ in loader]\n",
        # passed as a callback
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    with torch.no_grad():\n"
        "        return [model(x).argmax(1) for x, _ in loader]\n"
        "trainer.add_hook(evaluate)\n"
        "evaluate(Net(), loader)\n",
        # inline validation after model.eval()
        "import torch\n"
        "def fit(model, train_loader, val_loader, opt, loss_fn):\n"
        "    for epoch in range(3):\n"
        "        model.train()\n"
        "        for x, y in train_loader:\n"
        "            opt.zero_grad()\n"
        "            loss_fn(model(x), y).backward()\n"
        "            opt.step()\n"
        "        model.eval()\n"
        "        with torch.no_grad():\n"
        "            for x, y in val_loader:\n"
        "                val = loss_fn(model(x), y).item()\n",
        # eval mode set through a helper of this file
        "import torch\n"
        "def prepare(model):\n"
        "    model.eval()\n"
        "def main(model, loader, loss_fn):\n"
        "    prepare(model)\n"
        "    with torch.no_grad():\n"
        "        for x, y in loader:\n"
        "            loss = loss_fn(model(x), y)\n",
        # frozen batch-norm: an eval() before the loop, whatever its receiver, keeps it quiet
        "import torch\n"
        "def main(model, loader, loss_fn):\n"
        "    model.backbone.eval()\n"
        "    with torch.no_grad():\n"
        "        for x, y in loader:\n"
        "            loss = loss_fn(model(x), y)\n",
        # batch-norm recalibration: train() on purpose, no training in between, output discarded
        "import torch\n"
        "def recalibrate_bn(model, loader):\n"
        "    model.train()\n"
        "    with torch.no_grad():\n"
        "        for x, _ in loader:\n"
        "            model(x)\n",
        "import torch\n"
        "def recalibrate_bn(model, loader):\n"
        "    model.train()\n"
        "    with torch.no_grad():\n"
        "        for x, _ in loader:\n"
        "            out = model(x)\n",
        # Monte-Carlo dropout: the same input, sampled again and again
        "import torch\n"
        "def predict_mc(model, x, samples):\n"
        "    with torch.no_grad():\n"
        "        preds = torch.stack([model(x) for _ in range(samples)])\n"
        "    return preds.mean(0), preds.std(0)\n"
        "def main():\n"
        "    model = Net()\n"
        "    print(predict_mc(model, x, 10))\n",
        # a teacher under no_grad inside the training loop (gradient work in the loop)
        "import torch\n"
        "def distill(teacher, student, loader, opt, loss_fn):\n"
        "    for x, y in loader:\n"
        "        with torch.no_grad():\n"
        "            target = teacher(x)\n"
        "        loss = loss_fn(student(x), target)\n"
        "        opt.zero_grad()\n"
        "        loss.backward()\n"
        "        opt.step()\n",
        # a model without dropout or batch-norm: eval() changes nothing
        "import torch\n"
        "import torch.nn as nn\n"
        "class MLP(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc1 = nn.Linear(4, 8)\n"
        "        self.fc2 = nn.Linear(8, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc2(torch.relu(self.fc1(x)))\n"
        "def evaluate(model, loader):\n"
        "    with torch.no_grad():\n"
        "        return [(model(x).argmax(1) == y).float().mean() for x, y in loader]\n"
        "def main():\n"
        "    model = MLP()\n"
        "    print(evaluate(model, loader))\n",
        "import torch\n"
        "from torch import nn\n"
        "model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))\n"
        "with torch.no_grad():\n"
        "    acc = [(model(x).argmax(1) == y).float().mean() for x, y in loader]\n",
        # a pytest test function: forwards there are checks, not an evaluation pass
        "import torch\n"
        "def test_shapes():\n"
        "    model = Net()\n"
        "    with torch.no_grad():\n"
        "        for batch in (1, 2, 4):\n"
        "            assert model(torch.randn(batch, 3)).argmax(1).shape == (batch,)\n",
        # losses and metrics are modules too, but not models
        "import torch\n"
        "def evaluate(model, loader, criterion):\n"
        "    model.eval()\n"
        "    with torch.no_grad():\n"
        "        for x, y in loader:\n"
        "            loss = criterion(model(x), y)\n",
        # generation inside the model class (the caller decides the mode)
        "import torch\n"
        "class GPT(torch.nn.Module):\n"
        "    @torch.no_grad()\n"
        "    def generate(self, idx, steps):\n"
        "        for _ in range(steps):\n"
        "            logits = self(idx)\n"
        "            idx = torch.cat([idx, logits.argmax(-1)], 1)\n"
        "        return idx\n",
        # rollouts: env.step is gradient-free but not an evaluation pass either
        "import torch\n"
        "def collect(policy, env, steps):\n"
        "    obs = env.reset()\n"
        "    with torch.no_grad():\n"
        "        for t in range(steps):\n"
        "            action = policy(obs).argmax()\n"
        "            obs, reward, done, info = env.step(action)\n",
        # the transfer-learning tutorial's phase switch
        "import torch\n"
        "def train_model(model, loaders, criterion):\n"
        "    for phase in ['train', 'val']:\n"
        "        if phase == 'train':\n"
        "            model.train()\n"
        "        else:\n"
        "            model.eval()\n"
        "        for x, y in loaders[phase]:\n"
        "            with torch.set_grad_enabled(phase == 'train'):\n"
        "                loss = criterion(model(x), y)\n",
        # mode chosen by a flag
        "import torch\n"
        "def run_epoch(model, loader, criterion, train):\n"
        "    model.train(train)\n"
        "    with torch.no_grad():\n"
        "        for x, y in loader:\n"
        "            loss = criterion(model(x), y)\n",
    ]
    INVALID = [
        # the classic: evaluate() forgets model.eval(), main never calls it either
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    correct = 0\n"
        "    with torch.no_grad():\n"
        "        for x, y in loader:\n"
        "            out = model(x)  # expect: TS006\n"
        "            correct += (out.argmax(1) == y).sum().item()\n"
        "    return correct\n"
        "def main():\n"
        "    model = Net()\n"
        "    for epoch in range(3):\n"
        "        model.train()\n"
        "        train_one_epoch(model, loader)\n"
        "        print(evaluate(model, val_loader))\n",
        # inline validation after the training part of the epoch
        "import torch\n"
        "def fit(model, train_loader, val_loader, opt, loss_fn):\n"
        "    for epoch in range(3):\n"
        "        model.train()\n"
        "        for x, y in train_loader:\n"
        "            opt.zero_grad()\n"
        "            loss_fn(model(x), y).backward()\n"
        "            opt.step()\n"
        "        with torch.no_grad():\n"
        "            for x, y in val_loader:\n"
        "                val = loss_fn(model(x), y).item()  # expect: TS006\n",
        # a no-grad decorated test() of the MNIST-example shape, called from main
        "import torch\n"
        "import torch.nn.functional as F\n"
        "@torch.no_grad()\n"
        "def test(model, device, test_loader):\n"
        "    test_loss = 0\n"
        "    for data, target in test_loader:\n"
        "        output = model(data)  # expect: TS006\n"
        "        test_loss += F.nll_loss(output, target, reduction='sum').item()\n"
        "    return test_loss\n"
        "def main():\n"
        "    model = Net().to('cpu')\n"
        "    for epoch in range(1, 3):\n"
        "        train(model, 'cpu', train_loader, optimizer, epoch)\n"
        "        test(model, 'cpu', test_loader)\n"
        "if __name__ == '__main__':\n"
        "    main()\n",
        # a trainer class
        "import torch\n"
        "class Trainer:\n"
        "    def validate(self):\n"
        "        with torch.inference_mode():\n"
        "            return [self.criterion(self.model(x), y).item() for x, y in self.val_loader]  # expect: TS006\n"
        "    def fit(self):\n"
        "        for epoch in range(3):\n"
        "            self.model.train()\n"
        "            self.train_epoch()\n"
        "            print(self.validate())\n",
        # a script: trained, then evaluated at module level
        "import torch\n"
        "model = Net()\n"
        "for x, y in loader:\n"
        "    opt.zero_grad()\n"
        "    loss_fn(model(x), y).backward()\n"
        "    opt.step()\n"
        "with torch.no_grad():\n"
        "    for x, y in val_loader:\n"
        "        pred = model(x).argmax(1)  # expect: TS006\n",
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self._candidates: List[_Candidate] = []
        #: Loops (by id) that compare values with == / !=: accuracy counting.
        self._comparing: Set[int] = set()

    # -- recording ---------------------------------------------------------------------

    def visit_Call(self, node: cst.Call) -> None:
        site = self._flow.record_call(node)
        if not site.no_grad or site.func_text is None or site.qualified is not None:
            return
        stack = self.context.stack
        if len(stack) > 1 and isinstance(stack[-2], cst.Expr):
            return  # result discarded: a forward for its side effects (batch-norm statistics)
        loops = site.loops()
        if loops:
            self._candidates.append(_Candidate(site, loops[0]))

    def visit_Comparison(self, node: cst.Comparison) -> None:
        if any(isinstance(t.operator, (cst.Equal, cst.NotEqual)) for t in node.comparisons):
            for ancestor in self.context.ancestors():
                if isinstance(ancestor, (cst.FunctionDef, cst.Lambda, cst.ClassDef)):
                    break
                self._comparing.add(id(ancestor))

    # -- judging -----------------------------------------------------------------------

    def leave_Module(self, node: cst.Module) -> None:
        if not self._candidates:
            return
        self._eval_functions = self._flow.local_closure(self._sets_eval)
        self._training_functions = self._flow.local_closure(self._trains)
        reported: Set[int] = set()
        for candidate in self._candidates:
            site = candidate.site
            model = site.func_text
            assert model is not None
            if id(candidate.loop) in reported or not self._flow.looks_like_model(model):
                continue
            if not self._evaluation_loop(candidate) or self._state(site, model, 0) != _TRAIN:
                continue
            if self._flow.known_plain(model, site.scope):
                continue
            reported.add(id(candidate.loop))
            self.report(site.call, f"{model} is in train mode here")

    def _evaluation_loop(self, candidate: _Candidate) -> bool:
        loop, site = candidate.loop, candidate.site
        inside = [s for s in self._flow.sites_in(loop) if s.scope is site.scope]
        if any(s.name in _GRADIENT_WORK or (s.qualified or "").startswith("torch.autograd") for s in inside):
            return False
        if not _varies(loop, site, self._flow) or _over_literal(loop):
            return False
        function = site.scope
        if is_test_function(function, self.context.path):
            return False  # a pytest test: its forwards are checks, not an evaluation pass
        if isinstance(function, cst.FunctionDef) and _EVAL_FUNCTION.search(function.name.value):
            return True
        return id(loop) in self._comparing or any(
            s is not site and s.name is not None and _METRIC_CALL.search(s.name) for s in inside)

    def _trains(self, site: CallSite, local_training: Set[str]) -> bool:
        """A call that runs training steps: backward / step, a local function that does, or an unknown
        function named like it (``train_one_epoch(...)``, ``trainer.fit(...)``)."""
        name = site.name
        if name is None or mode_change(site.call) is not None:
            return False
        if name in _TRAINING:
            return True
        if self._flow.calls_local(site):
            return name in local_training
        return "train" in name.lower() or name == "fit"

    def _sets_eval(self, site: CallSite, local_eval: Set[str]) -> bool:
        if mode_change(site.call) in (EVAL_MODE, EITHER_MODE):
            return True
        name = site.name
        if name is None:
            return False
        if self._flow.calls_local(site):
            return name in local_eval
        return "eval" in name.lower()

    def _state(self, at: CallSite, model: str, depth: int) -> Optional[str]:
        """_TRAIN when ``model`` is in train mode at ``at`` on every path this file shows, else _SILENT/None."""
        flow = self._flow
        sites = flow.scope_sites(at.scope)
        if any(s is not at and self._sets_eval(s, self._eval_functions) and flow.precedes(s, at, ())
               for s in sites):
            return _SILENT
        training = [s for s in sites if s.index < at.index and self._trains(s, self._training_functions)]
        trains = [s for s in sites if s.index < at.index and s.receiver is not None
                  and mode_change(s.call) == TRAIN_MODE and related_receivers(s.receiver, model)]
        if trains:
            last = trains[-1]
            if not any(s.index > last.index for s in training):
                return _SILENT  # train() on purpose right before: recalibration, Monte-Carlo dropout
            return _TRAIN
        if training or any(self._trains(s, self._training_functions) and flow.precedes(s, at, ()) for s in sites):
            return _TRAIN
        scope = at.scope
        built = [a.value for a in flow.assignments if a.target == model and a.scope is scope]
        if any(_restored(value) or not isinstance(value, cst.Call) for value in built):
            return None  # unpickled / from_pretrained / an alias: its mode is decided elsewhere
        if not isinstance(scope, cst.FunctionDef):
            return _TRAIN  # a script: modules are built in train mode
        if "." not in model and built:
            return _TRAIN  # built in this function
        return self._state_at_callers(scope, model, depth)

    def _state_at_callers(self, function: cst.FunctionDef, model: str, depth: int) -> Optional[str]:
        if depth >= 3:
            return None
        passed = self._flow.model_at_callers(function, model)
        if not passed:
            return None
        for caller, text in passed:
            if text is None or self._state(caller, text, depth + 1) != _TRAIN:
                return None
        return _TRAIN


def _restored(value: Optional[cst.BaseExpression]) -> bool:
    """A model loaded whole (``torch.load``, ``torch.jit.load``, ``from_pretrained``): mode unknown here."""
    while isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and \
            value.func.attr.value in _SAME_MODULE_METHODS:
        value = value.func.value
    if not isinstance(value, cst.Call):
        return False
    name = dotted(value.func) or ""
    return bool(_RESTORED.search(name.rpartition(".")[2]))


def _over_literal(loop: cst.CSTNode) -> bool:
    """``for batch in (1, 2, 4)``: a loop over sizes or shapes, not over batches."""
    iterable = loop.iter if isinstance(loop, cst.For) else loop.for_in.iter if isinstance(loop, _COMPREHENSIONS) else None
    return isinstance(iterable, (cst.List, cst.Tuple, cst.Set))


def _varies(loop: cst.CSTNode, site: CallSite, flow: ModeFlow) -> bool:
    """Whether the call's arguments read a name the loop rebinds: a new batch each iteration."""
    bound: Set[str] = set()
    if isinstance(loop, cst.For):
        bound.update(bound_names(loop.target))
    elif isinstance(loop, _COMPREHENSIONS):
        comp: Optional[cst.CompFor] = loop.for_in
        while comp is not None:
            bound.update(bound_names(comp.target))
            comp = comp.inner_for_in
    bound.update(a.target for a in flow.assignments if "." not in a.target and any(x is loop for x in a.ancestors))
    return bool(argument_names(site.call) & bound)
