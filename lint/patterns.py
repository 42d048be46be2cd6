"""Syntactic patterns several rules share: method calls, receivers, no-grad contexts.

Add a helper here (append at the end) only when a second rule needs it; a
helper used by one rule stays in that rule's module.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import libcst as cst

from .names import dotted
from .tree import child_nodes, walk_nodes
from .rule import FileContext

NO_GRAD_CONTEXTS = frozenset({
    "torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad", "torch.autograd.inference_mode",
    "torch.autograd.grad_mode.no_grad", "torch.autograd.grad_mode.inference_mode",
})
SET_GRAD_ENABLED = frozenset({"torch.set_grad_enabled", "torch.autograd.set_grad_enabled",
                              "torch.autograd.grad_mode.set_grad_enabled"})


def method_name(call: cst.Call) -> Optional[str]:
    """``step`` for ``opt.step(...)``, None for a call that is not ``<expr>.<name>(...)``."""
    return call.func.attr.value if isinstance(call.func, cst.Attribute) else None


def receiver(call: cst.Call) -> Optional[cst.BaseExpression]:
    """``opt`` for ``opt.step()``; None for a plain function call."""
    return call.func.value if isinstance(call.func, cst.Attribute) else None


def receiver_text(call: cst.Call) -> Optional[str]:
    """Dotted text of the receiver (``self.optimizer`` for ``self.optimizer.step()``), if it is a name chain."""
    target = receiver(call)
    return dotted(target) if target is not None else None


def calls_in(node: cst.CSTNode, *, into_functions: bool = False) -> Iterator[cst.Call]:
    """Every Call below ``node`` in source order; nested defs/lambdas/classes are skipped unless asked."""
    return (n for n in walk_nodes(node, into_scopes=into_functions) if type(n) is cst.Call)


def _is_no_grad_call(context: FileContext, expression: cst.BaseExpression) -> bool:
    target = expression.func if isinstance(expression, cst.Call) else expression
    name = context.qualified_name(target)
    if name in NO_GRAD_CONTEXTS:
        return True
    if name in SET_GRAD_ENABLED and isinstance(expression, cst.Call) and expression.args:
        value = expression.args[0].value
        return isinstance(value, cst.Name) and value.value == "False"
    return False


def is_no_grad_decorated(context: FileContext, function: cst.FunctionDef) -> bool:
    """``@torch.no_grad()``, ``@torch.no_grad``, ``@torch.inference_mode()``, ``@torch.set_grad_enabled(False)``."""
    return any(_is_no_grad_call(context, decorator.decorator) for decorator in function.decorators)


def in_no_grad(context: FileContext, ancestors: Optional[Sequence[cst.CSTNode]] = None) -> bool:
    """Whether the current node runs with autograd off, judging by enclosing ``with`` blocks and decorators.

    Stops at the innermost function: code in a function is judged by that
    function's own context and decorators (its callers are another question).
    """
    for node in ancestors if ancestors is not None else context.ancestors():
        if isinstance(node, cst.With) and any(_is_no_grad_call(context, item.item) for item in node.items):
            return True
        if isinstance(node, cst.FunctionDef):
            return is_no_grad_decorated(context, node)
        if isinstance(node, cst.Lambda):
            return False
    return False


# ---------------------------------------------------------------------------------------
# Train / eval mode of models, and where calls sit in a file (TS006 eval-mode-missing,
# TS007 train-mode-not-restored). A rule feeds a ModeFlow from its visit_Call /
# visit_Assign / visit_FunctionDef / visit_ClassDef / visit_Name / visit_Attribute and
# asks its questions in leave_Module, when the whole file has been seen.

import re  # noqa: E402  (appended section)
from dataclasses import dataclass  # noqa: E402
from typing import Dict, List, Set, Tuple, Union  # noqa: E402

EVAL_MODE, TRAIN_MODE, EITHER_MODE = "eval", "train", "either"

#: Last name components that say "this is a model" (``model``, ``self.net``, ``netG``, ``encoder``...).
_MODEL_NAME = re.compile(r"model|net|encoder|decoder|backbone|classifier|generator|discriminator|student|"
                         r"teacher|policy|critic|actor|cnn|mlp|rnn|lstm|gru|vae|transformer|bert|gpt|vit", re.I)
#: ... and those that say "a loss, a metric or an optimizer, not a model" (``criterion``, ``loss_fn``).
_NOT_MODEL_NAME = re.compile(r"loss|criterion|metric|optim|sched|scaler|writer|logger|accelerator|fabric|"
                             r"tokenizer|processor|env|_fn$|func", re.I)
#: Methods whose receiver is a module (evidence that a name holds a model).
_MODULE_METHODS = frozenset({"parameters", "named_parameters", "state_dict", "load_state_dict", "modules",
                             "named_modules", "children", "eval", "train", "requires_grad_", "apply"})
#: Text in a model's source that makes train and eval mode differ (dropout, batch-norm, custom
#: ``self.training`` branches, stochastic depth); a model without any of it gains nothing from eval().
_MODE_DEPENDENT = re.compile(r"drop|batch_?norm|instance_?norm|sync_?bn|\bbn\d*\b|transformer|\.training\b|"
                             r"stochastic|noise|multihead", re.I)
#: Method chains that return the same module (``Net().to(device).eval()``).
_SAME_MODULE_METHODS = frozenset({"to", "cuda", "cpu", "float", "double", "half", "bfloat16", "train", "eval",
                                  "requires_grad_", "to_empty"})
_LOOP_NODES = (cst.For, cst.While, cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)


def mode_change(call: cst.Call) -> Optional[str]:
    """EVAL_MODE for ``X.eval()`` / ``X.train(False)``, TRAIN_MODE for ``X.train()`` / ``X.train(True)``,
    EITHER_MODE for ``X.train(<expression>)``, None for any other call."""
    name = method_name(call)
    if name == "eval":
        return EVAL_MODE if not call.args else None
    if name != "train" or len(call.args) > 1:
        return None
    if not call.args:
        return TRAIN_MODE
    arg = call.args[0]
    if arg.keyword is not None and arg.keyword.value != "mode":
        return None
    value = arg.value
    if isinstance(value, cst.Name) and value.value in ("True", "False"):
        return TRAIN_MODE if value.value == "True" else EVAL_MODE
    return EITHER_MODE


def last_component(text: str) -> str:
    return text.rpartition(".")[2]


def related_receivers(a: str, b: str) -> bool:
    """Whether a mode change on ``a`` can change the mode of ``b``: the same name, or one contains the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


@dataclass(eq=False)
class CallSite:
    """One call of the file, with what the mode rules need to know about where it sits."""

    call: cst.Call
    index: int
    #: Enclosing nodes, outermost (the Module) first; the call itself excluded.
    ancestors: Tuple[cst.CSTNode, ...]
    qualified: Optional[str]
    no_grad: bool
    method: Optional[str]
    receiver: Optional[str]
    #: The callee's own name: the method name, or a plain function's name.
    name: Optional[str]
    #: The callee's dotted text (``self.model``, ``evaluate``), if a name chain.
    func_text: Optional[str]
    #: The innermost function (or the module) the call runs in.
    scope: cst.CSTNode

    def within(self, node: cst.CSTNode) -> bool:
        return any(ancestor is node for ancestor in self.ancestors)

    def loops(self) -> List[cst.CSTNode]:
        """Enclosing loops (statements and comprehensions) inside the call's scope, innermost first."""
        found: List[cst.CSTNode] = []
        for node in reversed(self.ancestors):
            if isinstance(node, (cst.FunctionDef, cst.Module, cst.Lambda, cst.ClassDef)):
                break
            if isinstance(node, _LOOP_NODES):
                found.append(node)
        return found


@dataclass(eq=False)
class Assignment:
    target: str
    value: Optional[cst.BaseExpression]  # None: bound by unpacking, value unknown
    ancestors: Tuple[cst.CSTNode, ...]
    #: The innermost function (or the module) the assignment runs in.
    scope: cst.CSTNode


def _innermost_scope(ancestors: Sequence[cst.CSTNode]) -> cst.CSTNode:
    for node in reversed(ancestors):
        if isinstance(node, (cst.FunctionDef, cst.Module)):
            return node
    return ancestors[0]


def _enclosing_class(ancestors: Sequence[cst.CSTNode]) -> Optional[cst.ClassDef]:
    for node in reversed(ancestors):
        if isinstance(node, cst.ClassDef):
            return node
    return None


def argument_names(call: cst.Call) -> Set[str]:
    """Every bare name read by the call's arguments (``model(x[0], mask=m)`` -> {x, m})."""
    names: Set[str] = set()
    stack: List[cst.CSTNode] = [arg.value for arg in call.args]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Name):
            names.add(node.value)
        elif isinstance(node, cst.Attribute):
            stack.append(node.value)  # ``batch.x`` reads batch, not x
        else:
            stack.extend(child_nodes(node))
    return names


