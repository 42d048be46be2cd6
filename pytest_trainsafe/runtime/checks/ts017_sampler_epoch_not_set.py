"""TS017 sampler-epoch-not-set at runtime: a training DistributedSampler replays the same order.

What is watched (calls of ``DistributedSampler.__iter__`` and ``DataLoader.__iter__``,
through the shared ``torchutil.on_call``; torch's global optimizer step hook):

* each iteration of a shuffling ``DistributedSampler`` draws the permutation
  seeded by ``seed + epoch``: the *order* is identified by (dataset, seed, epoch,
  number of replicas, rank, drop_last). A new sampler built every epoch with
  epoch 0 draws the same order as the old one, and is caught the same way;
* the *window* of an iteration: from the sampler's ``__iter__`` to the start of
  the next iteration of any DataLoader (or of the sampler itself). An order is
  *trained on* if an optimizer stepped during one of its windows. An evaluation
  loader iterated after the training loop steps nothing in its window.

An order drawn again after it was trained on is the finding, reported at the
user's line that iterates (the ``for`` over the loader). Not reported: a sampler
with ``shuffle=False`` (its order is fixed by design), ``set_epoch`` called
(another epoch, another order), a sampler used once, a shuffling evaluation
sampler iterated every epoch without training steps in its window.
"""

from __future__ import annotations

from typing import Any, Optional, Set, Tuple

from ..events import Events
from ..hooks import HookSet
from ..monitor import RuntimeCheck

_Order = Tuple[int, int, int, int, int, bool]


def _order(sampler: Any) -> _Order:
    return (id(sampler.dataset), int(sampler.seed), int(sampler.epoch), int(sampler.num_replicas),
            int(sampler.rank), bool(sampler.drop_last))


class SamplerEpochNotSet(RuntimeCheck):
    CODE = "TS017"

    def install(self, events: Events, hooks: HookSet) -> None:
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        from ..torchutil import on_call

        self._events = events
        self._drawn: Set[_Order] = set()
        self._trained: Set[_Order] = set()
        #: The order whose window is open, and the step count when it opened.
        self._window: Optional[Tuple[_Order, int]] = None
        events.count_steps()

        on_call(hooks, DistributedSampler, "__iter__", lambda args, kwargs: self._on_sampler(args[0]))
        on_call(hooks, DataLoader, "__iter__", lambda args, kwargs: self._close_window())

    def _close_window(self) -> None:
        if self._window is not None:
            order, steps = self._window
            if self._events.steps_done > steps:
                self._trained.add(order)
            self._window = None

    def _on_sampler(self, sampler: Any) -> None:
        self._close_window()
        if not sampler.shuffle:
            return
        order = _order(sampler)
        if order in self._drawn and order in self._trained:
            self.report(f"the shuffle of epoch {sampler.epoch} is replayed: "
                        f"set_epoch() was not called since the last pass over this data")
        self._drawn.add(order)
        self._window = (order, self._events.steps_done)
