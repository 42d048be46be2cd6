"""TS007 train-mode-not-restored: ``model.eval()`` is never undone before training resumes.

The pattern: a training call ``M(...)`` - a model call with autograd on, in a ``for`` /
``while`` loop that runs ``backward()`` unconditionally and an optimizer ``step()`` -
that can be reached from an ``M.eval()`` / ``M.train(False)`` without passing an
``M.train()`` on the way. Loops wrap around, so the classic bug is found::

    model.train()
    for epoch in range(epochs):
        for x, y in train_loader:        # second epoch: still in eval mode
            ...; loss.backward(); optimizer.step()
        model.eval()                      # <- reported
        validate(model)

The ``eval()`` call is reported (the runtime check reports the same line): it is the
one never undone. An ``eval()`` made by a helper of the same file that leaves the model
in eval mode (``evaluate(model)`` whose last mode change is ``model.eval()``) counts,
and is reported inside the helper; so does a training loop in a helper
(``train_one_epoch(model, ...)``) called after the ``eval()`` when the helper itself
never calls ``train()``.

Deliberately not reported:

* a model call in a loop whose backward runs only in a nested loop (a one-batch check in the
  epoch loop, after the batch loop that trains: not a training call);
* any ``train()`` on the model, on something containing it (``self.train()``) or inside
  it (``model.head.train()``: partial training on purpose), ``train(flag)``, a helper of
  this file that calls ``train(...)``, or an unknown function named like ``*train*`` /
  ``*mode*`` between the ``eval()`` and the training call (conservative: also in a branch);
* frozen batch-norm: ``eval()`` on a submodule (``model.backbone.eval()``);
* a frozen teacher: models whose parameters are not given to an optimizer in this file;
* loops that train only sometimes (``if phase == 'train': loss.backward()``, calls under
  ``torch.set_grad_enabled(<flag>)``: the transfer-learning tutorial's phase loop);
* models with frozen parameters (``M.requires_grad_(False)``, ``M.backbone.requires_grad_(False)``,
  ``for p in M.parameters(): p.requires_grad = False``): a linear probe keeps a frozen
  backbone in eval mode on purpose (MoCo's ``main_lincls``);
* models known to have no dropout / batch-norm (eval mode changes nothing) and pytest
  test functions (a test may train in eval mode on purpose, for determinism).
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Set, Tuple

import libcst as cst

from ..names import dotted
from ..modes import (CallSite, EITHER_MODE, EVAL_MODE, ModeFlowRule, TRAIN_MODE, is_test_function, last_component,
    mode_change, related_receivers)
from ..patterns import SET_GRAD_ENABLED, method_name, receiver_text

_BACKWARD = frozenset({"backward", "manual_backward"})
#: Unknown functions that may well switch a model back to train mode.
_MAY_SET_TRAIN = re.compile(r"[Tt]rain|TRAIN|(?:^|_)mode(?:$|_)|Mode|(?:^|_)fit(?:$|_)")
_OPTIMIZER = re.compile(r"optim|adam|sgd|rmsprop|adagrad|adadelta|lbfgs|lion|lamb|sophia|muon", re.I)
_PARAMETER_ITERATORS = frozenset({"parameters", "named_parameters", "modules", "named_modules", "children"})
_FREEZES = re.compile(r"requires_grad\s*=\s*False|requires_grad_\(\s*(?:requires_grad\s*=\s*)?False")
_PARAMETERS = re.compile(r"([A-Za-z_][\w.]*)\.(?:named_)?parameters\s*\(")


class TrainModeNotRestored(ModeFlowRule):
    CODE = "TS007"
    TRIGGERS = (".eval(", "train(False", "train(mode=False")

    VALID = [
        # train() at the start of every epoch
        "import torch\n"
        "def fit(model, train_loader, val_loader, epochs):\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    for epoch in range(epochs):\n"
        "        model.train()\n"
        "        for x, y in train_loader:\n"
        "            opt.zero_grad()\n"
        "            loss_fn(model(x), y).backward()\n"
        "            opt.step()\n"
        "        model.eval()\n"
        "        with torch.no_grad():\n"
        "            acc = [model(x) for x, _ in val_loader]\n",
        # the evaluation helper restores train mode itself
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()\n"
        "    with torch.no_grad():\n"
        "        out = [model(x) for x, _ in loader]\n"
        "    model.train()\n"
        "    return out\n"
        "def main(model, loader):\n"
        "    opt = torch.optim.Adam(model.parameters())\n"
        "    for epoch in range(3):\n"
        "        for x, y in loader:\n"
        "            opt.zero_grad()\n"
        "            loss_fn(model(x), y).backward()\n"
        "            opt.step()\n"
        "        evaluate(model, loader)\n",
        # the training helper starts with train()
        "import torch\n"
        "def train_one_epoch(model, loader, opt):\n"
        "    model.train()\n"
        "    for x, y in loader:\n"
        "        opt.zero_grad()\n"
        "        loss_fn(model(x), y).backward()\n"
        "        opt.step()\n"
        "def main(model, loader):\n"
        "    opt = torch.optim.Adam(model.parameters())\n"
        "    for epoch in range(3):\n"
        "        train_one_epoch(model, loader, opt)\n"
        "        model.eval()\n",
        # frozen batch-norm on purpose: eval() on a submodule
        "import torch\n"
        "def finetune(model, loader):\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=0.01)\n"
        "    model.train()\n"
        "    model.backbone.eval()\n"
        "    for x, y in loader:\n"
        "        opt.zero_grad()\n"
        "        loss_fn(model(x), y).backward()\n"
        "        opt.step()\n",
        # eval() on the whole model, then the head back to train mode: partial training on purpose
        "import torch\n"
        "def finetune(model, loader):\n"
        "    opt = torch.optim.SGD(model.head.parameters(), lr=0.01)\n"
        "    model.eval()\n"
        "    model.head.train()\n"
        "    for x, y in loader:\n"
        "        opt.zero_grad()\n"
        "        loss_fn(model(x), y).backward()\n"
        "        opt.step()\n",
        # a frozen teacher in eval mode, not given to the optimizer
        "import torch\n"
        "def distill(teacher, student, loader):\n"
        "    opt = torch.optim.SGD(student.parameters(), lr=0.01)\n"
        "    teacher.eval()\n"
        "    student.train()\n"
        "    for x, y in loader:\n"
        "        loss = kl(student(x), teacher(x))\n"
        "        opt.zero_grad()\n"
        "        loss.backward()\n"
        "        opt.step()\n",
        # the transfer-learning tutorial's phase loop
        "import torch\n"
        "def train_model(model, loaders, criterion, optimizer):\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)\n"
        "    for epoch in range(3):\n"
        "        for phase in ['train', 'val']:\n"
        "            if phase == 'train':\n"
        "                model.train()\n"
        "            else:\n"
        "                model.eval()\n"
        "            for x, y in loaders[phase]:\n"
        "                optimizer.zero_grad()\n"
        "                with torch.set_grad_enabled(phase == 'train'):\n"
        "                    loss = criterion(model(x), y)\n"
        "                    if phase == 'train':\n"
        "                        loss.backward()\n"
        "                        optimizer.step()\n",
        # mode from a flag
        "import torch\n"
        "def run(model, loader, training):\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    model.eval()\n"
        "    model.train(training)\n"
        "    for x, y in loader:\n"
        "        opt.zero_grad()\n"
        "        loss_fn(model(x), y).backward()\n"
        "        opt.step()\n",
        # a Lightning-style method that sets the mode of the whole module
        "import torch\n"
        "class Runner:\n"
        "    def __init__(self):\n"
        "        self.model = Net()\n"
        "        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)\n"
        "    def fit(self, loader):\n"
        "        for epoch in range(3):\n"
        "            self.set_train_mode()\n"
        "            for x, y in loader:\n"
        "                self.opt.zero_grad()\n"
        "                loss_fn(self.model(x), y).backward()\n"
        "                self.opt.step()\n"
        "            self.model.eval()\n",
        # a model without dropout or batch-norm: eval mode changes nothing
        "import torch\n"
        "from torch import nn\n"
        "model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for epoch in range(3):\n"
        "    for x, y in loader:\n"
        "        opt.zero_grad()\n"
        "        loss_fn(model(x), y).backward()\n"
        "        opt.step()\n"
        "    model.eval()\n",
        # eval() in the other branch of an if: no path to the training loop
        "import torch\n"
        "def main(model, loader, args):\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    if args.evaluate:\n"
        "        model.eval()\n"
        "    else:\n"
        "        for x, y in loader:\n"
        "            opt.zero_grad()\n"
        "            loss_fn(model(x), y).backward()\n"
        "            opt.step()\n",
        # a linear probe: frozen backbone, eval mode on purpose (MoCo's main_lincls)
        "import torch\n"
        "def train(loader, model, criterion, optimizer):\n"
        "    model.eval()\n"
        "    for images, target in loader:\n"
        "        loss = criterion(model(images), target)\n"
        "        optimizer.zero_grad()\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        "def main():\n"
        "    model = models.resnet50()\n"
        "    for name, param in model.named_parameters():\n"
        "        if name not in ['fc.weight', 'fc.bias']:\n"
        "            param.requires_grad = False\n"
        "    parameters = list(filter(lambda p: p.requires_grad, model.parameters()))\n"
        "    optimizer = torch.optim.SGD(parameters, 0.1)\n"
        "    for epoch in range(3):\n"
        "        train(loader, model, criterion, optimizer)\n",
        # evaluate-only mode returns before training
        "import torch\n"
        "def main(args, model, loader):\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    if args.evaluate:\n"
        "        model.eval()\n"
        "        print(validate(model))\n"
        "        return\n"
        "    for x, y in loader:\n"
        "        optimizer.zero_grad()\n"
        "        loss_fn(model(x), y).backward()\n"
        "        optimizer.step()\n",
        # a test that trains in eval mode on purpose, for determinism
        "import torch\n"
        "def test_overfits_one_batch():\n"
        "    model = Net()\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    model.eval()\n"
        "    for _ in range(10):\n"
        "        opt.zero_grad()\n"
        "        loss_fn(model(x), y).backward()\n"
        "        opt.step()\n",
    ]
    INVALID = [
        # the classic: train() once before the epoch loop, eval() at the end of each epoch
        "import torch\n"
        "def fit(model, train_loader, val_loader):\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    model.train()\n"
        "    for epoch in range(3):\n"
        "        for x, y in train_loader:\n"
        "            opt.zero_grad()\n"
        "            loss_fn(model(x), y).backward()\n"
        "            opt.step()\n"
        "        model.eval()  # expect: TS007\n"
        "        with torch.no_grad():\n"
        "            acc = [model(x) for x, _ in val_loader]\n",
        # eval() before training, never undone
        "import torch\n"
        "model = Net()\n"
        "optimizer = torch.optim.Adam(model.parameters())\n"
        "model.eval()  # expect: TS007\n"
        "baseline = evaluate(model)\n"
        "for x, y in loader:\n"
        "    optimizer.zero_grad()\n"
        "    loss_fn(model(x), y).backward()\n"
        "    optimizer.step()\n",
        # the evaluation helper leaves the model in eval mode; reported inside it
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    model.eval()  # expect: TS007\n"
        "    with torch.no_grad():\n"
        "        return [model(x) for x, _ in loader]\n"
        "def main(model, loader):\n"
        "    opt = torch.optim.Adam(model.parameters())\n"
        "    model.train()\n"
        "    for epoch in range(3):\n"
        "        for x, y in loader:\n"
        "            opt.zero_grad()\n"
        "            loss_fn(model(x), y).backward()\n"
        "            opt.step()\n"
        "        evaluate(model, loader)\n",
        # the training helper never calls train(); main evaluates in between
        "import torch\n"
        "def train_one_epoch(net, loader, opt):\n"
        "    for x, y in loader:\n"
        "        opt.zero_grad()\n"
        "        loss_fn(net(x), y).backward()\n"
        "        opt.step()\n"
        "def main():\n"
        "    net = Net()\n"
        "    opt = torch.optim.Adam(net.parameters())\n"
        "    for epoch in range(3):\n"
        "        train_one_epoch(net, loader, opt)\n"
        "        net.eval()  # expect: TS007\n"
        "        validate(net)\n",
        # a trainer class
        "import torch\n"
        "class Trainer:\n"
        "    def __init__(self, model):\n"
        "        self.model = model\n"
        "        self.optimizer = torch.optim.AdamW(self.model.parameters())\n"
        "    def fit(self, loader, epochs):\n"
        "        for epoch in range(epochs):\n"
        "            for x, y in loader:\n"
        "                self.optimizer.zero_grad()\n"
        "                self.loss_fn(self.model(x), y).backward()\n"
        "                self.optimizer.step()\n"
        "            self.model.eval()  # expect: TS007\n"
        "            self.validate()\n",
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        #: (training call, its training loop) candidates.
        self._candidates: List[Tuple[CallSite, cst.CSTNode]] = []
        self._optimizer_args: List[str] = []
        #: Receivers whose parameters are frozen somewhere in the file (``M.requires_grad_(False)``...).
        self._frozen: Set[str] = set()

    # -- recording ---------------------------------------------------------------------

    def visit_Call(self, node: cst.Call) -> None:
        site = self._flow.record_call(node)
        if site.method == "requires_grad_" and site.receiver is not None and node.args and \
                isinstance(node.args[0].value, cst.Name) and node.args[0].value.value == "False":
            self._frozen.add(site.receiver)
        if site.qualified is not None and _OPTIMIZER.search(last_component(site.qualified)) or \
                site.qualified is None and site.name is not None and site.name[:1].isupper() and \
                _OPTIMIZER.search(site.name):
            self._optimizer_args.append(cst.Module([]).code_for_node(node))
        if site.no_grad or site.func_text is None or site.qualified is not None:
            return
        loops = [loop for loop in site.loops() if isinstance(loop, (cst.For, cst.While))]
        if loops and not self._under_grad_flag():
            self._candidates.append((site, loops[0]))

    def _under_grad_flag(self) -> bool:
        """Inside ``with torch.set_grad_enabled(<not a literal>)``: training only in some phases."""
        for node in self.context.ancestors():
            if isinstance(node, (cst.FunctionDef, cst.Lambda)):
                return False
            if isinstance(node, cst.With):
                for item in node.items:
                    call = item.item
                    if isinstance(call, cst.Call) and self.context.qualified_name(call.func) in SET_GRAD_ENABLED:
                        return True
        return False

    def visit_For(self, node: cst.For) -> None:
        """``for p in M.parameters(): p.requires_grad = False``: M is (partly) frozen."""
        iterable = node.iter
        if isinstance(iterable, cst.Call) and method_name(iterable) in _PARAMETER_ITERATORS:
            target = receiver_text(iterable)
            if target is not None and _FREEZES.search(cst.Module([]).code_for_node(node.body)):
                self._frozen.add(target)

    # -- judging -----------------------------------------------------------------------

    def leave_Module(self, node: cst.Module) -> None:
        if not self._candidates:
            return
        self._optimized = self._optimized_models()
        self._local_train = self._functions_setting_train()
        self._leaves_eval = self._functions_leaving_eval()
        reported: Set[int] = set()
        for site, loop in self._candidates:
            model = site.func_text
            assert model is not None
            if last_component(model) not in self._optimized or not self._flow.looks_like_model(model):
                continue
            if any(related_receivers(frozen, model) for frozen in self._frozen):
                continue  # (partly) frozen: eval mode on the whole model may be on purpose (a linear probe)
            if not self._training_loop(loop, site) or is_test_function(site.scope, self.context.path):
                continue
            culprit = self._eval_reaching(site, model)
            if culprit is None or id(culprit) in reported or self._flow.known_plain(model, site.scope):
                continue
            reported.add(id(culprit))
            self.report(culprit.call, f"{model} is then called for training while still in eval mode")

    def _optimized_models(self) -> Set[str]:
        """Last name components of what hands its ``.parameters()`` to an optimizer in this file."""
        texts = list(self._optimizer_args)
        names: Set[str] = set()
        for text in self._optimizer_args:
            names.update(re.findall(r"[A-Za-z_][\w.]*", text))
        for assignment in self._flow.assignments:  # ``params = list(model.parameters()); SGD(params)``
            if assignment.value is not None and assignment.target in names:
                texts.append(cst.Module([]).code_for_node(assignment.value))
        found: Set[str] = set()
        for text in texts:
            found.update(last_component(match) for match in _PARAMETERS.findall(text))
        return found

    def _training_loop(self, loop: cst.CSTNode, site: CallSite) -> bool:
        """The loop runs an unconditional backward and some step: it trains on every iteration.

        The backward must be in the loop's own body, not in a loop nested in it: a model call
        in an epoch loop next to the inner batch loop (a one-batch check after each epoch's
        training) is not a training call.
        """
        inside = [s for s in self._flow.sites_in(loop) if s.scope is site.scope]
        if not any(s.name == "step" for s in inside):
            return False
        for s in inside:
            if s.name in _BACKWARD or s.qualified == "torch.autograd.backward":
                path = s.ancestors[next(i for i, a in enumerate(s.ancestors) if a is loop):]
                if not any(isinstance(a, (cst.If, cst.For, cst.While)) for a in path[1:]):
                    return True
        return False

    # -- mode changes ------------------------------------------------------------------

    def _functions_setting_train(self) -> Set[str]:
        """Local functions that call ``train(...)`` (any receiver, any mode but False), directly or not."""
        flow = self._flow
        return flow.local_closure(lambda s, found: mode_change(s.call) in (TRAIN_MODE, EITHER_MODE)
                                  or (flow.calls_local(s) and s.name in found))

    def _functions_leaving_eval(self) -> Dict[str, Dict[str, CallSite]]:
        """Per local function (defined once), the receivers (a parameter, or ``self.X``) whose last
        mode change in it is an ``eval()``, and that ``eval()`` call."""
        flow = self._flow
        found: Dict[str, Dict[str, CallSite]] = {}
        for name, definitions in flow.functions.items():
            if len(definitions) != 1 or name in self._local_train:
                continue
            last: Dict[str, CallSite] = {}
            for s in flow.scope_sites(definitions[0]):
                change = mode_change(s.call)
                if change is not None and s.receiver is not None:
                    last[s.receiver] = s
            evals = {text: s for text, s in last.items() if mode_change(s.call) == EVAL_MODE}
            if evals:
                found[name] = evals
        return found

    def _clears(self, site: CallSite, model: str) -> bool:
        """Whether ``site`` may put ``model`` back in train mode."""
        change = mode_change(site.call)
        if change in (TRAIN_MODE, EITHER_MODE):
            return site.receiver is None or related_receivers(site.receiver, model)
        if change is not None or site.name is None or site.func_text == model:
            return False
        if self._flow.calls_local(site):
            return site.name in self._local_train
        if site.qualified is not None and site.qualified.startswith("torch."):
            return False
        return bool(_MAY_SET_TRAIN.search(site.name))

    def _evals(self, site: CallSite, model: str) -> Optional[CallSite]:
        """The ``eval()`` call that ``site`` makes on ``model``, directly or through a local helper."""
        if mode_change(site.call) == EVAL_MODE and site.receiver == model:
            return site
        if not self._flow.calls_local(site) or site.name not in self._leaves_eval:
            return None
        function = self._flow.functions[site.name][0]
        for text, inner in self._leaves_eval[site.name].items():
            if text.startswith("self.") and site.receiver == "self" and text == model:
                return inner
            position = self._flow.parameter_index(function, text)
            if position is not None:
                value = self._flow.argument(site.call, position)
                if value is not None and dotted(value) == model:
                    return inner
        return None

    def _eval_reaching(self, target: CallSite, model: str, depth: int = 0) -> Optional[CallSite]:
        """An ``eval()`` of ``model`` from which ``target`` can be reached with no train() in between."""
        flow = self._flow
        sites = flow.scope_sites(target.scope)
        clears = [s for s in sites if self._clears(s, model)]
        for site in sites:
            culprit = self._evals(site, model)
            if culprit is not None and flow.precedes(site, target, clears):
                return culprit
        if depth >= 2 or any(flow.precedes(c, target, ()) for c in clears):
            return None
        scope = target.scope
        if not isinstance(scope, cst.FunctionDef):
            return None
        for caller, text in flow.model_at_callers(scope, model) or ():
            if text is not None:
                culprit = self._eval_reaching(caller, text, depth + 1)
                if culprit is not None:
                    return culprit
        return None