def bound_names(target: cst.CSTNode) -> Iterator[str]:
    if isinstance(target, cst.Name):
        yield target.value
    elif isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            yield from bound_names(element.value)
    elif isinstance(target, cst.StarredElement):
        yield from bound_names(target.value)


def _terminates(statement: cst.CSTNode) -> bool:
    """``return`` / ``raise`` / ``sys.exit(...)`` / ``exit()`` / ``quit()`` as a statement."""
    if not isinstance(statement, cst.SimpleStatementLine) or not statement.body:
        return False
    last = statement.body[-1]
    if isinstance(last, (cst.Return, cst.Raise)):
        return True
    if isinstance(last, cst.Expr) and isinstance(last.value, cst.Call):
        return dotted(last.value.func) in ("sys.exit", "exit", "quit", "os._exit")
    return False


class ModeFlow:
    """Calls, assignments and definitions of one file in source order, for the mode rules.

    Answers, once the whole file is known: which calls precede which (loops wrap
    around), who calls a function, where a model came from, whether it can have
    dropout / batch-norm at all.
    """

    def __init__(self, context: FileContext) -> None:
        self.context = context
        self.sites: List[CallSite] = []
        self.assignments: List[Assignment] = []
        self.functions: Dict[str, List[cst.FunctionDef]] = {}
        self.classes: Dict[str, cst.ClassDef] = {}
        #: Names used other than as a callee or a definition (a function passed as a callback).
        self.references: Set[str] = set()
        #: Last components of receivers of module-only methods (``model`` of ``model.parameters()``).
        self.module_receivers: Set[str] = set()
        #: Last components of receivers of ``.parameters()`` / ``.named_parameters()``: handed to an optimizer.
        self.parameter_receivers: Set[str] = set()
        self._plain_classes: Dict[str, bool] = {}
        self._function_sites: Dict[int, List[CallSite]] = {}
        self._scope_indexed: List[int] = []
        self._definition_ancestors: Dict[int, Tuple[cst.CSTNode, ...]] = {}
        self._inside: Optional[Dict[int, List[CallSite]]] = None
        self._indexed = 0
        self._by_call: Dict[int, CallSite] = {}
        self._last_recorded: Optional[cst.CSTNode] = None

    @classmethod
    def shared(cls, context: FileContext) -> "ModeFlow":
        """The file's one ModeFlow: the rules that use it record each node once between them."""
        flow = getattr(context, "_trainsafe_mode_flow", None)
        if flow is None:
            flow = cls(context)
            setattr(context, "_trainsafe_mode_flow", flow)
        return flow

    # -- recording (during the traversal; a node already recorded by another rule is skipped) --

    def record_call(self, call: cst.Call) -> CallSite:
        if self.sites and self.sites[-1].call is call:
            return self.sites[-1]
        context = self.context
        func = call.func
        method = method_name(call)
        target = receiver(call)
        receiver_dotted = dotted(target) if target is not None else None
        func_text = dotted(func)
        name = method if method is not None else (func.value if isinstance(func, cst.Name) else None)
        ancestors = tuple(context.stack[:-1])
        site = CallSite(call, len(self.sites), ancestors,
                        context.qualified_name(func) if func_text is not None else None,
                        in_no_grad(context), method, receiver_dotted, name, func_text, _innermost_scope(ancestors))
        self.sites.append(site)
        if method in _MODULE_METHODS and receiver_dotted is not None:
            self.module_receivers.add(last_component(receiver_dotted))
            if method in ("parameters", "named_parameters"):
                self.parameter_receivers.add(last_component(receiver_dotted))
        return site

    def record_assign(self, node: Union[cst.Assign, cst.AnnAssign]) -> None:
        if self._last_recorded is node:
            return
        self._last_recorded = node
        ancestors = tuple(self.context.stack[:-1])
        scope = _innermost_scope(ancestors)
        targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
        for target in targets:
            text = dotted(target)
            if text is not None:
                self.assignments.append(Assignment(text, node.value, ancestors, scope))
            else:
                for name in bound_names(target):
                    self.assignments.append(Assignment(name, None, ancestors, scope))

    def record_function(self, node: cst.FunctionDef) -> None:
        if self._last_recorded is node:
            return
        self._last_recorded = node
        self.functions.setdefault(node.name.value, []).append(node)
        self._definition_ancestors[id(node)] = tuple(self.context.stack[:-1])

    def record_class(self, node: cst.ClassDef) -> None:
        self.classes[node.name.value] = node

    def record_name(self, node: cst.Name) -> None:
        """A Name that is not a callee, a definition's name or an attribute's name: a reference."""
        if self._last_recorded is node:
            return
        self._last_recorded = node
        stack = self.context.stack
        parent = stack[-2] if len(stack) > 1 else None
        if isinstance(parent, cst.Call) and parent.func is node:
            return
        if isinstance(parent, (cst.FunctionDef, cst.ClassDef)) and parent.name is node:
            return
        if isinstance(parent, cst.Attribute) and parent.attr is node:
            grand = stack[-3] if len(stack) > 2 else None
            if isinstance(grand, cst.Call) and grand.func is parent:
                return
        self.references.add(node.value)

    # -- order and paths ---------------------------------------------------------------

    def sites_in(self, node: cst.CSTNode) -> Iterator[CallSite]:
        """Calls inside ``node`` (nested functions included: callers filter by scope), in source order."""
        if self._inside is None or self._indexed != len(self.sites):
            inside: Dict[int, List[CallSite]] = {}
            for site in self.sites:
                for ancestor in site.ancestors:
                    inside.setdefault(id(ancestor), []).append(site)
            self._inside, self._indexed = inside, len(self.sites)
        return iter(self._inside.get(id(node), ()))

    def site_of(self, call: cst.Call) -> Optional[CallSite]:
        if len(self._by_call) != len(self.sites):
            self._by_call = {id(site.call): site for site in self.sites}
        return self._by_call.get(id(call))

    def scope_sites(self, scope: cst.CSTNode) -> List[CallSite]:
        """Calls that run in ``scope`` itself (not in functions nested in it), in source order."""
        if len(self._scope_indexed) != 1 or self._scope_indexed[0] != len(self.sites):
            self._function_sites = {}
            for site in self.sites:
                self._function_sites.setdefault(id(site.scope), []).append(site)
            self._scope_indexed = [len(self.sites)]
        return self._function_sites.get(id(scope), [])

    @staticmethod
    def exclusive_branches(a: CallSite, b: CallSite) -> bool:
        """Whether ``a`` and ``b`` sit in different branches of one ``if`` (no path joins them)."""
        for depth, (x, y) in enumerate(zip(a.ancestors, b.ancestors)):
            if x is not y:
                parent = a.ancestors[depth - 1] if depth else None
                return isinstance(parent, cst.If) and x is not parent.test and y is not parent.test
        return False

    def precedes(self, first: CallSite, then: CallSite, barriers: Sequence[CallSite]) -> bool:
        """Whether execution can go from ``first`` to ``then`` (same scope) without meeting a barrier.

        Earlier in the source: any barrier in between stops it (conservatively, also
        one in a branch). Later in the source: only through a loop enclosing both,
        round its back edge, and a barrier anywhere in that loop outside the stretch
        from ``then`` to ``first`` stops it.
        """
        if first.scope is not then.scope or self.exclusive_branches(first, then) or self._exits_before(first, then):
            return False
        if first.index < then.index:
            return not any(first.index < b.index < then.index for b in barriers)
        shared = [loop for loop in then.loops() if first.within(loop) and isinstance(loop, (cst.For, cst.While))]
        if not shared:
            return False
        loop = shared[-1]  # the outermost loop holding both: its back edge is always taken
        return not any(b.within(loop) and (b.index < then.index or b.index > first.index) for b in barriers)

    @staticmethod
    def _exits_before(first: CallSite, then: CallSite) -> bool:
        """Whether ``first`` sits in a block that ends the function (``return`` / ``raise`` /
        ``sys.exit()``) and does not hold ``then``: ``if args.evaluate: model.eval(); ...; return``."""
        for node in reversed(first.ancestors):
            if then.within(node) or isinstance(node, (cst.FunctionDef, cst.Module)):
                return False
            if isinstance(node, cst.IndentedBlock) and node.body and _terminates(node.body[-1]):
                return True
        return False

    # -- functions and their callers -----------------------------------------------------

    def callers(self, function: cst.FunctionDef) -> Optional[List[CallSite]]:
        """Calls of ``function`` in this file (by name), or None when it is also used as a value
        (a callback) or has no visible caller: its callers are then unknown."""
        name = function.name.value
        if name in self.references or len(self.functions.get(name, ())) > 1:
            return None
        found = [s for s in self.sites if s.name == name and not s.within(function)]
        return found or None

    @staticmethod
    def parameter_index(function: cst.FunctionDef, name: str) -> Optional[Tuple[int, str]]:
        """(position counted without ``self``/``cls``, name) of parameter ``name``, if it is one."""
        params = [p.name.value for p in (*function.params.posonly_params, *function.params.params)]
        if params and params[0] in ("self", "cls"):
            params = params[1:]
        if name in params:
            return params.index(name), name
        if any(p.name.value == name for p in function.params.kwonly_params):
            return -1, name
        return None

    @staticmethod
    def argument(call: cst.Call, position: Tuple[int, str]) -> Optional[cst.BaseExpression]:
        index, name = position
        positional = [a for a in call.args if a.keyword is None and not a.star]
        for arg in call.args:
            if arg.keyword is not None and arg.keyword.value == name:
                return arg.value
        if 0 <= index < len(positional) and not any(a.star for a in call.args[:index + 1]):
            return positional[index].value
        return None

    # -- where a model comes from, and whether it can have dropout / batch-norm --------------

    def known_plain(self, model: str, scope: cst.CSTNode, depth: int = 0) -> bool:
        """True only when every visible origin of ``model`` (in ``scope``) is built from code
        in this file (or plain ``torch.nn`` layers) that has no dropout, batch-norm or other
        mode-dependent layer: then train and eval mode compute the same thing."""
        origins = self._origins(model, scope, depth)
        return bool(origins) and all(value is not None and self._plain_value(value) for value in origins)

    def _origins(self, model: str, scope: cst.CSTNode, depth: int) -> List[Optional[cst.BaseExpression]]:
        if depth > 3:
            return [None]
        if model.startswith("self."):
            cls = _enclosing_class((*self._ancestors_of(scope), scope))
            return [a.value for a in self.assignments if a.target == model and cls is not None
                    and _enclosing_class(a.ancestors) is cls]
        if "." in model:
            return [None]
        found: List[Optional[cst.BaseExpression]] = [a.value for a in self.assignments
                                                     if a.target == model and a.scope is scope]
        if found or not isinstance(scope, cst.FunctionDef):
            return found
        position = self.parameter_index(scope, model)
        if position is None:
            return [a.value for a in self.assignments if a.target == model and isinstance(a.scope, cst.Module)]
        callers = self.callers(scope)
        if not callers:
            return [None]
        for site in callers:
            value = self.argument(site.call, position)
            text = dotted(value) if value is not None else None
            if text is not None:
                found.extend(self._origins(text, site.scope, depth + 1))
            else:
                found.append(value)
        return found

    def _ancestors_of(self, node: cst.CSTNode) -> Tuple[cst.CSTNode, ...]:
        return self._definition_ancestors.get(id(node), ())

    def _plain_value(self, value: cst.BaseExpression) -> bool:
        while (isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute)
               and value.func.attr.value in _SAME_MODULE_METHODS):
            value = value.func.value
        if not isinstance(value, cst.Call):
            return False
        site = self.site_of(value)
        if site is None or site.func_text is None:
            return False
        if site.qualified is not None and site.qualified.startswith("torch.nn."):
            layer = site.qualified.rpartition(".")[2]
            return not _MODE_DEPENDENT.search(layer) and all(
                not isinstance(arg.value, cst.Call) or self._plain_value(arg.value) for arg in value.args)
        if site.qualified is None and site.func_text in self.classes:
            return self._plain_class(site.func_text)
        return False

    def _plain_class(self, name: str) -> bool:
        known = self._plain_classes.get(name)
        if known is not None:
            return known
        self._plain_classes[name] = False  # recursion guard: a cycle is not proven plain
        node = self.classes[name]
        plain = not _MODE_DEPENDENT.search(cst.Module([]).code_for_node(node))
        if plain:
            for site in self.sites_in(node):
                if not self._plain_callee(site):
                    plain = False
                    break
        self._plain_classes[name] = plain
        return plain

    def _plain_callee(self, site: CallSite) -> bool:
        """A call inside a plain model class: torch, builtins, methods on locals, plain local classes."""
        qualified = site.qualified
        if site.func_text is None or site.method is not None and qualified is None:
            return True  # ``x.view(...)``, ``self.fc(x)``, ``super().__init__()``
        if qualified is None:
            text = site.func_text
            if text in self.classes:
                return self._plain_class(text)
            if text in self.functions:
                return not any(_MODE_DEPENDENT.search(cst.Module([]).code_for_node(f)) for f in self.functions[text])
            return "." not in text and not text[:1].isupper()  # a local variable / parameter being called
        if qualified.startswith("builtins."):
            return True
        return qualified.startswith("torch.") and not _MODE_DEPENDENT.search(qualified) and not any(
            qualified.startswith(p) for p in ("torch.hub", "torch.load", "torch.jit.load"))

    # -- models ---------------------------------------------------------------------

    def looks_like_model(self, text: str) -> bool:
        """Whether the callee text names a model (not ``self``, a loss, a metric, a class or a function)."""
        last = last_component(text)
        if text in ("self", "cls", "super") or text in self.functions or text in self.classes:
            return False
        if last[:1].isupper() and last not in self.module_receivers and len(last) > 2:
            return False  # ``Net(...)``: a constructor, not a call of a model
        if _NOT_MODEL_NAME.search(last):
            return False
        return bool(_MODEL_NAME.search(last)) or last in self.module_receivers



