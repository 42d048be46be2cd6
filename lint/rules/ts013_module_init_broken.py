"""TS013 module-init-broken: an ``nn.Module`` subclass whose ``__init__`` never initialises the module.

Two mistakes: the initialiser is misspelled (``def __int__``, ``def _init_``), so it is
never called and the inherited ``Module.__init__`` runs instead (no layers are created);
or ``__init__`` never calls ``super().__init__()``, so the first ``self.layer = ...``
raises "cannot assign module before Module.__init__() call" (or, with only plain
attributes, the first call of the module fails).
"""

from __future__ import annotations

from typing import List, Optional

import libcst as cst

from ..tree import walk_nodes
from ..values import ValueTracer, is_module_class, is_torch_module_base
from ..rule import FileContext, LintRule

_INIT = "__init__"


def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    previous2: List[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def is_init_misspelling(name: str) -> bool:
    """Whether a method name is a near miss of ``__init__`` (``__int__``, ``_init_``, ``__init``, ``__Init__``).

    At most two edits away (dropped, doubled, swapped or wrong characters,
    case ignored) and still recognisably "init". Shared with the runtime check.
    """
    if name == _INIT:
        return False
    lowered = name.lower()
    if lowered == _INIT:
        return True
    if not any(part in lowered for part in ("init", "int", "nit", "ini")):
        return False
    return _distance(lowered, _INIT) <= 2


class ModuleInitBroken(LintRule):
    """A module class with a misspelled ``__init__``, or an ``__init__`` that never calls ``super().__init__()``."""

    CODE = "TS013"
    TRIGGERS = ("Module", "torch.nn", "torch import nn", "nn.")

    VALID = [
        # Every accepted way to initialise the base.
        "import torch.nn as nn\n"
        "class A(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(2, 2)\n"
        "class B(nn.Module):\n"
        "    def __init__(self):\n"
        "        super(B, self).__init__()\n"
        "class C(nn.Module):\n"
        "    def __init__(self):\n"
        "        nn.Module.__init__(self)\n"
        "class D(A):\n"
        "    def __init__(self, width):\n"
        "        A.__init__(self)\n"
        "        self.width = width\n",
        # No __init__ at all: Module.__init__ (or the base's) is inherited.
        "import torch\n"
        "class Swish(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * torch.sigmoid(x)\n",
        # __int__ as a real conversion, next to a real __init__ or alone.
        "from torch import nn\n"
        "class Counter(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.n = 0\n"
        "    def __int__(self):\n"
        "        return self.n\n"
        "class Steps(nn.Module):\n"
        "    def __int__(self):\n"
        "        return 3\n",
        # A hook method that the base's __init__ calls (template method), with a near-miss name.
        "import torch.nn as nn\n"
        "class Base(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self._init_()\n"
        "class Head(Base):\n"
        "    def _init_(self):\n"
        "        self.fc = nn.Linear(2, 2)\n",
        # Not modules: a plain class, a dataset, a config dataclass.
        "import torch\n"
        "class Config:\n"
        "    def __init__(self):\n"
        "        self.lr = 1e-3\n"
        "class Data(torch.utils.data.Dataset):\n"
        "    def __init__(self, n):\n"
        "        self.n = n\n"
        "class Weight(torch.nn.Parameter):\n"
        "    def __int__(self):\n"
        "        self.x = 1\n",
        # Typing stubs: overloads and an abstract placeholder.
        "from typing import overload\n"
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    @overload\n"
        "    def __init__(self, width: int) -> None: ...\n"
        "    @overload\n"
        "    def __init__(self, width: str) -> None: ...\n"
        "    def __init__(self, width):\n"
        "        super().__init__()\n"
        "class Interface(nn.Module):\n"
        "    def __init__(self) -> None:\n"
        "        ...\n",
        # A method named init (not a misspelling: called explicitly).
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def init(self, width):\n"
        "        self.fc = nn.Linear(width, 1)\n",
    ]
    INVALID = [
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __int__(self):  # expect: TS013\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n",
        "from torch import nn\n"
        "class Encoder(nn.Module):\n"
        "    def __init__(self, dim):  # expect: TS013\n"
        "        self.proj = nn.Linear(dim, dim)\n"
        "    def forward(self, x):\n"
        "        return self.proj(x)\n",
        # Misspellings: a dropped, a swapped, an extra character.
        "import torch\n"
        "class A(torch.nn.Module):\n"
        "    def __init(self):  # expect: TS013\n"
        "        self.w = torch.nn.Parameter(torch.zeros(2))\n"
        "class B(torch.nn.Module):\n"
        "    def __inti__(self):  # expect: TS013\n"
        "        super().__init__()\n"
        "class C(torch.nn.Module):\n"
        "    def __innit__(self, n):  # expect: TS013\n"
        "        self.n = n\n",
        # Through a base class of this file, and a Lightning module.
        "import torch.nn as nn\n"
        "import pytorch_lightning as pl\n"
        "class Block(nn.Sequential):\n"
        "    pass\n"
        "class Deep(Block):\n"
        "    def __init__(self):  # expect: TS013\n"
        "        self.extra = nn.ReLU()\n"
        "class Lit(pl.LightningModule):\n"
        "    def __init__(self, model):  # expect: TS013\n"
        "        self.model = model\n",
    ]

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self._tracer = ValueTracer(context)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        if not isinstance(node.body, cst.IndentedBlock) or not self._is_module(node):
            return
        methods = [s for s in node.body.body if isinstance(s, cst.FunctionDef)]
        if _binds_init_otherwise(node):
            return
        inits = [m for m in methods if m.name.value == _INIT and not _is_declaration(self.context, m)]
        if inits:
            if not _calls_an_init(node) and not _is_placeholder(inits[-1]):
                self.report(inits[-1], "__init__ does not call super().__init__()")
            return
        for method in methods:
            name = method.name.value
            if is_init_misspelling(name) and _initialises(method) and not self._called(name):
                self.report(method, f"{name} is not __init__: it never runs")

    def _is_module(self, node: cst.ClassDef) -> bool:
        for base in node.bases:
            if base.keyword is None and is_torch_module_base(self.context.qualified_name(base.value)):
                return True
        return is_module_class(self._tracer, node)

    def _called(self, name: str) -> bool:
        """Whether the file calls a method of this name (then it is a hook, not a misspelled __init__)."""
        return f".{name}(" in self.context.source or f".{name})" in self.context.source


def _binds_init_otherwise(cls: cst.ClassDef) -> bool:
    """``__init__ = other`` in the class body: an initialiser we cannot read."""
    for statement in cls.body.body:  # type: ignore[union-attr]
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if isinstance(small, cst.Assign) and any(
                        isinstance(t.target, cst.Name) and t.target.value == _INIT for t in small.targets):
                    return True
    return False


def _is_declaration(context: FileContext, function: cst.FunctionDef) -> bool:
    """``@overload`` / ``@abstractmethod`` declarations: not the initialiser that runs."""
    for decorator in function.decorators:
        name = context.qualified_name(decorator.decorator) or ""
        if name.rsplit(".", 1)[-1] in ("overload", "abstractmethod"):
            return True
    return False


def _is_placeholder(function: cst.FunctionDef) -> bool:
    """A body of only a docstring, ``...`` or ``raise NotImplementedError``: an interface, not a mistake."""
    body = function.body.body if isinstance(function.body, cst.IndentedBlock) else [function.body]
    for statement in body:
        smalls = statement.body if isinstance(statement, (cst.SimpleStatementLine, cst.SimpleStatementSuite)) \
            else None
        if smalls is None:
            return False
        for small in smalls:
            if isinstance(small, cst.Expr) and isinstance(small.value, (cst.Ellipsis, cst.SimpleString,
                                                                        cst.ConcatenatedString)):
                continue
            if isinstance(small, cst.Raise) and small.exc is not None and "NotImplementedError" in \
                    cst.Module(body=[]).code_for_node(small.exc):
                continue
            return False
    return True


def _calls_an_init(cls: cst.ClassDef) -> bool:
    """Any ``<something>.__init__(...)`` call in the class: ``super().__init__()``, ``nn.Module.__init__(self)``..."""
    return any(type(node) is cst.Call and isinstance(node.func, cst.Attribute)  # type: ignore[attr-defined]
               and node.func.attr.value == _INIT for node in walk_nodes(cls))  # type: ignore[attr-defined]


def _self_name(function: cst.FunctionDef) -> Optional[str]:
    params = (*function.params.posonly_params, *function.params.params)
    return params[0].name.value if params else None


def _initialises(function: cst.FunctionDef) -> bool:
    """Whether a method does what an initialiser does: assigns ``self.<attr>`` or calls an ``__init__``."""
    self_name = _self_name(function)
    if self_name is None:
        return False
    for node in walk_nodes(function.body):
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == _INIT:
            return True
        targets: List[cst.BaseExpression] = []
        if isinstance(node, cst.Assign):
            targets = [t.target for t in node.targets]
        elif isinstance(node, (cst.AnnAssign, cst.AugAssign)):
            targets = [node.target]
        for target in targets:
            if isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) \
                    and target.value.value == self_name:
                return True
    return False
