"""TS018 tensor-logged-as-scalar: a loss tensor passed to ``add_scalar`` / ``add_scalars``.

The pattern, in one function (or module-level script code):
``<writer>.add_scalar(tag, value, ...)`` (TensorBoard's ``SummaryWriter``,
tensorboardX, Lightning's ``logger.experiment``) or ``add_scalars(main_tag,
{tag: value, ...}, ...)`` where ``value`` is known to be a loss tensor:

* a name bound to a loss (``criterion(...)``, ``loss_fn(...)``, ``F.cross_entropy(...)``,
  a name bound to an ``nn.*Loss()`` in the file, ``outputs.loss``, arithmetic on
  one of these, a ``+=`` of one; under ``no_grad`` too: a tensor without a graph
  is still a tensor), or a name that is backpropagated while it holds the
  logged value;
* such a name through tensor-preserving operations: ``loss.detach()``,
  ``loss.data``, ``loss.mean()``, ``loss.cpu()``, ``loss / n``;
* a loss call or ``outputs.loss`` written in place.

Not reported: ``loss.item()``, ``float(loss)``, ``loss.tolist()``, names bound to
something else (``val_loss = evaluate(...)``, which may well return a float; a
helper named ``compute_loss`` is not assumed to return a tensor), ``wandb.log`` /
``self.log`` (which accept tensors by design), other ``add_*`` methods.
"""

from __future__ import annotations

from typing import FrozenSet, Optional, Set

import libcst as cst

from ..loss_flow import LossFlow, loss_module_names
from ..patterns import method_name
from ..values import enclosing_scope
from ..rule import LintRule

_METHODS = frozenset({"add_scalar", "add_scalars"})


def _logged_values(call: cst.Call) -> list:
    """The value argument of ``add_scalar``, or the dict values of ``add_scalars``."""
    name = method_name(call)
    position, keyword = (1, "scalar_value") if name == "add_scalar" else (1, "tag_scalar_dict")
    value: Optional[cst.BaseExpression] = None
    for index, arg in enumerate(call.args):
        if arg.star:
            return []
        if arg.keyword is not None and arg.keyword.value == keyword or arg.keyword is None and index == position:
            value = arg.value
    if value is None:
        return []
    if name == "add_scalar":
        return [value]
    if isinstance(value, cst.Dict):
        return [element.value for element in value.elements if isinstance(element, cst.DictElement)]
    return []