# ---------------------------------------------------------------------------------------
# Where a value comes from, within one file (ValueTracer: TS010, TS019, TS013), and an
# activation fed to a loss that applies that activation itself (ActivationBeforeLoss:
# TS010 softmax-before-cross-entropy, TS019 sigmoid-before-bce-with-logits). Questions
# are asked at the node being visited; the tracer reads the rest of the file itself,
# lazily, with exact-type checks (libcst's ``children`` and ABC isinstance are slow).

import dataclasses  # noqa: E402  (appended section)
from typing import Callable, FrozenSet, Hashable, TypeVar  # noqa: E402

from .names import LOCAL, canonical, collect_bindings  # noqa: E402

#: Where an expression is evaluated: its function (or the module) and, for a method, its class.
@dataclass(frozen=True)
class Frame:
    scope: Union[cst.FunctionDef, cst.Module]
    cls: Optional[cst.ClassDef] = None

    @property
    def self_name(self) -> Optional[str]:
        """The name of a method's first parameter (``self``), else None."""
        if self.cls is None or not isinstance(self.scope, cst.FunctionDef):
            return None
        params = (*self.scope.params.posonly_params, *self.scope.params.params)
        return params[0].name.value if params else None


def frame_of(stack: Sequence[cst.CSTNode]) -> Frame:
    """The frame of the innermost node of ``stack`` (``FileContext.stack``)."""
    for index in range(len(stack) - 1, -1, -1):
        node = stack[index]
        if isinstance(node, cst.FunctionDef):
            owner = stack[index - 2] if index >= 2 else None
            return Frame(node, owner if isinstance(owner, cst.ClassDef) else None)
    module = stack[0]
    assert isinstance(module, cst.Module)
    return Frame(module)


_SUITES = (cst.If, cst.Else, cst.For, cst.While, cst.Try, cst.TryStar, cst.ExceptHandler, cst.ExceptStarHandler,
           cst.Finally, cst.With, cst.IndentedBlock, cst.SimpleStatementSuite, cst.Match, cst.MatchCase)
_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)


class _Found(Exception):
    """Stops the walk of :class:`_Bindings` at the use."""


def _is_main_guard(node: cst.CSTNode) -> bool:
    """``if __name__ == "__main__":`` (its body runs unconditionally when the file is a script)."""
    return isinstance(node, cst.If) and isinstance(node.test, cst.Comparison) \
        and isinstance(node.test.left, cst.Name) and node.test.left.value == "__name__"


