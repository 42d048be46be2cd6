"""Which events a check looks at closely: all of the first few, then one in every so many.

Some looks cost more than the rest of a check together (a graph node's Python
wrapper, a hook on a graph, a reduction over the parameters). The bugs they find
are properties of the code, repeated on every event from the same line, so the
first events find them, and a sparse sample finds a code path that starts late.
Imports nothing.
"""

from __future__ import annotations


def sampled(number: int, first: int, every: int) -> bool:
    """Whether event ``number`` (counted from 1) is looked at: each of the first ``first``, then every ``every``-th."""
    return number <= first or number % every == 0


def previous_sampled(number: int, first: int, every: int) -> int:
    """The sampled event before event ``number`` (0 if none)."""
    if number - 1 <= first:
        return number - 1
    return max((number - 1) // every * every, first)