class TensorLoggedAsScalar(LintRule):
    CODE = "TS018"
    TRIGGERS = ("add_scalar",)

    VALID = [
        # the canonical calls
        "import torch.nn.functional as F\n"
        "def train(model, loader, optimizer, writer):\n"
        "    for step, (x, y) in enumerate(loader):\n"
        "        loss = F.cross_entropy(model(x), y)\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        "        writer.add_scalar('loss/train', loss.item(), step)\n"
        "        writer.add_scalar('loss/float', float(loss), step)\n"
        "        writer.add_scalars('loss', {'train': loss.item(), 'scaled': loss.item() * 2}, step)\n",
        # a number computed from the loss
        "def train(model, loader, criterion, optimizer, writer):\n"
        "    running = 0.0\n"
        "    for x, y in loader:\n"
        "        loss = criterion(model(x), y)\n"
        "        loss.backward()\n"
        "        running += loss.item()\n"
        "    writer.add_scalar('loss', running / len(loader))\n",
        # the name rebound to a number before it is logged
        "def train(model, x, y, criterion, writer, step):\n"
        "    loss = criterion(model(x), y)\n"
        "    loss.backward()\n"
        "    loss = loss.item()\n"
        "    writer.add_scalar('loss', loss, step)\n",
        # helpers whose return type is unknown
        "def epoch_end(model, loader, writer, epoch, compute_loss, evaluate):\n"
        "    val_loss = evaluate(model, loader)\n"
        "    train_loss = compute_loss(model, loader)\n"
        "    writer.add_scalar('val/loss', val_loss, epoch)\n"
        "    writer.add_scalar('train/loss', train_loss, epoch)\n",
        # sklearn's log_loss returns a number
        "from sklearn.metrics import log_loss\n"
        "def report(y, p, writer, step):\n"
        "    loss = log_loss(y, p)\n"
        "    writer.add_scalar('logloss', loss, step)\n",
        # other APIs
        "import wandb\n"
        "def train(model, x, y, criterion, writer, step):\n"
        "    loss = criterion(model(x), y)\n"
        "    loss.backward()\n"
        "    wandb.log({'loss': loss})\n"
        "    writer.add_histogram('loss', loss, step)\n",
        # the logged value is a parameter of the function: unknown
        "def log(writer, loss, step):\n"
        "    writer.add_scalar('loss', loss, step)\n",
    ]
    INVALID = [
        # the loss tensor itself, and detached (still a tensor)
        "import torch.nn as nn\n"
        "def train(model, loader, optimizer, writer):\n"
        "    criterion = nn.CrossEntropyLoss()\n"
        "    for step, (x, y) in enumerate(loader):\n"
        "        loss = criterion(model(x), y)\n"
        "        loss.backward()\n"
        "        optimizer.step()\n"
        "        writer.add_scalar('loss/train', loss, step)  # expect: TS018\n"
        "        writer.add_scalar('loss/detached', loss.detach().cpu(), step)  # expect: TS018\n",
        # add_scalars with keywords, a loss module bound on self, HuggingFace-style outputs
        "class Trainer:\n"
        "    def __init__(self):\n"
        "        self.crit = FocalLoss(gamma=2)\n"
        "    def step(self, x, y, step):\n"
        "        loss = self.crit(self.model(x), y)\n"
        "        out = self.model(x, labels=y)\n"
        "        self.writer.add_scalars(main_tag='loss', tag_scalar_dict={'focal': loss},  # expect: TS018\n"
        "                                global_step=step)\n"
        "        self.writer.add_scalar('hf', out.loss, step)  # expect: TS018\n",
        # a validation loss computed under no_grad is still a tensor
        "import torch\n"
        "import torch.nn.functional as F\n"
        "@torch.no_grad()\n"
        "def validate(model, x, y, writer, epoch):\n"
        "    val_loss = F.mse_loss(model(x), y)\n"
        "    writer.add_scalar('val/loss', val_loss, epoch)  # expect: TS018\n",
        # a tensor accumulated from losses (TS011's bug, logged)
        "def train(model, loader, criterion, optimizer, writer, epoch):\n"
        "    total = 0\n"
        "    for x, y in loader:\n"
        "        loss = criterion(model(x), y)\n"
        "        total += loss\n"
        "    writer.add_scalar('loss', total / len(loader), epoch)  # expect: TS018\n",
    ]

    def visit_Module(self, node: cst.Module) -> None:
        self._module = node
        self._loss_modules: Optional[FrozenSet[str]] = None
        self._with_logging: Set[int] = set()

    def visit_Call(self, node: cst.Call) -> None:
        if method_name(node) in _METHODS:
            self._with_logging.add(id(enclosing_scope(self.context)))

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        if id(node) in self._with_logging:
            self._check(node)

    def leave_Module(self, node: cst.Module) -> None:
        if id(node) in self._with_logging:
            self._check(node)

    def _check(self, scope: cst.CSTNode) -> None:
        if self._loss_modules is None:
            self._loss_modules = loss_module_names(self._module)
        flow = LossFlow(self.context, scope, self._loss_modules, collect=(cst.Call,))
        for call, _ in flow.collected:
            if method_name(call) not in _METHODS:  # type: ignore[arg-type]
                continue
            for value in _logged_values(call):  # type: ignore[arg-type]
                if flow.is_loss_value(value) or any(flow.holds_loss(name)
                                                    for name in flow.graph_sources(value, through_detach=True)):
                    self.report(call)
                    break