class _Bindings:
    """The bindings of one name in one scope, in source order, up to a use of it (or the whole scope).

    Nested functions and classes are other scopes (only their own name is bound
    here); comprehension targets and lambda parameters shadow the name inside them.
    """

    def __init__(self, name: str, use: Optional[cst.CSTNode]) -> None:
        self.name = name
        self.use = use
        self.found: List[Tuple[Optional[cst.BaseExpression], Tuple[cst.CSTNode, ...]]] = []
        self.use_path: Optional[Tuple[cst.CSTNode, ...]] = None
        self.opaque = False
        self._path: List[cst.CSTNode] = []
        self._shadow = 0

    def run(self, scope: Union[cst.FunctionDef, cst.Module]) -> "_Bindings":
        body = scope.body if isinstance(scope, cst.Module) else tuple(child_nodes(scope.body))
        try:
            self._path.append(scope)
            for statement in body:
                self._visit(statement)
        except _Found:
            pass
        return self

    def _bind(self, name: str, value: Optional[cst.BaseExpression]) -> None:
        if name == self.name and not self._shadow:
            self.found.append((value, tuple(self._path)))

    def _bind_target(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression]) -> None:
        if isinstance(target, cst.Name):
            self._bind(target.value, value)
        else:
            for name in bound_names(target):
                self._bind(name, None)

    def _children(self, node: cst.CSTNode) -> None:
        for child in child_nodes(node):
            self._visit(child)

    def _visit(self, node: cst.CSTNode) -> None:
        if node is self.use:
            if self._shadow:
                self.opaque = True
            self.use_path = tuple(self._path)
            raise _Found
        kind = type(node)
        self._path.append(node)
        try:
            if kind is cst.FunctionDef or kind is cst.ClassDef:
                self._bind(node.name.value, None)  # type: ignore[attr-defined]
            elif kind is cst.Lambda or kind in _COMPREHENSIONS:
                names: Set[str] = set()
                if isinstance(node, cst.Lambda):
                    names.update(p.name.value for p in (*node.params.posonly_params, *node.params.params,
                                                        *node.params.kwonly_params))
                else:
                    clause = node.for_in  # type: ignore[attr-defined]
                    while clause is not None:
                        names.update(bound_names(clause.target))
                        clause = clause.inner_for_in
                shadowed = self.name in names
                self._shadow += shadowed
                self._children(node)
                self._shadow -= shadowed
            elif kind is cst.Assign:
                self._visit(node.value)  # type: ignore[attr-defined]
                for target in node.targets:  # type: ignore[attr-defined]
                    self._visit(target.target)
                for target in node.targets:  # type: ignore[attr-defined]
                    self._bind_target(target.target, node.value)  # type: ignore[attr-defined]
            elif kind is cst.AnnAssign:
                if node.value is not None:  # type: ignore[attr-defined]
                    self._visit(node.value)  # type: ignore[attr-defined]
                    self._bind_target(node.target, node.value)  # type: ignore[attr-defined]
            elif kind is cst.AugAssign or kind is cst.NamedExpr:
                self._visit(node.value)  # type: ignore[attr-defined]
                self._bind_target(node.target, None)  # type: ignore[attr-defined]
            elif kind is cst.For:
                self._visit(node.iter)  # type: ignore[attr-defined]
                self._bind_target(node.target, None)  # type: ignore[attr-defined]
                self._visit(node.body)  # type: ignore[attr-defined]
                if node.orelse is not None:  # type: ignore[attr-defined]
                    self._visit(node.orelse)  # type: ignore[attr-defined]
            elif kind is cst.WithItem:
                self._visit(node.item)  # type: ignore[attr-defined]
                if node.asname is not None:  # type: ignore[attr-defined]
                    self._bind_target(node.asname.name, None)  # type: ignore[attr-defined]
            elif kind is cst.ExceptHandler or kind is cst.ExceptStarHandler:
                name = node.name  # type: ignore[attr-defined]
                if name is not None and isinstance(name.name, cst.Name):
                    self._bind(name.name.value, None)
                self._children(node)
            elif kind is cst.Import or kind is cst.ImportFrom:
                bound: Dict[str, str] = {}
                collect_bindings([cst.SimpleStatementLine(body=[node])], bound)  # type: ignore[list-item]
                for name in bound:
                    self._bind(name, None)
            elif kind is cst.Del:
                self._bind_target(node.target, None)  # type: ignore[attr-defined]
            elif kind is cst.Global or kind is cst.Nonlocal:
                if any(n.name.value == self.name for n in node.names):  # type: ignore[attr-defined]
                    self.opaque = True
            elif kind is cst.Match:
                self.opaque = True  # pattern captures are not tracked
                self._children(node)
            else:
                self._children(node)
        finally:
            self._path.pop()

    @staticmethod
    def unconditional(path: Tuple[cst.CSTNode, ...], use_path: Tuple[cst.CSTNode, ...] = ()) -> bool:
        """Whether a binding at ``path`` runs whenever the use at ``use_path`` runs (before it in source order).

        Blocks shared with the use, ``with`` bodies, ``try`` bodies and the
        ``if __name__ == "__main__":`` body do; a branch, a loop body or an
        ``except`` clause the use is not in may not.
        """
        shared = {id(node) for node in use_path}
        for index, node in enumerate(path):
            if id(node) in shared or not isinstance(node, _SUITES):
                continue
            parent = path[index - 1] if index else None
            if isinstance(node, (cst.With, cst.Try, cst.TryStar)) or _is_main_guard(node):
                continue
            if isinstance(node, cst.IndentedBlock) and (
                    isinstance(parent, cst.With) or _is_main_guard(parent)  # type: ignore[arg-type]
                    or (isinstance(parent, (cst.Try, cst.TryStar)) and parent.body is node)):
                continue
            return False
        return True


#: Nodes whose ``value`` is used as a value (a Name there is passed, stored or returned, not called).
_VALUE_HOLDERS = frozenset({cst.Arg, cst.Element, cst.DictElement, cst.Assign, cst.AnnAssign, cst.Return})
_Answer = TypeVar("_Answer", bound=Hashable)
Value = Tuple[cst.BaseExpression, Frame]


