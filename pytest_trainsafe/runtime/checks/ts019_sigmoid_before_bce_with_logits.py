"""TS019 sigmoid-before-bce-with-logits at runtime: the logits form of binary cross-entropy fed a sigmoid.

What is watched: every call of ``torch.nn.functional.binary_cross_entropy_with_logits``
(``nn.BCEWithLogitsLoss`` calls it too). The input's ``grad_fn``, looking through a few
view / dtype / indexing nodes, is ``SigmoidBackward0``: that is the finding, exact
whenever autograd recorded the input. As in TS010, ``grad_fn`` is read on each of
the first ``_FIRST_CALLS`` calls of a test, then on every ``_EVERY``-th.

Unlike TS010 there is no value check under ``no_grad``: a batch of real logits that
all fall in (0, 1) is common (a freshly initialised model, a single-sample batch), so
values cannot tell a sigmoid output from logits.
"""

from __future__ import annotations

import torch

from ..events import Events
from ..hooks import HookSet
from ..monitor import RuntimeCheck
from ..sampling import sampled
from ..torchutil import call_argument, on_call, produced_by

_NODES = frozenset({"SigmoidBackward0"})
_FIRST_CALLS = 8
_EVERY = 8


class SigmoidBeforeBceWithLogitsCheck(RuntimeCheck):
    """Reports a binary_cross_entropy_with_logits call whose input comes from sigmoid."""

    CODE = "TS019"

    def install(self, events: Events, hooks: HookSet) -> None:
        self._calls = 0
        on_call(hooks, torch.nn.functional, "binary_cross_entropy_with_logits", self._on_loss)

    def _on_loss(self, args: tuple, kwargs: dict) -> None:
        self._calls += 1
        if sampled(self._calls, _FIRST_CALLS, _EVERY) and \
                produced_by(call_argument(args, kwargs, 0, "input"), _NODES) is not None:
            self.report()
