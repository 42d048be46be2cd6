"""The rule catalog: the public contract that both detectors share.

A code never changes meaning and is never reused (see RULES.md). The full
documentation of each rule lives in ``docs/<CODE>.md`` next to this module and
is read only when asked for, so importing the catalog stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Dict, Iterable, List, Tuple


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    message: str
    hint: str
    #: The detectors RULES.md asks for: "S" static, "R" runtime, lower case for best effort.
    required: str
    default_enabled: bool = True

    def doc(self) -> str:
        """The rule's full documentation (Markdown), or a stub that says none is written."""
        try:
            return resources.files(__package__).joinpath("docs", f"{self.code}.md").read_text("utf-8")
        except FileNotFoundError:
            return f"# {self.code} {self.name}\n\n{self.message}\n\nHint: {self.hint}\n"


def _rule(code: str, name: str, message: str, hint: str, required: str, default_enabled: bool = True) -> Rule:
    return Rule(code, name, message, hint, required, default_enabled)


# Which detectors *exist* is not written here: it is read off the files present
# (see detectors.py), so `trainsafe rules` cannot drift from the code.
_CATALOG: Tuple[Rule, ...] = (
    _rule("TS001", "zero-grad-missing",
          "optimizer.step() consumes gradients left over from the previous step: no zero_grad() between them",
          "call optimizer.zero_grad() (or set p.grad = None) once per optimizer step, "
          "e.g. right after step(); with gradient accumulation, after the accumulated step", "SR"),
    _rule("TS002", "layer-in-forward",
          "a layer with parameters is constructed inside forward(): it gets fresh random weights on every call "
          "and the optimizer never sees them",
          "create the layer once in __init__ (self.layer = nn.Linear(...)) and call self.layer(x) in forward()",
          "SR"),
    _rule("TS003", "device-mismatch",
          "a module's parameters and the tensors fed to it are on different devices",
          "move the model and every input, target and state tensor to one device "
          "(model.to(device); x = x.to(device)) before the forward pass", "Rs"),
    _rule("TS004", "eval-without-no-grad",
          "evaluation runs with autograd on: a graph is built for outputs that are never backpropagated",
          "wrap the evaluation loop in `with torch.no_grad():` (or torch.inference_mode()), "
          "or decorate the evaluation function with @torch.no_grad()", "SR"),
    _rule("TS005", "builtin-sum-on-tensor",
          "Python's builtin sum() iterates over a tensor, one Python-level op per row",
          "use tensor.sum() / torch.sum(tensor, dim=...) instead of sum(tensor)", "SR"),
    _rule("TS006", "eval-mode-missing",
          "evaluation runs with the model in train mode: dropout and batch-norm behave as in training",
          "call model.eval() before evaluating and model.train() before training resumes", "SR"),
    _rule("TS007", "train-mode-not-restored",
          "training steps run while the model is still in eval mode after model.eval()",
          "call model.train() at the start of every training epoch / after evaluation", "SR"),
    _rule("TS008", "zero-grad-misplaced",
          "zero_grad() runs between backward() and step(): the step sees zero or None gradients",
          "order each iteration as zero_grad(), forward, backward(), step()", "SR"),
    _rule("TS009", "forward-called-directly",
          "model.forward(x) is called directly, bypassing hooks registered on the module",
          "call the module itself: model(x)", "Sr"),
    _rule("TS010", "softmax-before-cross-entropy",
          "probabilities from softmax/log_softmax are fed to cross-entropy, which applies log-softmax itself",
          "pass the raw logits to CrossEntropyLoss / F.cross_entropy, or use log_softmax with NLLLoss", "SR"),
    _rule("TS011", "loss-accumulated-with-graph",
          "a loss tensor is accumulated across iterations with its autograd graph attached",
          "accumulate loss.item() (or loss.detach()) instead of the loss tensor", "SR"),
    _rule("TS012", "to-device-result-discarded",
          "the result of tensor.to()/.cuda()/.float()/... is discarded: tensors are not converted in place",
          "assign the result: x = x.to(device)", "S"),
    _rule("TS013", "module-init-broken",
          "an nn.Module subclass has a misspelled __init__ or does not call super().__init__()",
          "define __init__ and call super().__init__() before assigning submodules or parameters", "SR"),
    _rule("TS014", "wrong-functional-module",
          "torch.functional is imported where torch.nn.functional was meant",
          "import torch.nn.functional as F", "S"),
    _rule("TS015", "params-not-in-optimizer",
          "parameters receive gradients but belong to no optimizer, so they never train",
          "build the optimizer after the model is complete, from model.parameters()", "Rs"),
    _rule("TS016", "non-finite-loss",
          "the loss or a gradient became NaN or Inf",
          "lower the learning rate, clip gradients, check the data and the loss for log(0) or division by zero",
          "R"),
    _rule("TS017", "sampler-epoch-not-set",
          "a DistributedSampler is used for training without sampler.set_epoch(epoch) each epoch",
          "call sampler.set_epoch(epoch) at the start of every epoch", "SR"),
    _rule("TS018", "tensor-logged-as-scalar",
          "a tensor is logged where a Python number is expected",
          "log loss.item() (or float(loss)) instead of the tensor", "SR"),
    _rule("TS019", "sigmoid-before-bce-with-logits",
          "sigmoid output is fed to BCEWithLogitsLoss / binary_cross_entropy_with_logits, "
          "which apply the sigmoid themselves",
          "pass the raw logits, or use BCELoss on the sigmoid output", "SR"),
)

RULES: Dict[str, Rule] = {rule.code: rule for rule in _CATALOG}
BY_NAME: Dict[str, Rule] = {rule.name: rule for rule in _CATALOG}

class UnknownCodeError(ValueError):
    """A code (or code prefix) that names no rule; the message says where it came from."""


def expand_codes(selectors: Iterable[str], origin: str) -> List[str]:
    """Turn selectors (``TS001``, a prefix like ``TS00`` or ``TS``, or a rule name) into codes.

    ``origin`` names where the selectors came from (``--select``, ``pyproject.toml``)
    so that the error a user sees tells them which line to fix.
    """
    codes: List[str] = []
    for raw in selectors:
        selector = raw.strip()
        if not selector:
            continue
        if selector in BY_NAME:
            matched = [BY_NAME[selector].code]
        else:
            matched = [code for code in RULES if code.startswith(selector.upper())] if selector.upper().startswith("TS") else []
        if not matched:
            raise UnknownCodeError(f"unknown rule code {selector!r} in {origin}")
        codes.extend(c for c in matched if c not in codes)
    return codes

