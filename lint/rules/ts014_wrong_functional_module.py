"""TS014 wrong-functional-module: ``torch.functional`` imported where ``torch.nn.functional`` was meant."""

from __future__ import annotations

from typing import Dict, Optional, Set, Union

import libcst as cst

from ..names import dotted
from ..rule import FileContext, Fix, LintRule

#: What ``torch.functional`` has (torch 2.14: ``__all__`` plus the public names it imports,
#: and members of older releases): tensor utilities, none of the layer functions people
#: import "F" for. Using anything else through it is an AttributeError / ImportError.
TORCH_FUNCTIONAL = frozenset({
    "atleast_1d", "atleast_2d", "atleast_3d", "block_diag", "broadcast_shapes", "broadcast_tensors",
    "cartesian_prod", "cdist", "chain_matmul", "einsum", "istft", "lu", "meshgrid", "norm", "pca_lowrank",
    "split", "stft", "svd_lowrank", "tensordot", "unique", "unique_consecutive", "unravel_index", "align_tensors",
    "Any", "F", "Sequence", "TYPE_CHECKING", "Tensor", "boolean_dispatch", "handle_torch_function",
    "has_torch_function", "has_torch_function_unary", "has_torch_function_variadic", "itertools", "operator",
    "overload", "torch", "Optional", "Tuple", "List", "Union",
})

Import = Union[cst.Import, cst.ImportFrom]


class WrongFunctionalModule(LintRule):
    """``torch.functional`` used for a function it does not have (``F.relu`` after ``import torch.functional as F``).

    The import is reported (it is the line to change) once a name that
    ``torch.functional`` lacks is used through it, or imported from it. An alias
    used only for what ``torch.functional`` really offers (``einsum``, ``norm``,
    ``split``...), or not used at all, is fine.
    """

    CODE = "TS014"
    TRIGGERS = ("torch.functional", "torch import functional")

    VALID = [
        "import torch.nn.functional as F\n"
        "y = F.relu(x)\n",
        "from torch.nn import functional as F\n"
        "y = F.softmax(x, dim=1)\n",
        # torch.functional for what it has.
        "from torch.functional import einsum, norm\n"
        "y = einsum('ij->j', x)\n",
        "import torch\n"
        "y = torch.functional.einsum('ij->j', x)\n",
        "import torch.functional as TF\n"
        "parts = TF.split(x, 2)\n"
        "grid = TF.meshgrid(a, b, indexing='ij')\n",
        "from torch import functional\n"
        "n = functional.norm(x)\n",
        # Imported but never used: harmless.
        "import torch.functional as F\n",
        # The alias rebound locally before use.
        "import torch.functional as F\n"
        "def f(x):\n"
        "    import torch.nn.functional as F\n"
        "    return F.relu(x)\n",
    ]
    INVALID = [
        "import torch.functional as F  # expect: TS014\n"
        "def forward(x):\n"
        "    return F.relu(x)\n",
        "from torch import functional as F  # expect: TS014\n"
        "loss = F.cross_entropy(logits, y)\n"
        "probs = F.softmax(logits, dim=1)\n",
        "from torch.functional import relu  # expect: TS014\n",
        "from torch.functional import einsum, dropout  # expect: TS014\n",
        # Used without an alias: the use is the line to change.
        "import torch\n"
        "y = torch.functional.gelu(x)  # expect: TS014\n",
    ]

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        #: Names bound to torch.functional by an import, and that import.
        self._imports: Dict[str, Import] = {}
        self._reported: Set[int] = set()

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            if dotted(alias.name) == "torch.functional" and alias.asname is not None \
                    and isinstance(alias.asname.name, cst.Name):
                self._imports[alias.asname.name.value] = node

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.relative or node.module is None or isinstance(node.names, cst.ImportStar):
            return
        module = dotted(node.module)
        for alias in node.names:
            name = alias.name.value if isinstance(alias.name, cst.Name) else None
            if name is None:
                continue
            if module == "torch" and name == "functional":
                bound = alias.asname.name if alias.asname is not None else alias.name
                if isinstance(bound, cst.Name):
                    self._imports[bound.value] = node
            elif module == "torch.functional" and name not in TORCH_FUNCTIONAL:
                self._report_once(node, f"{name} is not in torch.functional")

    def visit_Attribute(self, node: cst.Attribute) -> None:
        qualified = self.context.qualified_name(node)
        if qualified is None or not qualified.startswith("torch.functional.") or qualified.count(".") != 2:
            return  # only the innermost ``<torch.functional>.<member>`` of a chain
        member = qualified.split(".")[2]
        if member in TORCH_FUNCTIONAL:
            return
        head = (dotted(node) or "").partition(".")[0]
        where = self._imports.get(head)
        self._report_once(where if where is not None else node, f"{member} is not in torch.functional")

    def _report_once(self, node: cst.CSTNode, detail: str) -> None:
        if id(node) not in self._reported:
            self._reported.add(id(node))
            replacement = _with_nn_functional(node)
            fix = Fix(replacement, "use torch.nn.functional") if replacement is not None else None
            self.report(node, detail + ": use torch.nn.functional", fix=fix)


_NN_FUNCTIONAL = cst.parse_expression("torch.nn.functional")


def _with_nn_functional(node: cst.CSTNode) -> Optional[cst.CSTNode]:
    """``node`` spelled with torch.nn.functional, or None where that could break another name."""
    if isinstance(node, cst.Import):
        return node.with_changes(names=[
            alias.with_changes(name=_NN_FUNCTIONAL) if dotted(alias.name) == "torch.functional" else alias
            for alias in node.names])
    if isinstance(node, cst.ImportFrom) and node.module is not None and not isinstance(node.names, cst.ImportStar):
        module = dotted(node.module)
        names = [alias.name.value for alias in node.names if isinstance(alias.name, cst.Name)]
        if module == "torch" and names == ["functional"]:
            return node.with_changes(module=cst.parse_expression("torch.nn"))
        if module == "torch.functional" and not set(names) & TORCH_FUNCTIONAL:
            return node.with_changes(module=_NN_FUNCTIONAL)
        return None
    if isinstance(node, cst.Attribute) and dotted(node.value) == "torch.functional":
        return node.with_changes(value=_NN_FUNCTIONAL)
    return None