class ValueTracer:
    """Answers "where does this value come from?" inside one file, without running it.

    A name is followed to the assignment that reaches it in its function (the
    last one before it in source order, when nothing between them is
    conditional), to the one assignment of a module-level name, to every
    ``self.attr = ...`` of a method's class, and, for a parameter of a
    module-level function, to the argument passed at every call site of that
    function in the file. An answer is given only when every path agrees; any
    doubt gives None. One instance per file (per rule instance).
    """

    MAX_DEPTH = 12

    def __init__(self, context: FileContext) -> None:
        self.context = context
        self._module_bindings: Optional[Dict[str, str]] = None
        self._function_bindings: Dict[int, Dict[str, str]] = {}
        self._classes: Optional[Dict[str, cst.ClassDef]] = None
        self._call_sites: Optional[Dict[str, List[Tuple[cst.Call, Frame]]]] = None
        self._top_functions: Optional[Dict[str, cst.FunctionDef]] = None
        #: Names used as values (passed, stored, returned): a function among them has unknown callers.
        self._references: Set[str] = set()

    @property
    def module(self) -> cst.Module:
        module = self.context.stack[0]
        assert isinstance(module, cst.Module)
        return module

    def here(self) -> Frame:
        """The frame of the node being visited."""
        return frame_of(self.context.stack)

    # -- names ---------------------------------------------------------------------------------------

    def _bindings_of(self, scope: Union[cst.FunctionDef, cst.Module]) -> Dict[str, str]:
        if isinstance(scope, cst.Module):
            if self._module_bindings is None:
                self._module_bindings = {}
                collect_bindings(scope.body, self._module_bindings)
            return self._module_bindings
        found = self._function_bindings.get(id(scope))
        if found is None:
            found = self._function_bindings[id(scope)] = {}
            params = scope.params
            for param in (*params.posonly_params, *params.params, *params.kwonly_params):
                found[param.name.value] = LOCAL
            for star in (params.star_arg, params.star_kwarg):
                if isinstance(star, cst.Param):
                    found[star.name.value] = LOCAL
            if isinstance(scope.body, cst.IndentedBlock):
                collect_bindings(scope.body.body, found)
        return found

    def qualified(self, expr: cst.BaseExpression, frame: Frame) -> Optional[str]:
        """The import-resolved name of a Name/Attribute chain evaluated in ``frame`` (None for locals)."""
        text = dotted(expr)
        if text is None:
            return None
        head, _, rest = text.partition(".")
        bound = self._bindings_of(frame.scope).get(head) if isinstance(frame.scope, cst.FunctionDef) else None
        if bound is None:
            bound = self._bindings_of(self.module).get(head)
        if bound is None or bound == LOCAL:
            return None
        return canonical(f"{bound}.{rest}" if rest else bound)

    def local_class(self, expr: cst.BaseExpression, frame: Frame) -> Optional[cst.ClassDef]:
        """The class defined at the top of this file that a Name refers to (not shadowed where it is used)."""
        if not isinstance(expr, cst.Name):
            return None
        if self._classes is None:
            self._classes = {}
            counts: Dict[str, int] = {}
            for statement in self.module.body:
                for name in self._statement_names(statement):
                    counts[name] = counts.get(name, 0) + 1
            for statement in self.module.body:
                if isinstance(statement, cst.ClassDef) and counts.get(statement.name.value) == 1:
                    self._classes[statement.name.value] = statement
        if isinstance(frame.scope, cst.FunctionDef) and expr.value in self._bindings_of(frame.scope):
            return None
        return self._classes.get(expr.value)

    @staticmethod
    def _statement_names(statement: cst.CSTNode) -> List[str]:
        bound: Dict[str, str] = {}
        collect_bindings([statement], bound)
        return list(bound)

    def values(self, expr: cst.BaseExpression, frame: Frame) -> Optional[List[Value]]:
        """The expressions a Name or ``self.attr`` may hold where it is used; None when unknown."""
        if isinstance(expr, cst.Attribute):
            self_name = frame.self_name
            if self_name is None or not (isinstance(expr.value, cst.Name) and expr.value.value == self_name):
                return None
            assert frame.cls is not None
            return self.attribute_values(frame.cls, expr.attr.value)
        if not isinstance(expr, cst.Name):
            return None
        scope = frame.scope
        if isinstance(scope, cst.FunctionDef) and expr.value in self._bindings_of(scope):
            walk = _Bindings(expr.value, expr).run(scope)
            if walk.opaque or walk.use_path is None:
                return None
            if not walk.found:
                return self.parameter_values(scope, expr.value, frame)
            value, path = walk.found[-1]
            if value is None or not _Bindings.unconditional(path, walk.use_path):
                return None
            return [(value, frame)]
        module = self.module
        if isinstance(scope, cst.Module):
            walk = _Bindings(expr.value, expr).run(module)
            if walk.opaque or walk.use_path is None or not walk.found:
                return None
            value, path = walk.found[-1]
            if value is None or not _Bindings.unconditional(path, walk.use_path):
                return None
            return [(value, Frame(module))]
        # A global read from a function: trusted only when the module binds it exactly once.
        walk = _Bindings(expr.value, None).run(module)
        if walk.opaque or len(walk.found) != 1:
            return None
        value, path = walk.found[0]
        if value is None or not _Bindings.unconditional(path):
            return None
        return [(value, Frame(module))]

    def attribute_values(self, cls: cst.ClassDef, attr: str, depth: int = 0) -> Optional[List[Value]]:
        """Every value assigned to ``self.<attr>`` in the methods of ``cls`` (or of a base in this file)."""
        found: List[Value] = []
        for statement in cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ():
            if not isinstance(statement, cst.FunctionDef):
                continue
            frame = Frame(statement, cls)
            self_name = frame.self_name
            if self_name is None:
                continue
            for small in _small_statements(statement):
                targets: Sequence[cst.BaseExpression]
                if isinstance(small, cst.Assign):
                    targets = [t.target for t in small.targets]
                    value: Optional[cst.BaseExpression] = small.value
                elif isinstance(small, (cst.AnnAssign, cst.AugAssign)):
                    targets, value = [small.target], small.value if isinstance(small, cst.AnnAssign) else None
                else:
                    continue
                for target in targets:
                    hit = _is_self_attribute(target, self_name, attr)
                    if hit is None:
                        return None  # a tuple target that may bind it: unknown
                    if hit:
                        if value is None:
                            return None
                        found.append((value, frame))
        if found or depth > 3:
            return found or None
        module_frame = Frame(self.module)
        for base in cls.bases:
            base_class = self.local_class(base.value, module_frame)
            if base_class is not None and base_class is not cls:
                return self.attribute_values(base_class, attr, depth + 1)
        return None

    def parameter_values(self, function: cst.FunctionDef, name: str, frame: Frame) -> Optional[List[Value]]:
        """The arguments passed for parameter ``name`` at every call of a module-level function in this file."""
        if frame.cls is not None or self._function_named(function.name.value) is not function:
            return None
        sites = self.call_sites(function.name.value)
        if function.name.value in self._references:
            return None  # also passed around as a callback: its callers are unknown
        params = function.params
        positional = [p.name.value for p in (*params.posonly_params, *params.params)]
        keyword_ok = name not in [p.name.value for p in params.posonly_params]
        if name not in positional and name not in [p.name.value for p in params.kwonly_params]:
            return None
        index = positional.index(name) if name in positional else None
        found: List[Value] = []
        for call, caller in sites:
            argument: Optional[cst.BaseExpression] = None
            for position, arg in enumerate(call.args):
                if arg.star:
                    return None
                if arg.keyword is None and position == index:
                    argument = arg.value
                elif arg.keyword is not None and keyword_ok and arg.keyword.value == name:
                    argument = arg.value
            if argument is None:
                return None  # the default is used somewhere
            found.append((argument, caller))
        return found or None

    def returned_values(self, func: cst.BaseExpression, frame: Frame) -> Optional[List[Value]]:
        """What a call of ``func`` returns, when it names a module-level function of this file (every
        ``return``'s value, in that function's frame); None if unknown or if one ``return`` is bare."""
        if not isinstance(func, cst.Name):
            return None
        if isinstance(frame.scope, cst.FunctionDef) and func.value in self._bindings_of(frame.scope):
            return None
        function = self._function_named(func.value)
        if function is None:
            return None
        values = _returns(function)
        if not values or any(value is None for value in values):
            return None
        inner = Frame(function)
        return [(value, inner) for value in values if value is not None]

    def _function_named(self, name: str) -> Optional[cst.FunctionDef]:
        if self._top_functions is None:
            counts: Dict[str, int] = {}
            for statement in self.module.body:
                for bound in self._statement_names(statement):
                    counts[bound] = counts.get(bound, 0) + 1
            self._top_functions = {s.name.value: s for s in self.module.body
                                   if isinstance(s, cst.FunctionDef) and counts.get(s.name.value) == 1}
        return self._top_functions.get(name)

    def call_sites(self, name: str) -> List[Tuple[cst.Call, Frame]]:
        """Every ``name(...)`` call in the file, with the frame it is made in."""
        if self._call_sites is None:
            self._call_sites = {}
            self._index(self.module)
        return self._call_sites.get(name, [])

    def _index(self, root: cst.Module) -> None:
        """Every ``name(...)`` call of the module, by name, with its frame (one walk; exact types, no ABC checks)."""
        assert self._call_sites is not None
        stack: List[Tuple[cst.CSTNode, Frame, Optional[cst.ClassDef]]] = [(root, Frame(root), None)]
        while stack:
            node, frame, cls = stack.pop()
            for child in child_nodes(node):
                kind = type(child)
                if kind is cst.Call and type(child.func) is cst.Name:  # type: ignore[attr-defined]
                    self._call_sites.setdefault(child.func.value, []).append((child, frame))  # type: ignore
                elif kind in _VALUE_HOLDERS and type(getattr(child, "value", None)) is cst.Name:
                    self._references.add(child.value.value)  # type: ignore[attr-defined]
                if kind is cst.FunctionDef:
                    stack.append((child, Frame(child, cls), None))  # type: ignore[arg-type]
                elif kind is cst.ClassDef:
                    stack.append((child, frame, child))  # type: ignore[arg-type]
                elif kind is cst.IndentedBlock and cls is not None:
                    stack.append((child, frame, cls))
                else:
                    stack.append((child, frame, None))
        for sites in self._call_sites.values():
            sites.reverse()

    # -- generic resolution --------------------------------------------------------------------------

    def agree(self, values: Optional[List[Value]],
              classify: Callable[[cst.BaseExpression, Frame, int], Optional[_Answer]],
              depth: int) -> Optional[_Answer]:
        """``classify`` of every value, if they all give the same non-None answer."""
        if not values or depth > self.MAX_DEPTH:
            return None
        answers = {classify(value, frame, depth + 1) for value, frame in values}
        if len(answers) != 1:
            return None
        return answers.pop()


def _small_statements(function: cst.FunctionDef) -> Iterator[cst.BaseSmallStatement]:
    """Small statements of a function body, nested blocks included, nested functions and classes not."""
    stack: List[cst.CSTNode] = [function.body]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.SimpleStatementLine) or isinstance(node, cst.SimpleStatementSuite):
            yield from node.body
            continue
        for child in child_nodes(node):
            if not isinstance(child, (cst.FunctionDef, cst.ClassDef)) and isinstance(
                    child, (cst.BaseSuite, cst.BaseCompoundStatement, cst.SimpleStatementLine, cst.Else,
                            cst.ExceptHandler, cst.ExceptStarHandler, cst.Finally, cst.MatchCase)):
                stack.append(child)


def _is_self_attribute(target: cst.BaseExpression, self_name: str, attr: str) -> Optional[bool]:
    """True for ``self.<attr>``; None for a tuple target that contains it; False otherwise."""
    if isinstance(target, cst.Attribute):
        return isinstance(target.value, cst.Name) and target.value.value == self_name and target.attr.value == attr
    if isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            inner = element.value.value if isinstance(element.value, cst.StarredElement) else element.value
            if _is_self_attribute(inner, self_name, attr) is not False:
                return None
    return False


#: Base classes (import-resolved) that make a class an ``nn.Module``.
_MODULE_BASES = frozenset({
    "torch.nn.Module", "pytorch_lightning.LightningModule", "lightning.LightningModule",
    "lightning.pytorch.LightningModule", "pytorch_lightning.core.LightningModule",
    "lightning.pytorch.core.LightningModule", "pytorch_lightning.core.module.LightningModule",
    "lightning.pytorch.core.module.LightningModule",
})
_NOT_MODULES = frozenset({"Parameter", "Buffer", "UninitializedParameter", "UninitializedBuffer"})


def is_torch_module_base(qualified: Optional[str]) -> bool:
    """Whether an import-resolved base class name is ``nn.Module`` or one of torch.nn's module classes."""
    if qualified is None:
        return False
    if qualified in _MODULE_BASES:
        return True
    parts = qualified.split(".")
    return len(parts) == 3 and parts[:2] == ["torch", "nn"] and parts[2][:1].isupper() and parts[2] not in _NOT_MODULES


