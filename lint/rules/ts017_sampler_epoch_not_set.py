"""TS017 sampler-epoch-not-set: a shuffling DistributedSampler iterated epoch after epoch, never re-seeded.

The pattern, in a file that never calls ``set_epoch`` (on anything):

1. ``DistributedSampler(dataset, ...)`` (resolved through the imports) with
   shuffling on: no ``shuffle`` argument, or a literal ``True``;
2. bound to a name (``sampler = ...``, ``self.sampler = ...``), or passed inline
   as ``sampler=`` to a loader bound to a name (``loader = DataLoader(ds,
   sampler=DistributedSampler(ds))``), and a loader built with ``sampler=<that
   name>``;
3. a ``for`` over that loader (or sampler), ``enumerate(loader)`` /
   ``tqdm(loader)`` included, nested in another loop of the same function: the
   epochs. The inner ``for`` is reported: it is where the runtime check reports
   the replayed order too.

Deliberately silent: any ``set_epoch`` in the file's code (``sampler.set_epoch(epoch)``,
``loader.sampler.set_epoch(epoch)``, a helper that does it, ``hasattr(s, "set_epoch")``;
comments and docstrings do not count); ``shuffle=False`` or a
non-literal ``shuffle`` (it may be False); a loader iterated once (no enclosing
loop: an evaluation pass, a single-epoch script); a loader iterated in another
function than the one holding the epoch loop (the static rule cannot tell how
often that function runs; the runtime check can).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Set, Tuple

import libcst as cst

from ..names import dotted
from ..tree import child_nodes
from ..rule import LintRule

_SAMPLERS = frozenset({"torch.utils.data.distributed.DistributedSampler", "torch.utils.data.DistributedSampler"})
#: DistributedSampler(dataset, num_replicas, rank, shuffle, ...): ``shuffle`` is the fourth positional argument.
_SHUFFLE_POSITION = 3
_LOOPS = (cst.For, cst.While)
_SCOPES = (cst.FunctionDef, cst.Module)


@dataclass(eq=False)
class _Loop:
    node: cst.For
    nested: bool
    #: Where each dotted name read by the loop's iterable lives (see ``_located``).
    reads: Set[Tuple[int, str]]


class SamplerEpochNotSet(LintRule):
    CODE = "TS017"
    TRIGGERS = ("DistributedSampler",)

    VALID = [
        # the canonical loop
        "from torch.utils.data import DataLoader\n"
        "from torch.utils.data.distributed import DistributedSampler\n"
        "def train(dataset, epochs, step):\n"
        "    sampler = DistributedSampler(dataset)\n"
        "    loader = DataLoader(dataset, batch_size=32, sampler=sampler)\n"
        "    for epoch in range(epochs):\n"
        "        sampler.set_epoch(epoch)\n"
        "        for batch in loader:\n"
        "            step(batch)\n",
        # set_epoch through the loader, or in a helper
        "import torch\n"
        "def train(dataset, epochs, step):\n"
        "    loader = torch.utils.data.DataLoader(dataset, sampler=torch.utils.data.DistributedSampler(dataset))\n"
        "    for epoch in range(epochs):\n"
        "        loader.sampler.set_epoch(epoch)\n"
        "        for batch in loader:\n"
        "            step(batch)\n",
        # no shuffling, or shuffling decided at runtime
        "from torch.utils.data import DataLoader, DistributedSampler\n"
        "def train(dataset, epochs, step, is_train):\n"
        "    a = DataLoader(dataset, sampler=DistributedSampler(dataset, shuffle=False))\n"
        "    b = DataLoader(dataset, sampler=DistributedSampler(dataset, None, None, False))\n"
        "    c = DataLoader(dataset, sampler=DistributedSampler(dataset, shuffle=is_train))\n"
        "    for epoch in range(epochs):\n"
        "        for batch in a:\n"
        "            step(batch)\n"
        "        for batch in b:\n"
        "            step(batch)\n"
        "        for batch in c:\n"
        "            step(batch)\n",
        # an evaluation loader iterated once
        "from torch.utils.data import DataLoader, DistributedSampler\n"
        "def evaluate(model, dataset):\n"
        "    loader = DataLoader(dataset, sampler=DistributedSampler(dataset))\n"
        "    for x, y in loader:\n"
        "        model(x)\n",
        # iterated in a helper called per epoch: unknown statically
        "from torch.utils.data import DataLoader, DistributedSampler\n"
        "def train_one_epoch(loader, step):\n"
        "    for batch in loader:\n"
        "        step(batch)\n"
        "def main(dataset, step):\n"
        "    loader = DataLoader(dataset, sampler=DistributedSampler(dataset))\n"
        "    for epoch in range(3):\n"
        "        train_one_epoch(loader, step)\n",
        # not torch's DistributedSampler
        "from mylib import DistributedSampler\n"
        "from torch.utils.data import DataLoader\n"
        "def train(dataset, step):\n"
        "    loader = DataLoader(dataset, sampler=DistributedSampler(dataset))\n"
        "    for epoch in range(3):\n"
        "        for batch in loader:\n"
        "            step(batch)\n",
        # another loader than the one with the sampler
        "from torch.utils.data import DataLoader, DistributedSampler\n"
        "def train(dataset, other, step):\n"
        "    loader = DataLoader(dataset, sampler=DistributedSampler(dataset))\n"
        "    plain = DataLoader(other, shuffle=True)\n"
        "    for epoch in range(3):\n"
        "        for batch in plain:\n"
        "            step(batch)\n",
    ]
    INVALID = [
        # the sampler built once, the epochs never told to it
        "from torch.utils.data import DataLoader\n"
        "from torch.utils.data.distributed import DistributedSampler\n"
        "def train(dataset, epochs, step):\n"
        "    sampler = DistributedSampler(dataset, shuffle=True, seed=42)\n"
        "    loader = DataLoader(dataset, batch_size=32, sampler=sampler, num_workers=2)\n"
        "    for epoch in range(epochs):\n"
        "        for i, batch in enumerate(loader):  # expect: TS017\n"
        "            step(batch)\n",
        # inline in the loader, on self, with a while loop and tqdm
        "import torch.utils.data as data\n"
        "from tqdm import tqdm\n"
        "class Trainer:\n"
        "    def __init__(self, dataset):\n"
        "        self.loader = data.DataLoader(dataset, sampler=data.DistributedSampler(dataset))\n"
        "    def fit(self, step):\n"
        "        while not self.done:\n"
        "            for batch in tqdm(self.loader):  # expect: TS017\n"
        "                step(batch)\n",
        # module-level script code
        "import torch\n"
        "sampler = torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=4, rank=rank)\n"
        "loader = torch.utils.data.DataLoader(dataset, sampler=sampler)\n"
        "for epoch in range(10):\n"
        "    for x, y in loader:  # expect: TS017\n"
        "        train_step(x, y)\n",
    ]

    def visit_Module(self, node: cst.Module) -> None:
        self._active = True
        #: Whether the code (not a comment or docstring) uses ``set_epoch``: cheap text test first.
        self._mentions_set_epoch = "set_epoch" in self.context.source
        self._scopes: List[cst.CSTNode] = [node]
        self._classes: List[Optional[cst.ClassDef]] = [None]
        #: (scope or class, dotted name) of the names bound to a shuffling sampler, or to a loader with one.
        self._samplers: Set[Tuple[int, str]] = set()
        self._loops: List[_Loop] = []
        self._loaders: List[Tuple[cst.CSTNode, Optional[cst.ClassDef], str, cst.Call]] = []

    # -- scopes --------------------------------------------------------------------------

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._classes.append(node)

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self._classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._scopes.append(node)
        self._classes.append(self._classes[-1] if self.context.nearest(cst.ClassDef, skip=1) else None)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._scopes.pop()
        self._classes.pop()

    # -- facts ---------------------------------------------------------------------------

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if self._mentions_set_epoch and node.attr.value == "set_epoch":
            self._active = False

    def visit_Call(self, node: cst.Call) -> None:
        """``getattr(sampler, "set_epoch")`` / ``hasattr(...)`` count as a use too."""
        if self._mentions_set_epoch and isinstance(node.func, cst.Name) and node.func.value in ("getattr", "hasattr"):
            if any(isinstance(arg.value, cst.SimpleString) and "set_epoch" in arg.value.value for arg in node.args):
                self._active = False

    def visit_Assign(self, node: cst.Assign) -> None:
        if not self._active or len(node.targets) != 1 or not isinstance(node.value, cst.Call):
            return
        target = dotted(node.targets[0].target)
        if target is None:
            return
        if self._is_shuffling_sampler(node.value):
            self._samplers.add(self._located(self._scopes[-1], self._classes[-1], target))
        else:
            self._loaders.append((self._scopes[-1], self._classes[-1], target, node.value))

    def visit_For(self, node: cst.For) -> None:
        if not self._active:
            return
        scope, cls = self._scopes[-1], self._classes[-1]
        local = self.context.resolver.scope.bindings if self.context.resolver.scope is not None else {}
        reads = set()
        for text in (dotted(n) for n in _expressions(node.iter)):
            if text is None:
                continue
            head = text.partition(".")[0]
            # A name the function does not bind is the module's (a loader built at module level).
            owner = scope if head == "self" or head in local or isinstance(scope, cst.Module) else self._scopes[0]
            reads.add(self._located(owner, cls, text))
        nested = False
        for ancestor in self.context.ancestors():
            if isinstance(ancestor, _SCOPES) or isinstance(ancestor, (cst.ClassDef, cst.Lambda)):
                break
            if isinstance(ancestor, _LOOPS):
                nested = True
                break
        self._loops.append(_Loop(node, nested, reads))

    def leave_Module(self, node: cst.Module) -> None:
        if not self._active:
            return
        shuffled = set(self._samplers)
        for scope, cls, target, call in self._loaders:
            for arg in call.args:
                if arg.keyword is None or arg.keyword.value != "sampler":
                    continue
                value = arg.value
                inline = isinstance(value, cst.Call) and self._is_shuffling_sampler(value)
                name = dotted(value)
                named = name is not None and self._located(scope, cls, name) in self._samplers
                if inline or named:
                    shuffled.add(self._located(scope, cls, target))
        for loop in self._loops:
            if loop.nested and loop.reads & shuffled:
                self.report(loop.node)

    @staticmethod
    def _located(scope: cst.CSTNode, cls: Optional[cst.ClassDef], name: str) -> Tuple[int, str]:
        """Where a name lives: ``self.x`` in its class, any other name in its function (or the module)."""
        if name.startswith("self.") and cls is not None:
            return id(cls), name
        return id(scope), name

    def _is_shuffling_sampler(self, call: cst.Call) -> bool:
        if self.context.qualified_name(call.func) not in _SAMPLERS:
            return False
        shuffle: Optional[cst.BaseExpression] = None
        for index, arg in enumerate(call.args):
            if arg.star:
                return False  # ``**kwargs``: unknown
            if arg.keyword is not None and arg.keyword.value == "shuffle" or arg.keyword is None and index == \
                    _SHUFFLE_POSITION:
                shuffle = arg.value
        return shuffle is None or isinstance(shuffle, cst.Name) and shuffle.value == "True"


def _expressions(root: cst.CSTNode) -> List[cst.CSTNode]:
    """Every Name / Attribute chain read in ``root`` (not the attributes inside a chain)."""
    found: List[cst.CSTNode] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.Name, cst.Attribute)) and dotted(node) is not None:
            found.append(node)
            continue
        stack.extend(child_nodes(node))
    return found
