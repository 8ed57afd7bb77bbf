"""The spilling flow store: blocks of at most ``spill_flows``, each in order of first packet."""

from __future__ import annotations

import numpy as np

from pcapclass.flows import COLUMNS, Records
from pcapclass.store import FlowStore


def test_flow_store_joins_at_most_a_block_and_holds_a_captures_last_flows() -> None:
    """Parts of 2, 3 and 10 finished flows, then 5 still open at the capture's end, with blocks
    of 4: what is held goes to disk before a part would overflow a block, a part of a block or
    more is spilled alone (in blocks of 4), the last part waits in memory; every block is in
    order of first packet."""
    def part(firsts: list[int]) -> Records:
        cols = np.zeros((len(COLUMNS), len(firsts)), dtype=np.int64)
        cols[COLUMNS.index("first_ns")] = firsts
        return Records(cols)

    store = FlowStore(spill_flows=4)
    try:
        for firsts, last in (([5, 1], False), ([9, 8, 7], False), (list(range(30, 20, -1)), False), ([44, 43, 42, 41, 40], True)):
            store.add(part(firsts), np.zeros(len(firsts), dtype=np.int64), last=last)
        assert not store.one_block
        blocks = [recs["first_ns"].tolist() for recs, _, _ in store.blocks()]
        assert blocks == [[1, 5], [7, 8, 9], [21, 22, 23, 24], [25, 26, 27, 28], [29, 30], [40, 41, 42, 43], [44]]
    finally:
        store.close()