def is_module_class(tracer: ValueTracer, cls: cst.ClassDef, _depth: int = 0) -> bool:
    """Whether a class derives from ``torch.nn.Module``: directly, through imports, or via classes of this file."""
    frame = Frame(tracer.module)
    for base in cls.bases:
        if base.keyword is not None:
            continue
        if is_torch_module_base(tracer.qualified(base.value, frame)):
            return True
        local = tracer.local_class(base.value, frame)
        if local is not None and local is not cls and _depth < 8 and is_module_class(tracer, local, _depth + 1):
            return True
    return False


# ---- activation fed to a loss that applies it itself -------------------------------------------------

@dataclass(frozen=True)
class FusedLoss:
    """A loss that applies an activation to its input itself, and the spellings of that activation.

    Each activation table maps a spelling to the label a finding shows
    (``softmax``, ``log_softmax``, ``sigmoid``).
    """

    loss_functions: FrozenSet[str]
    loss_modules: FrozenSet[str]
    functions: Dict[str, str]
    methods: Dict[str, str]
    modules: Dict[str, str]


@dataclass(frozen=True)
class ActivationFeed:
    """What a flagged loss call is fed: the activation's label, and the model class it came through, if any."""

    label: str
    via: str = ""


#: Methods that return their receiver's values unchanged (shape, dtype, device, memory layout).
_VALUE_PASSTHROUGH = frozenset({
    "view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "contiguous", "float",
    "double", "half", "bfloat16", "to", "type", "cpu", "cuda", "clone", "view_as", "reshape_as", "movedim",
})
_LOSS = ("loss", "", "")


class ActivationBeforeLoss:
    """Finds calls of a :class:`FusedLoss` whose input is that activation's output (TS010, TS019).

    The loss call is ``F.cross_entropy(x, ...)``, ``nn.CrossEntropyLoss(...)(x, ...)``
    or a call of a name / ``self.attr`` / parameter that holds a loss module. Its
    input is traced (see :class:`ValueTracer`) to the activation: a function
    (``F.softmax``), a tensor method (``x.softmax(1)``), an activation module
    (``nn.Softmax(1)(x)``, a name holding one), an ``nn.Sequential`` ending in one,
    or a model class of this file whose ``forward`` returns the activation on every
    ``return``. Shape-only methods (``view``, ``float``...) and indexing are
    looked through. Anything else, or any doubt, stops the trace.
    """

    def __init__(self, context: FileContext, loss: FusedLoss) -> None:
        self.context = context
        self.loss = loss
        self.tracer = ValueTracer(context)
        self._forward: Dict[int, Optional[Tuple[str, str]]] = {}
        self._loss_names: Optional[Set[str]] = None

    def feed(self, call: cst.Call) -> Optional[ActivationFeed]:
        """The activation feeding ``call``'s input, when ``call`` is the loss; else None."""
        frame: Optional[Frame] = None
        if self.context.qualified_name(call.func) not in self.loss.loss_functions:
            if not self._may_be_loss(call.func):
                return None
            frame = self.tracer.here()
            if self.called(call.func, frame, 0) != _LOSS:
                return None
        argument = _input_argument(call)
        if argument is None:
            return None
        found = self.label(argument, frame or self.tracer.here(), 0)
        return ActivationFeed(*found) if found is not None else None

    def _may_be_loss(self, func: cst.BaseExpression) -> bool:
        """Cheap pre-filter: is ``func`` a name that a loss module is assigned or passed to somewhere in the file?"""
        if isinstance(func, cst.Call):
            return True
        name = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) \
            else None
        if name is None:
            return False
        if self._loss_names is None:
            shorts = {q.rsplit(".", 1)[-1] for q in self.loss.loss_modules}
            mentioned = any(short in self.context.source for short in shorts)
            self._loss_names = self._collect_loss_names() if mentioned else set()
        return name in self._loss_names

    def _collect_loss_names(self) -> Set[str]:
        """Names (last component) assigned or passed a value whose code mentions a loss module class."""
        module = self.tracer.module
        short = {q.rsplit(".", 1)[-1] for q in self.loss.loss_modules}
        names: Set[str] = set()
        mentions: Dict[int, bool] = {}

        def lossy(value: cst.BaseExpression) -> bool:
            if _terminal_name(value) in names:
                return True
            if id(value) not in mentions:
                mentions[id(value)] = any(type(n) is cst.Name and n.value in short  # type: ignore[attr-defined]
                                          for n in walk_nodes(value))
            return mentions[id(value)]

        holders: List[Tuple[cst.BaseExpression, cst.BaseExpression]] = []
        for node in walk_nodes(module):
            kind = type(node)
            if kind is cst.Assign:
                holders.extend((t.target, node.value) for t in node.targets)  # type: ignore[attr-defined]
            elif kind is cst.AnnAssign and node.value is not None:  # type: ignore[attr-defined]
                holders.append((node.target, node.value))  # type: ignore[attr-defined]
        functions = [f for f in module.body if isinstance(f, cst.FunctionDef)]
        for _ in range(4):  # aliases and parameters of parameters
            before = len(names)
            for target, value in holders:
                text = _terminal_name(target)
                if text is not None and text not in names and lossy(value):
                    names.add(text)
            for function in functions:
                params = [p.name.value for p in (*function.params.posonly_params, *function.params.params)]
                for call, _frame in self.tracer.call_sites(function.name.value):
                    for position, arg in enumerate(call.args):
                        param = arg.keyword.value if arg.keyword is not None else \
                            params[position] if position < len(params) and not arg.star else None
                        if param is not None and param not in names and lossy(arg.value):
                            names.add(param)
            if len(names) == before:
                break
        return names

    # -- what a callee returns when called -------------------------------------------------------------

    def called(self, callee: cst.BaseExpression, frame: Frame, depth: int) -> Optional[Tuple[str, str, str]]:
        """``("loss", "", "")`` if calling ``callee`` computes the loss; ``("act", label, via)`` if it returns
        the activation's output; else None."""
        if depth > ValueTracer.MAX_DEPTH:
            return None
        if isinstance(callee, (cst.Name, cst.Attribute)):
            if isinstance(callee, cst.Attribute) and self.tracer.qualified(callee, frame) is not None:
                return None  # an imported function (F.relu), not an instance
            return self.tracer.agree(self.tracer.values(callee, frame), self._instance, depth)
        if isinstance(callee, cst.Call):
            return self._instance(callee, frame, depth)
        return None

    def _instance(self, expr: cst.BaseExpression, frame: Frame, depth: int) -> Optional[Tuple[str, str, str]]:
        """Like :meth:`called`, for an expression that evaluates to the callable (a constructor call, a name)."""
        if depth > ValueTracer.MAX_DEPTH:
            return None
        if not isinstance(expr, cst.Call):
            return self.called(expr, frame, depth + 1) if isinstance(expr, (cst.Name, cst.Attribute)) else None
        target = receiver(expr)
        if target is not None and method_name(expr) in _SAME_MODULE_METHODS \
                and self.tracer.qualified(expr.func, frame) is None:
            return self._instance(target, frame, depth + 1)
        qualified = self.tracer.qualified(expr.func, frame)
        if qualified is not None:
            if qualified in self.loss.loss_modules:
                return _LOSS
            label = self.loss.modules.get(qualified)
            if label is not None:
                return ("act", label, "")
            if qualified == "torch.nn.Sequential":
                layers = [a.value for a in expr.args if a.keyword is None and not a.star]
                if layers and len(layers) == len(expr.args):
                    last = self._instance(layers[-1], frame, depth + 1)
                    if last is not None and last[0] == "act":
                        return ("act", last[1], "nn.Sequential")
            return None
        cls = self.tracer.local_class(expr.func, frame)
        if cls is None:  # a factory function of this file: what it returns
            return self.tracer.agree(self.tracer.returned_values(expr.func, frame), self._instance, depth)
        returned = self.forward_label(cls, depth + 1)
        return ("act", returned[0], cls.name.value) if returned is not None else None

    def forward_label(self, cls: cst.ClassDef, depth: int) -> Optional[Tuple[str, str]]:
        """The activation every ``return`` of the class's ``forward`` returns (a module class of this file)."""
        key = id(cls)
        if key in self._forward:
            return self._forward[key]
        self._forward[key] = None  # breaks cycles
        result: Optional[Tuple[str, str]] = None
        if is_module_class(self.tracer, cls):
            forward = _method(cls, "forward")
            if forward is not None:
                frame = Frame(forward, cls)
                answers = {self.label(value, frame, depth + 1) for value in _returns(forward)}
                if len(answers) == 1:
                    result = answers.pop()
            elif _method(cls, "__call__") is None:
                module_frame = Frame(self.tracer.module)
                for base in cls.bases:
                    local = self.tracer.local_class(base.value, module_frame)
                    if local is not None and local is not cls:
                        result = self.forward_label(local, depth + 1)
                        break
        self._forward[key] = result
        return result

    # -- what produced a value ----------------------------------------------------------------------------

    def label(self, expr: Optional[cst.BaseExpression], frame: Frame, depth: int) -> Optional[Tuple[str, str]]:
        """``(label, via)`` when ``expr`` is the activation's output; else None."""
        if expr is None or depth > ValueTracer.MAX_DEPTH:
            return None
        if isinstance(expr, cst.Call):
            qualified = self.tracer.qualified(expr.func, frame)
            if qualified is not None:
                found = self.loss.functions.get(qualified)
                return (found, "") if found is not None else None
            name = method_name(expr)
            target = receiver(expr)
            if name is not None and target is not None:
                root = target
                while isinstance(root, (cst.Attribute, cst.Subscript)):
                    root = root.value
                via_self = isinstance(root, cst.Name) and root.value == frame.self_name
                if name in self.loss.methods and not via_self:
                    return (self.loss.methods[name], "")
                if name in _VALUE_PASSTHROUGH:
                    return self.label(target, frame, depth + 1)
            result = self.called(expr.func, frame, depth + 1)
            if result is None:  # a helper function of this file: what it returns
                return self.tracer.agree(self.tracer.returned_values(expr.func, frame), self.label, depth)
            return (result[1], result[2]) if result[0] == "act" else None
        if isinstance(expr, cst.Subscript):
            return self.label(expr.value, frame, depth + 1)
        if isinstance(expr, cst.Name):
            return self.tracer.agree(self.tracer.values(expr, frame), self.label, depth)
        return None


