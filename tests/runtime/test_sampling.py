"""The sampling policy the costly looks share (TS010, TS011, TS016, TS019)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pytest_trainsafe.runtime.sampling import previous_sampled, sampled


def test_the_first_events_are_all_sampled_then_one_in_every() -> None:
    assert [n for n in range(1, 40) if sampled(n, 4, 8)] == [1, 2, 3, 4, 8, 16, 24, 32]


@given(number=st.integers(1, 500), first=st.integers(0, 20), every=st.integers(1, 20))
def test_previous_sampled_is_the_nearest_sampled_event_before(number: int, first: int, every: int) -> None:
    previous = previous_sampled(number, first, every)
    assert 0 <= previous < number
    assert previous == 0 or sampled(previous, first, every)
    assert not any(sampled(n, first, every) for n in range(previous + 1, number))
