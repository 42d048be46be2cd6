"""Syntactic patterns several rules share: method calls, receivers, no-grad contexts.

Add a helper here (append at the end) only when a second rule needs it; a
helper used by one rule stays in that rule's module.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import libcst as cst

from .names import dotted
from .tree import walk_nodes
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


#: Method chains that return the same module (``Net().to(device).eval()``).
_SAME_MODULE_METHODS = frozenset({"to", "cuda", "cpu", "float", "double", "half", "bfloat16", "train", "eval",
                                  "requires_grad_", "to_empty"})