def _input_argument(call: cst.Call) -> Optional[cst.BaseExpression]:
    """The loss input: the first positional argument, or ``input=``."""
    for arg in call.args:
        if arg.star:
            return None
        if arg.keyword is None:
            return arg.value
        if arg.keyword.value == "input":
            return arg.value
    return None


def _method(cls: cst.ClassDef, name: str) -> Optional[cst.FunctionDef]:
    if not isinstance(cls.body, cst.IndentedBlock):
        return None
    found = None
    for statement in cls.body.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value == name:
            found = statement
    return found


def _returns(function: cst.FunctionDef) -> List[Optional[cst.BaseExpression]]:
    """The values of a function's ``return`` statements (None for a bare return)."""
    return [s.value for s in _small_statements(function) if isinstance(s, cst.Return)]


def _terminal_name(expr: cst.BaseExpression) -> Optional[str]:
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    return None

# ---------------------------------------------------------------------------------------
# Loss tensors through one function body (TS011 loss-accumulated-with-graph, TS018
# tensor-logged-as-scalar): which names hold a loss tensor where, which are
# backpropagated, and which names an expression's value still carries.

import re  # noqa: E402  (appended section)
from dataclasses import dataclass  # noqa: E402
from typing import Dict, FrozenSet, List, Optional, Set, Tuple  # noqa: E402

#: ``torch.nn.functional`` losses whose name does not end in ``_loss``.
_FUNCTIONAL_LOSSES = frozenset({"cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits",
                                "kl_div"})
#: What people call a loss module or function: ``criterion(out, y)``, ``self.loss_fn(out, y)``, ``ce_crit``.
#: Not ``compute_loss`` / ``val_loss(...)``: helpers named so often return a Python number.
_LOSS_CALLABLE = re.compile(r"^(?:\w+_)?(?:criterion|crit|loss_?fn|loss_?func(?:tion)?)$", re.IGNORECASE)
#: Tensor methods whose result still holds the receiver's autograd graph.
GRAPH_KEEPING_METHODS = frozenset({
    "mean", "sum", "squeeze", "unsqueeze", "reshape", "view", "flatten", "float", "double", "half", "bfloat16",
    "to", "cpu", "cuda", "clone", "abs", "contiguous", "mul", "div", "add", "sub",
})
#: Calls that run a backward pass through their receiver or arguments.
BACKWARD_METHODS = frozenset({"backward", "manual_backward"})
_BACKWARD_FUNCTIONS = frozenset({"torch.autograd.backward"})
#: Calls after which the graph of what they mention is in use (never "kept for nothing").
_GRAPH_USES = frozenset({"torch.autograd.grad", "torch.autograd.backward"})
_SKIPPED_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)


def expression_text(node: cst.CSTNode) -> Optional[str]:
    """Dotted text of a name chain (``self.total``), or the code of a subscript (``stats['loss']``)."""
    text = dotted(node)  # type: ignore[arg-type]
    if text is not None:
        return text
    if isinstance(node, cst.Subscript):
        return cst.Module([]).code_for_node(node)
    return None


def _unwrap_same_object(call: cst.BaseExpression) -> cst.BaseExpression:
    """``nn.CrossEntropyLoss()`` for ``nn.CrossEntropyLoss().to(device)``."""
    while isinstance(call, cst.Call) and method_name(call) in ("to", "cuda", "cpu"):
        call = call.func.value  # type: ignore[union-attr]
    return call


def _is_loss_class(func: cst.BaseExpression) -> bool:
    text = dotted(func)
    last = text.rpartition(".")[2] if text else ""
    return last.endswith("Loss") and last[:1].isupper()


def loss_module_names(module: cst.Module) -> FrozenSet[str]:
    """Dotted targets bound anywhere in the file to a loss module: ``crit = nn.CrossEntropyLoss()``,
    ``self.criterion = FocalLoss(...)``."""
    names: Set[str] = set()
    stack: List[cst.CSTNode] = [module]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Assign):
            value = _unwrap_same_object(node.value)
            if isinstance(value, cst.Call) and _is_loss_class(value.func):
                names.update(t for t in (dotted(target.target) for target in node.targets) if t)
        stack.extend(child_nodes(node))
    return frozenset(names)


@dataclass(eq=False)
class _Binding:
    name: str
    #: Position just after the binding statement (its value is read before it).
    index: int
    value: Optional[cst.BaseExpression]
    augmented: bool = False
    loss: Optional[bool] = None  # computed lazily


@dataclass(eq=False)
class BackwardCall:
    call: cst.Call
    index: int
    #: Enclosing nodes, outermost (the scope) first.
    ancestors: Tuple[cst.CSTNode, ...]
    #: Names and dotted / subscript texts read by the call (receiver and arguments).
    mentions: FrozenSet[str]


