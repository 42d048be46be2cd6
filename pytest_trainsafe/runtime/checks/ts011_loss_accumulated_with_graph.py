"""TS011 loss-accumulated-with-graph at runtime: the graphs of earlier steps' losses stay alive.

What is watched:

* after every ``backward()`` (the shared wrapper in ``torchutil.on_backward``) of a
  *tracked* generation, the root's ``grad_fn`` gets a do-nothing hook whose
  callable only the node holds: when the node is freed, the callable is freed,
  so a weak reference to it says whether that loss's graph is still alive,
  without keeping anything alive. A *generation* is the group of backward calls
  between two optimizer steps (a step begins one: the backwards of a closure run
  inside ``step()`` belong to that step; or each backward call alone, in a test
  where no optimizer ever stepped: a hand-written SGD update). The first
  ``_GENERATIONS`` + 1 generations are tracked, then every ``_EVERY``-th:
  anything attached to a graph makes its backward about 15 us slower, several
  times the rest of this check. One entry per distinct root node, at most a few per
  generation, for the last few tracked generations only (older hooks are removed);
* at each tracked generation's backward, the losses backpropagated in each of the
  previous ``_GENERATIONS`` tracked generations. In a normal loop they are dead
  (``loss`` was rebound to the new loss). If at least one is alive in *every*
  one of them, something is holding every step's loss: an accumulator
  (``total += loss`` chains them through ``AddBackward0`` nodes) or a list.

Only then (the rare path) is the user's stack searched: locals of the calling
frames (and attributes of their ``self``) that hold one of the live graphs; the
accumulation statement is found in that frame's bytecode (``total += ...``,
``self.total = self.total + ...``, ``losses.append(...)``) and reported there,
the line the static rule reports. Otherwise the finding is reported at the
``backward()`` call, but only when generations are optimizer steps: without an
optimizer, several backward calls per iteration (one per loss, each loss in its
own variable) would look the same, so there the accumulator must be found and
must hold at least two of the live losses.

Not reported: one previous loss kept (``prev_loss = loss``), the same loss
backpropagated again (``retain_graph``: a root seen before is not tracked
again), roots of ``create_graph=True`` passes and non-scalar roots (not a loss),
accumulation without backward of the parts (the sum is the root: it dies when
reset), anything before ``_GENERATIONS`` + 1 optimizer steps. An accumulation
that starts after the first tracked generations is found up to
(``_GENERATIONS`` + 1) * ``_EVERY`` steps later.
"""

from __future__ import annotations

import dis
import sys
import weakref
from collections import deque
from types import CodeType, FrameType
from typing import Any, Deque, List, Optional, Set, Tuple

from ..events import Events
from ..hooks import HookSet
from ..location import Location
from ..monitor import RuntimeCheck
from ..sampling import previous_sampled, sampled

#: How many consecutive previous optimizer steps must each still hold a loss graph.
_GENERATIONS = 3
#: After the first ``_GENERATIONS`` + 1 generations, one generation in this many is tracked.
_EVERY = 8
#: Roots tracked per optimizer step (several backward calls per step: GANs, accumulation).
_PER_GENERATION = 4
#: Rare path bounds: user frames searched, values looked at per frame, graph nodes walked per value.
_FRAMES, _VALUES, _NODES = 4, 256, 64


class _Sentinel:
    """A do-nothing backward hook; only the graph node holds it, so it dies with the node."""

    __slots__ = ("__weakref__",)

    def __call__(self, *args: Any) -> None:
        return None


def _previous_tracked(generation: int) -> int:
    """The tracked generation before ``generation`` (0 if none)."""
    return previous_sampled(generation, _GENERATIONS + 1, _EVERY)


class _Root:
    __slots__ = ("sequence", "alive", "handle")

    def __init__(self, sequence: int, alive: "weakref.ref[_Sentinel]", handle: Any) -> None:
        self.sequence = sequence
        self.alive = alive
        self.handle = handle


