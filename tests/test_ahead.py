"""Work done ahead in a thread: same results, same order, same errors as a plain loop."""

from __future__ import annotations

import sys
import threading

import pytest

from pcapclass.ahead import ahead, quick_handover


def test_results_in_order() -> None:
    assert list(ahead(range(100), lambda i: i * i)) == [(i, i * i) for i in range(100)]


def test_work_runs_in_another_thread() -> None:
    names = [name for _, name in ahead(range(3), lambda _: threading.current_thread().name)]
    assert names and all(n != threading.current_thread().name for n in names)


def test_an_error_comes_after_the_results_before_it() -> None:
    def items():
        yield 1
        yield 2
        raise ValueError("bad item 3")

    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item, result in ahead(items(), lambda i: -i):
            got.append((item, result))
    assert got == [(1, -1), (2, -2)]


def test_an_error_in_the_work_is_raised_in_the_caller() -> None:
    def work(i: int) -> int:
        if i == 5:
            raise KeyError(i)
        return i

    with pytest.raises(KeyError):
        assert [r for _, r in ahead(range(10), work)] == list(range(5))


def test_stopping_early_ends_the_thread_and_closes_the_items() -> None:
    closed = threading.Event()

    def items():
        try:
            yield from range(1_000_000)
        finally:
            closed.set()

    before = threading.active_count()
    for item, _ in ahead(items(), lambda i: i):
        if item == 10:
            break
    assert closed.wait(5), "the item generator was not closed"
    assert threading.active_count() == before


def test_quick_handover_sets_and_restores_the_switch_interval() -> None:
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), quick_handover(0.0001):
        assert sys.getswitchinterval() == pytest.approx(0.0001)
        raise RuntimeError("stage failed")
    assert sys.getswitchinterval() == before
