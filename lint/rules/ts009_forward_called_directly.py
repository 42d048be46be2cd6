"""TS009 forward-called-directly: ``model.forward(x)`` instead of ``model(x)``.

The pattern: a call ``X.forward(...)`` where ``X`` is a module: built in this file from
a ``torch.nn`` class, a model zoo (torchvision, timm, transformers) or a class of this
file deriving from ``nn.Module``; or, when the file does not show where ``X`` comes from,
named like one (``model``, ``self.encoder``, ``net``, ``backbone``, ``self.layers[i]``...).
Inside a module's own methods too: ``self.encoder.forward(x)`` bypasses the encoder's
hooks just the same.

Deliberately not reported:

* ``self.forward(...)``, ``cls.forward``, ``super().forward(...)``, ``super(Cls, self).forward``,
  explicit base-class calls (``Base.forward(self, x)``, ``nn.Module.forward(self, x)``,
  ``type(self).forward(self, x)``: any call whose first argument is ``self``), and autograd
  ``Function`` classes (``MyFunction.forward(ctx, ...)``: a class name);
* objects whose ``forward`` is not a module's: instances of classes of this file that do
  not derive from ``nn.Module`` (a diffusion process, an HMM's forward algorithm), names
  that do not look like modules (``turtle.forward(10)``, ``driver.forward()``), RPC
  ``RemoteModule`` s and lite-interpreter modules (``forward`` is their API), and
  receivers that also call ``.inverse(...)`` / ``.reverse(...)`` (an invertible flow's
  symmetric API, where ``forward`` is called explicitly on purpose);
* files without a torch-family import.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Set, Tuple

import libcst as cst

from ..names import dotted
from ..patterns import receiver
from ..values import is_torch_module_base
from ..rule import Fix, LintRule

_MODULE_NAME = re.compile(
    r"model|net|encoder|decoder|backbone|classifier|generator|discriminator|student|teacher|policy|critic|actor|"
    r"cnn|mlp|rnn|lstm|gru|vae|transformer|bert|gpt|vit|layer|block|head|embed|conv|linear|attn|attention|"
    r"module|proj|stem|neck|unet|resnet|tower|branch|cell|expert|adapter|submodule", re.I)
_NOT_MODULE_NAME = re.compile(r"loss|criterion|metric|optim|sched|env|driver|browser|turtle|robot|hmm|kalman|filter|"
                              r"process|diffusion|sde|scheduler|sampler|cursor|iterator|bijector|"
                              r"remote|mobile|lite|rref", re.I)
#: Import prefixes whose callables build objects with a ``forward`` method that is their API
#: (``RemoteModule`` has no ``__call__``; lite-interpreter modules are not ``nn.Module``).
_NOT_MODULE_FACTORIES = ("torch.distributed.", "torch.jit.mobile", "torch._C._load_for_lite_interpreter")
#: Import prefixes whose callables build modules.
_MODULE_FACTORIES = ("torch.nn.", "torchvision.models.", "timm.", "transformers.", "torch.hub.load")
_TORCH_FAMILY = ("torch", "lightning", "transformers", "timm", "torchvision")


def _subscript_free(node: cst.BaseExpression) -> Optional[str]:
    """Dotted text of ``self.layers[i]`` as ``self.layers`` (an element of a module list), else of the chain."""
    while isinstance(node, cst.Subscript):
        node = node.value
    return dotted(node)


class ForwardCalledDirectly(LintRule):
    CODE = "TS009"
    TRIGGERS = (".forward(",)

    VALID = [
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x\n"
        "    def predict(self, x):\n"
        "        return self.forward(x)\n",
        "import torch\n"
        "class Child(Base):\n"
        "    def forward(self, x):\n"
        "        y = super().forward(x)\n"
        "        z = super(Child, self).forward(x)\n"
        "        return Base.forward(self, y) + torch.nn.Sequential.forward(self, z)\n",
        "import torch\n"
        "class Scaled(torch.autograd.Function):\n"
        "    @staticmethod\n"
        "    def forward(ctx, x):\n"
        "        return x * 2\n"
        "y = Scaled.forward(None, x)\n",
        "import torch\n"
        "class Wrapper(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return type(self).forward(self, x)\n",
        # not modules: a turtle, a browser, a diffusion process class of this file
        "import torch\n"
        "import turtle\n"
        "t = turtle.Turtle()\n"
        "t.forward(100)\n",
        "import torch\n"
        "driver.forward()\n",
        "import torch\n"
        "class Diffusion:\n"
        "    def forward(self, x0, t):\n"
        "        return x0 + t\n"
        "process = Diffusion()\n"
        "xt = process.forward(x0, t)\n",
        # an invertible flow: forward and inverse called explicitly on purpose
        "import torch\n"
        "def sample(flow, x):\n"
        "    z, logdet = flow.forward(x)\n"
        "    return flow.inverse(z)\n",
        # RPC remote modules: forward() is their API
        "import torch\n"
        "from torch.distributed.nn.api.remote_module import RemoteModule\n"
        "remote_linear_module = RemoteModule('worker1/cpu', torch.nn.Linear, args=(2, 2))\n"
        "out = remote_linear_module.forward(x)\n",
        # calling the module is the fix
        "import torch\n"
        "model = torch.nn.Linear(2, 2)\n"
        "y = model(x)\n",
        # no torch in sight
        "class Model:\n"
        "    def forward(self, x):\n"
        "        return x\n"
        "model = Model()\n"
        "model.forward(1)\n",
    ]
    INVALID = [
        "import torch\n"
        "model = torch.nn.Linear(2, 2)\n"
        "y = model.forward(x)  # expect: TS009\n",
        "import torch\n"
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.encoder = nn.Linear(4, 4)\n"
        "        self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])\n"
        "    def forward(self, x):\n"
        "        x = self.encoder.forward(x)  # expect: TS009\n"
        "        for i in range(2):\n"
        "            x = self.layers[i].forward(x)  # expect: TS009\n"
        "        return x\n",
        "import torch\n"
        "def evaluate(model, loader):\n"
        "    with torch.no_grad():\n"
        "        return [model.forward(x) for x, _ in loader]  # expect: TS009\n",
        "import torchvision\n"
        "backbone = torchvision.models.resnet18()\n"
        "features = backbone.forward(images)  # expect: TS009\n",
        "from transformers import AutoModel\n"
        "encoder = AutoModel.from_pretrained('bert-base-uncased')\n"
        "out = encoder.forward(**batch)  # expect: TS009\n",
    ]

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self._calls: List[Tuple[cst.Call, str]] = []
        #: local class name -> its bases, as (import-resolved name, dotted text)
        self._class_bases: Dict[str, List[Tuple[Optional[str], Optional[str]]]] = {}
        #: receiver text -> (qualified callee, local callee name) of the calls assigned to it
        self._origins: Dict[str, List[Tuple[Optional[str], Optional[str]]]] = {}
        self._inverted: Set[str] = set()
        self._torch = False

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            if (dotted(alias.name) or "").partition(".")[0] in _TORCH_FAMILY:
                self._torch = True

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.module is not None and not node.relative and \
                (dotted(node.module) or "").partition(".")[0] in _TORCH_FAMILY:
            self._torch = True

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._class_bases[node.name.value] = [
            (self.context.qualified_name(base.value), dotted(base.value)) for base in node.bases]

    def visit_Assign(self, node: cst.Assign) -> None:
        value = node.value
        while isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and \
                value.func.attr.value in ("to", "cuda", "cpu", "eval", "train", "float", "half", "double"):
            value = value.func.value
        if not isinstance(value, cst.Call):
            return
        func = value.func
        origin = (self.context.qualified_name(func), dotted(func))
        if isinstance(func, cst.Attribute) and func.attr.value == "from_pretrained":
            origin = (self.context.qualified_name(func.value), dotted(func.value))
        for target in node.targets:
            text = dotted(target.target)
            if text is not None:
                self._origins.setdefault(text, []).append(origin)

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if not isinstance(func, cst.Attribute):
            return
        if func.attr.value in ("inverse", "reverse"):
            text = _subscript_free(func.value)
            if text is not None:
                self._inverted.add(text)
            return
        if func.attr.value != "forward":
            return
        target = receiver(node)
        assert target is not None
        if isinstance(target, cst.Call):
            return  # super().forward(...), type(self).forward(...), get_model().forward(...)
        if node.args and isinstance(node.args[0].value, cst.Name) and node.args[0].value.value in ("self", "cls"):
            return  # an explicit base-class call
        text = _subscript_free(target)
        if text is None or text in ("self", "cls"):
            return
        self._calls.append((node, text))

    def leave_Module(self, node: cst.Module) -> None:
        if not self._torch:
            return
        for call, text in self._calls:
            if text not in self._inverted and self._is_module(text):
                # ``text`` is a plain name chain (no call, no subscript): dropping ``.forward``
                # evaluates exactly the same receiver, and the call now runs the module's hooks.
                fixed = call.with_changes(func=call.func.value) if isinstance(call.func, cst.Attribute) else None
                self.report(call, f"call {text}(...) instead",
                            fix=Fix(fixed, f"call {text}(...)") if fixed is not None else None)

    # -- is the receiver a module? ---------------------------------------------------------

    def _is_module(self, text: str) -> bool:
        last = text.rpartition(".")[2]
        if last[:1].isupper() and (last in self._class_bases or self.context.qualified_name(cst.Name(last)) or
                                   "." not in text):
            return False  # a class: ``Function.forward(ctx, ...)``, ``Base.forward(...)``
        verdicts = [self._origin_is_module(origin) for origin in self._origins.get(text, ())]
        known = [v for v in verdicts if v is not None]
        if known:
            return all(known)
        return bool(_MODULE_NAME.search(last)) and not _NOT_MODULE_NAME.search(last)

    def _origin_is_module(self, origin: Tuple[Optional[str], Optional[str]]) -> Optional[bool]:
        """True / False when the callee that built the value says, None when unknown."""
        qualified, text = origin
        if qualified is not None:
            if qualified.startswith(_NOT_MODULE_FACTORIES):
                return False
            if qualified.startswith(_MODULE_FACTORIES):
                return True
            return None
        if text is not None and text in self._class_bases:
            return self._local_module(text, set())
        return None

    def _local_module(self, name: str, seen: Set[str]) -> bool:
        if name in seen:
            return False
        seen.add(name)
        for qualified, text in self._class_bases.get(name, ()):
            if is_torch_module_base(qualified) or (qualified or "").endswith(("Module", "PreTrainedModel")):
                return True
            if text is not None and text in self._class_bases and self._local_module(text, seen):
                return True
        return False