class LossAccumulatedWithGraph(RuntimeCheck):
    CODE = "TS011"

    def install(self, events: Events, hooks: HookSet) -> None:
        from ..torchutil import on_backward

        self._events = events
        self._generation = 0
        #: Optimizer step events (begun + done) when the current generation began.
        self._step_events = 0
        #: (generation, roots backpropagated in it), newest last.
        self._generations: Deque[Tuple[int, List[_Root]]] = deque()
        self._sequences: Set[int] = set()
        self._done = False
        # A step also begins a generation: a closure (LBFGS) runs its backwards inside step(), and
        # its evaluations of one step, even the first step's, are one generation, not one each.
        events.count_steps()
        on_backward(hooks, self._on_backward)
        hooks.on_remove(self._release_all)

    # -- events ------------------------------------------------------------------------

    @property
    def _steps_seen(self) -> bool:
        return self._events.steps_begun > 0

    def _on_backward(self, roots: Tuple[Any, ...], create_graph: bool) -> None:
        if self._done or create_graph:
            return
        step_events = self._events.steps_begun + self._events.steps_done
        if step_events != self._step_events or not step_events:  # a step since, or no optimizer at all
            self._generation += 1
            self._step_events = step_events
        if not sampled(self._generation, _GENERATIONS + 1, _EVERY):  # a tracked generation?
            return
        for root in roots:
            node = root.grad_fn
            if node is None or root.numel() != 1:
                continue
            sequence = node._sequence_nr()
            if sequence in self._sequences:
                continue  # the same loss again (retain_graph): not a new step's loss
            current = self._current()
            if len(current) >= _PER_GENERATION:
                break
            sentinel = _Sentinel()
            current.append(_Root(sequence, weakref.ref(sentinel), node.register_hook(sentinel)))
            self._sequences.add(sequence)
        if self._all_previous_alive():
            self._done = True
            self._conclude()

    # -- bookkeeping -------------------------------------------------------------------

    def _current(self) -> List[_Root]:
        generations = self._generations
        if not generations or generations[-1][0] != self._generation:
            generations.append((self._generation, []))
            if len(generations) > _GENERATIONS + 1:
                self._release(generations.popleft()[1])
        return generations[-1][1]

    def _all_previous_alive(self) -> bool:
        """Whether each of the ``_GENERATIONS`` tracked generations before this one still holds a live loss graph.

        Newest first: in a correct loop the previous generation's loss is already dead, so
        this usually returns after one weak-reference call.
        """
        generations = self._generations
        expected = _previous_tracked(self._generation)
        index = len(generations) - 1
        if index >= 0 and generations[index][0] == self._generation:
            index -= 1
        for _ in range(_GENERATIONS):
            if index < 0:
                return False
            generation, roots = generations[index]
            if generation != expected or not any(root.alive() is not None for root in roots):
                return False
            expected = _previous_tracked(expected)
            index -= 1
        return True

    def _release(self, roots: List[_Root]) -> None:
        for root in roots:
            if root.alive() is not None:  # a dead sentinel's node is gone, and its hook with it
                root.handle.remove()
            self._sequences.discard(root.sequence)

    def _release_all(self) -> None:
        while self._generations:
            self._release(self._generations.popleft()[1])

    # -- the finding (rare path) ---------------------------------------------------------

    def _conclude(self) -> None:
        alive = {root.sequence for _, roots in self._generations for root in roots if root.alive() is not None}
        found = _find_accumulator(sys._getframe(1), alive, 1 if self._steps_seen else 2)
        self._release_all()
        steps = f"{_GENERATIONS} optimizer steps" if self._steps_seen else f"{_GENERATIONS} backward passes"
        if found is not None:
            where, name = found
            self.report(f"`{name}` keeps the graphs of the losses of the last {steps}", where=where)
        elif self._steps_seen:
            self.report(f"the losses of the last {steps} are all still alive")


