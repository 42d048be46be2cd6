"""Train / eval mode of models through a file (TS006 eval-mode-missing, TS007 train-mode-not-restored).

A rule feeds a ModeFlow from its visit_* methods and asks its questions in
leave_Module, when the whole file has been seen.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import libcst as cst

from .names import dotted
from .names import bound_names
from .patterns import _SAME_MODULE_METHODS, in_no_grad, method_name, receiver
from .rule import FileContext, LintRule
from .tree import child_nodes

# ---------------------------------------------------------------------------------------
# Train / eval mode of models, and where calls sit in a file (TS006 eval-mode-missing,
# TS007 train-mode-not-restored). A rule feeds a ModeFlow from its visit_Call /
# visit_Assign / visit_FunctionDef / visit_ClassDef / visit_Name / visit_Attribute and
# asks its questions in leave_Module, when the whole file has been seen.


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

    # -- local functions and their callers ------------------------------------------------

    def calls_local(self, site: CallSite) -> bool:
        """Whether the call calls a function of this file (``helper(...)``, ``self.helper(...)``)."""
        return site.name in self.functions and (site.method is None or site.receiver in ("self", "cls"))

    def local_closure(self, predicate: Callable[[CallSite, Set[str]], bool]) -> Set[str]:
        """Names of the local functions with a call satisfying ``predicate(site, found_so_far)``, directly
        or through other such local functions (a fixed point over the file's call graph)."""
        found: Set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, definitions in self.functions.items():
                if name not in found and any(predicate(s, found) for d in definitions for s in self.sites_in(d)):
                    found.add(name)
                    changed = True
        return found

    def model_at_callers(self, function: cst.FunctionDef,
                         model: str) -> Optional[List[Tuple[CallSite, Optional[str]]]]:
        """Each call of ``function`` in this file, with what it names ``model`` there: the dotted text of
        the argument bound to the parameter ``model``, ``self.X`` itself for a method called on ``self``,
        else None. None when the callers are unknown (see :meth:`callers`): a rule following a model up
        its callers judges each of them by the model's name in that caller."""
        callers = self.callers(function)
        if not callers:
            return None
        position = self.parameter_index(function, model) if "." not in model else None
        passed: List[Tuple[CallSite, Optional[str]]] = []
        for caller in callers:
            if position is not None:
                value = self.argument(caller.call, position)
                text = dotted(value) if value is not None else None
            elif model.startswith("self.") and caller.receiver == "self":
                text = model
            else:
                text = None
            passed.append((caller, text))
        return passed


def is_test_function(scope: cst.CSTNode, path: str) -> bool:
    """A pytest test: a ``test*`` function in a test file (``test_*.py``, ``*_test.py``, ``conftest.py``),
    or one without parameters anywhere. Its forwards and steps are checks (a test may train in eval mode
    on purpose, for determinism), not an evaluation or a training pass."""
    if not isinstance(scope, cst.FunctionDef) or not scope.name.value.startswith("test"):
        return False
    name = os.path.basename(path)
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py" or not scope.params.params


class ModeFlowRule(LintRule):
    """A rule built on the file's shared :class:`ModeFlow` (``self._flow``), with the ``visit_*`` methods
    that feed it. Each rule keeps its own ``visit_Call``: it records the call, then looks at it."""

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self._flow = ModeFlow.shared(context)

    def visit_Assign(self, node: cst.Assign) -> None:
        self._flow.record_assign(node)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._flow.record_assign(node)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._flow.record_function(node)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._flow.record_class(node)

    def visit_Name(self, node: cst.Name) -> None:
        self._flow.record_name(node)