class LossFlow:
    """One function body (or module-level code) in source order: bindings, backward calls, loss tensors.

    ``holds_loss(name_node)`` answers whether a name, where it is read, holds a
    loss tensor: it was last bound to a loss (``criterion(...)``,
    ``F.cross_entropy(...)``, ``outputs.loss``, arithmetic on a loss), or it is
    backpropagated while bound to that same value. A loss computed under
    ``no_grad`` is a loss tensor too (without a graph): ask ``in_no_grad`` where
    the graph matters. Nested functions and classes are not entered (they are
    scopes of their own).
    """

    def __init__(self, context: FileContext, scope: cst.CSTNode, loss_modules: FrozenSet[str],
                 collect: Tuple[type, ...] = ()) -> None:
        self.context = context
        self._loss_modules = loss_modules
        self._collect = collect
        self._counter = 0
        self._index: Dict[int, int] = {}
        self._bindings: Dict[str, List[_Binding]] = {}
        self.backward_calls: List[BackwardCall] = []
        self._graph_uses: Set[str] = set()
        self._graph_reach: Optional[FrozenSet[str]] = None
        #: (node, its ancestors outermost first) for every node of a ``collect`` type, in source order.
        self.collected: List[Tuple[cst.CSTNode, Tuple[cst.CSTNode, ...]]] = []
        self._path: List[cst.CSTNode] = [scope]
        if isinstance(scope, cst.FunctionDef):
            params = scope.params
            for param in (*params.posonly_params, *params.params, *params.kwonly_params):
                self._bind(param.name.value, None)
            self._walk(scope.body)
        else:
            for statement in child_nodes(scope):
                self._walk(statement)

    # -- the walk ----------------------------------------------------------------------

    def _tick(self) -> int:
        self._counter += 1
        return self._counter

    def _bind(self, name: str, value: Optional[cst.BaseExpression], augmented: bool = False) -> None:
        self._bindings.setdefault(name, []).append(_Binding(name, self._tick(), value, augmented))

    def _bind_target(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression]) -> None:
        if isinstance(target, cst.Name):
            self._bind(target.value, value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._bind_target(element.value, None)
        elif isinstance(target, cst.StarredElement):
            self._bind_target(target.value, None)

    def _walk(self, node: cst.CSTNode) -> None:
        self._index[id(node)] = self._tick()
        if isinstance(node, self._collect):
            self.collected.append((node, tuple(self._path)))
        if isinstance(node, cst.Call):
            self._note_call(node)
        self._path.append(node)
        try:
            if isinstance(node, cst.Assign):
                self._walk(node.value)
                for target in node.targets:
                    self._walk(target.target)
                for target in node.targets:
                    self._bind_target(target.target, node.value)
            elif isinstance(node, (cst.AugAssign, cst.AnnAssign)):
                if node.value is not None:
                    self._walk(node.value)
                self._walk(node.target)
                if isinstance(node.target, cst.Name) and node.value is not None:
                    self._bind(node.target.value, node.value, augmented=isinstance(node, cst.AugAssign))
            elif isinstance(node, cst.For):
                self._walk(node.iter)
                self._bind_target(node.target, None)
                self._walk(node.body)
                if node.orelse is not None:
                    self._walk(node.orelse)
            elif isinstance(node, cst.NamedExpr):
                self._walk(node.value)
                self._bind_target(node.target, node.value)
            else:
                for child in child_nodes(node):
                    if isinstance(child, _SKIPPED_SCOPES):
                        if isinstance(child, (cst.FunctionDef, cst.ClassDef)):
                            self._bind(child.name.value, None)
                        continue
                    self._walk(child)
                if isinstance(node, cst.WithItem) and node.asname is not None:
                    self._bind_target(node.asname.name, None)  # type: ignore[arg-type]
                elif isinstance(node, cst.ExceptHandler) and node.name is not None:
                    self._bind_target(node.name.name, None)  # type: ignore[arg-type]
        finally:
            self._path.pop()

    def _note_call(self, call: cst.Call) -> None:
        name = method_name(call)
        qualified = None if name in BACKWARD_METHODS else self.context.qualified_name(call.func)
        if name in BACKWARD_METHODS or qualified in _BACKWARD_FUNCTIONS:
            self.backward_calls.append(BackwardCall(call, self._counter, tuple(self._path), self.mentions(call)))
        if name in BACKWARD_METHODS or qualified in _GRAPH_USES:
            self._graph_uses |= self.mentions(call)

    # -- questions ---------------------------------------------------------------------

    def index(self, node: cst.CSTNode) -> int:
        """Position of ``node`` in source order (-1 for a node the walk did not enter)."""
        return self._index.get(id(node), -1)

    @staticmethod
    def mentions(node: cst.CSTNode) -> FrozenSet[str]:
        """Every name, dotted chain and subscript text read inside ``node``."""
        found: Set[str] = set()
        stack = [node]
        while stack:
            current = stack.pop()
            if isinstance(current, (cst.Name, cst.Attribute, cst.Subscript)):
                text = expression_text(current)
                if text is not None:
                    found.add(text)
            if not isinstance(current, cst.Name):
                stack.extend(child_nodes(current))
        return frozenset(found)

    def backpropagated(self, text: str) -> bool:
        """Whether ``text`` (a name, ``self.total``, ``stats['loss']``) is read by a backward / autograd call,
        directly or through names bound from it (``mean = total / n`` then ``mean.backward()``)."""
        if self._graph_reach is None:
            reach = set(self._graph_uses)
            grown = True
            while grown:
                grown = False
                for name, bindings in self._bindings.items():
                    if name not in reach:
                        continue
                    for binding in bindings:
                        if binding.value is not None and not self.mentions(binding.value) <= reach:
                            reach |= self.mentions(binding.value)
                            grown = True
            self._graph_reach = frozenset(reach)
        return text in self._graph_reach

    def _region(self, name: str, at: int) -> Tuple[Optional[_Binding], int, int]:
        """The binding of ``name`` visible at position ``at``, and the span until the next binding."""
        start, end, current = -1, 1 << 60, None
        for binding in self._bindings.get(name, ()):
            if binding.index <= at:
                start, current = binding.index, binding
            else:
                end = binding.index
                break
        return current, start, end

    def backward_calls_of(self, name: cst.Name) -> List[BackwardCall]:
        """Backward calls that read ``name`` while it holds the value it has at this read."""
        _, start, end = self._region(name.value, self.index(name))
        return [call for call in self.backward_calls if start < call.index < end and name.value in call.mentions]

    def holds_loss(self, name: cst.Name) -> bool:
        """Whether the name holds a loss tensor where it is read."""
        at = self.index(name)
        if at < 0:
            return False
        binding, _, _ = self._region(name.value, at)
        return bool(binding is not None and self._binding_is_loss(binding)) or bool(self.backward_calls_of(name))

    def _binding_is_loss(self, binding: _Binding) -> bool:
        if binding.loss is None:
            binding.loss = False  # no cycles: values only read earlier bindings
            if binding.value is not None:
                if binding.augmented:
                    previous, _, _ = self._region(binding.name, binding.index - 1)
                    binding.loss = (previous is not None and self._binding_is_loss(previous)) \
                        or self.is_loss_value(binding.value)
                else:
                    binding.loss = self.is_loss_value(binding.value)
        return binding.loss

    def is_loss_call(self, call: cst.Call) -> bool:
        """``F.cross_entropy(...)``, ``criterion(...)``, ``self.loss_fn(...)``, ``nn.MSELoss()(...)``,
        a call of a name bound to a loss module in this file."""
        func = call.func
        if isinstance(func, cst.Call):  # ``nn.MSELoss()(out, y)``
            constructed = _unwrap_same_object(func)
            return isinstance(constructed, cst.Call) and _is_loss_class(constructed.func)
        text = dotted(func)
        if text is None:
            return False
        qualified = self.context.qualified_name(func)
        if qualified is not None and qualified.startswith("torch.nn.functional."):
            last = qualified.rpartition(".")[2]
            return last.endswith("_loss") or last in _FUNCTIONAL_LOSSES
        if qualified is not None and not qualified.startswith("torch."):
            return False  # sklearn.metrics.log_loss and friends return numbers
        return text in self._loss_modules or bool(_LOSS_CALLABLE.match(text.rpartition(".")[2]))

    def is_loss_value(self, expression: cst.BaseExpression) -> bool:
        """Whether ``expression`` evaluates to a loss tensor (``loss``, ``loss * n``, ``criterion(out, y).mean()``)."""
        if isinstance(expression, cst.Call):
            if self.is_loss_call(expression):
                return True
            target = receiver(expression)
            return target is not None and method_name(expression) in GRAPH_KEEPING_METHODS \
                and self.is_loss_value(target)
        if isinstance(expression, cst.Name):
            return self.holds_loss(expression)
        if isinstance(expression, cst.Attribute):
            return expression.attr.value == "loss"  # ``outputs.loss`` (a HuggingFace ModelOutput)
        if isinstance(expression, cst.BinaryOperation):
            return self.is_loss_value(expression.left) or self.is_loss_value(expression.right)
        if isinstance(expression, cst.UnaryOperation):
            return self.is_loss_value(expression.expression)
        return False

    def graph_sources(self, expression: cst.BaseExpression, through_detach: bool = False) -> List[cst.Name]:
        """Names whose tensor the value of ``expression`` still is or holds the graph of: ``loss``,
        ``loss * n``, ``loss.mean()``; with ``through_detach``, also ``loss.detach()`` / ``loss.data``
        (a tensor still, without the graph). Never ``loss.item()``, ``float(loss)``, ``loss.tolist()``."""
        if isinstance(expression, cst.Name):
            return [expression]
        if isinstance(expression, cst.Call):
            target = receiver(expression)
            method = method_name(expression)
            if target is not None and (method in GRAPH_KEEPING_METHODS or through_detach and method == "detach"):
                return self.graph_sources(target, through_detach)
            return []
        if isinstance(expression, cst.Attribute) and through_detach and expression.attr.value == "data":
            return self.graph_sources(expression.value, through_detach)
        if isinstance(expression, cst.BinaryOperation):
            return self.graph_sources(expression.left, through_detach) \
                + self.graph_sources(expression.right, through_detach)
        if isinstance(expression, cst.UnaryOperation):
            return self.graph_sources(expression.expression, through_detach)
        return []


# ---------------------------------------------------------------------------------------
# The statement that binds a name where it is used (TS012 to-device-result-discarded): a
# loop target, a with-target, an assignment... Same reaching rules as ValueTracer.values.

def reaching_binding(tracer: ValueTracer, name: cst.Name, frame: Frame) -> Optional[cst.CSTNode]:
    """The node that last binds ``name`` before this use of it in its function (or module): an
    ``Assign``, a ``For`` (its target), a ``WithItem``...; None for a parameter, a global, or when
    a conditional binding may come between them."""
    scope = frame.scope
    if isinstance(scope, cst.FunctionDef) and name.value not in tracer._bindings_of(scope):
        return None
    walk = _Bindings(name.value, name).run(scope)
    if walk.opaque or walk.use_path is None or not walk.found:
        return None
    _value, path = walk.found[-1]
    if not path or not _Bindings.unconditional(path, walk.use_path):
        return None
    return path[-1]


def enclosing_scope(context: FileContext) -> cst.CSTNode:
    """The innermost function (or the module) around the node being visited.

    Rules that analyse one function body at a time (TS011, TS015, TS018) note in
    ``visit_Call`` which scopes hold a call worth it, and analyse only those in
    ``leave_FunctionDef`` / ``leave_Module``.
    """
    return next(n for n in reversed(context.stack) if isinstance(n, (cst.FunctionDef, cst.Module)))