def _held(value: Any, sequences: Set[int], depth: int = 0) -> Set[int]:
    """Which of the graph nodes ``value`` (a tensor, or a container of them) references."""
    import torch

    if isinstance(value, torch.Tensor):
        return _graph_nodes(value.grad_fn, sequences)
    if depth >= 2:
        return set()
    if isinstance(value, (list, tuple, deque)):
        items = list(value)[-8:]
    elif isinstance(value, dict):
        items = list(value.values())[:16]
    else:
        return set()
    found: Set[int] = set()
    for item in items:
        found |= _held(item, sequences, depth + 1)
    return found


def _graph_nodes(node: Any, sequences: Set[int]) -> Set[int]:
    found: Set[int] = set()
    seen = 0
    queue = deque([node])
    while queue and seen < _NODES:
        current = queue.popleft()
        if current is None:
            continue
        seen += 1
        try:
            sequence = current._sequence_nr()
            if sequence in sequences:
                found.add(sequence)
            queue.extend(child for child, _ in current.next_functions)
        except Exception:
            continue
    return found


def _find_accumulator(start: FrameType, sequences: Set[int], at_least: int) -> Optional[Tuple[Location, str]]:
    """Where (user line) and which variable holds ``at_least`` of the live losses, if a calling frame shows it."""
    from ..location import frame_values, user_frames

    for frame in user_frames(start, _FRAMES):
        for name, value in frame_values(frame, _VALUES):
            if len(_held(value, sequences)) < at_least:
                continue
            attribute = name.startswith("self.")
            line = _accumulation_line(frame.f_code, name[len("self."):] if attribute else name, attribute)
            if line is not None:
                return (frame.f_code.co_filename, line), name
    return None


_STORES = frozenset({"STORE_FAST", "STORE_NAME", "STORE_GLOBAL", "STORE_DEREF"})
_LOADS = frozenset({"LOAD_FAST", "LOAD_NAME", "LOAD_GLOBAL", "LOAD_DEREF", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW",
                    "LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW_LOAD_FAST_BORROW"})
_STACK_SHUFFLES = frozenset({"SWAP", "COPY", "ROT_TWO", "ROT_THREE", "DUP_TOP", "NOP", "CACHE"})


def _line(instruction: dis.Instruction, last: Optional[int]) -> Optional[int]:
    positions = getattr(instruction, "positions", None)
    if positions is not None and positions.lineno is not None:
        return positions.lineno
    return instruction.starts_line if isinstance(instruction.starts_line, int) else last


def _is_add(instruction: dis.Instruction) -> bool:
    if instruction.opname == "BINARY_OP":
        return instruction.argrepr in ("+", "+=")
    return instruction.opname in ("INPLACE_ADD", "BINARY_ADD")


def _accumulation_line(code: CodeType, name: str, attribute: bool) -> Optional[int]:
    """The first line of ``code`` that adds to ``name`` (``+=`` / ``= name + ...``) or appends to it."""
    instructions = [i for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG")]
    lines: List[Optional[int]] = []
    last: Optional[int] = None
    for instruction in instructions:
        last = _line(instruction, last)
        lines.append(last)
    for index, instruction in enumerate(instructions):
        stores = instruction.opname == "STORE_ATTR" if attribute else instruction.opname in _STORES
        if stores and instruction.argval == name:
            back = index - 1
            while back >= 0 and index - back <= 3 and instructions[back].opname in _STACK_SHUFFLES:
                back -= 1
            if back >= 0 and _is_add(instructions[back]):
                return lines[back]
        if instruction.opname in ("LOAD_METHOD", "LOAD_ATTR") and instruction.argval == "append":
            for previous in instructions[max(0, index - 3):index]:
                loads = previous.opname == "LOAD_ATTR" if attribute else previous.opname in _LOADS
                names = previous.argval if isinstance(previous.argval, tuple) else (previous.argval,)
                if loads and name in names:
                    return lines[index]
    return None
