"""Tests for pcapclass.payload_memo: a remembered value comes back only for the same bytes in
the same context, whatever the digest says; the caps forget everything at once."""

from __future__ import annotations

import numpy as np
import pytest

from pcapclass import payload_memo
from pcapclass.payload_memo import PayloadMemo


def batch(*payloads: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    length = np.array([len(p) for p in payloads], dtype=np.int64)
    return data, np.cumsum(length) - length, length


def test_found_only_for_the_same_digest_context_and_bytes() -> None:
    memo = PayloadMemo()
    memo.remember(1, 10, b"+OK ready\r\n", 5)
    memo.remember(2, 10, b"* OK ready\r\n", 6)
    data, off, length = batch(b"+OK ready\r\n", b"+OK ready\r\n", b"+OK ready!\r\n", b"+OK ready\r", b"* OK ready\r\n", b"+OK ready\r\n")
    digest = np.array([1, 1, 1, 1, 2, 3], dtype=np.uint64)  # 2 and 3: digest 1, other bytes
    context = np.array([10, 11, 10, 10, 10, 10], dtype=np.int64)
    assert memo.find(data, off, length, digest, context).tolist() == [5, -1, -1, -1, 6, -1]


def test_a_payload_cut_by_the_end_of_the_batch_is_compared_as_cut() -> None:
    memo = PayloadMemo()
    memo.remember(1, 0, b"+OK", 5)
    data = batch(b"xx+OK")[0]
    assert memo.find(data, np.array([2]), np.array([9]), np.array([1], np.uint64), np.array([0])).tolist() == [5]


def test_a_digest_taken_keeps_its_first_payload() -> None:
    memo = PayloadMemo()
    memo.remember(1, 0, b"first", 5)
    memo.remember(1, 0, b"other", 6)
    data, off, length = batch(b"first", b"other")
    assert memo.find(data, off, length, np.array([1, 1], np.uint64), np.zeros(2, np.int64)).tolist() == [5, -1]


@pytest.mark.parametrize(("cap", "value"), [("MAX_PAYLOADS", 2), ("MAX_BYTES", 8)])
def test_past_a_cap_everything_is_forgotten(monkeypatch: pytest.MonkeyPatch, cap: str, value: int) -> None:
    monkeypatch.setattr(payload_memo, cap, value)
    memo = PayloadMemo()
    for d, p in enumerate((b"abcd", b"efgh", b"ijkl")):
        memo.remember(d, 0, p, d)
    assert len(memo) == 1
    data, off, length = batch(b"abcd", b"efgh", b"ijkl")
    assert memo.find(data, off, length, np.arange(3, dtype=np.uint64), np.zeros(3, np.int64)).tolist() == [-1, -1, 2]
    memo.remember(9, 0, b"0123456789", 9)  # longer than any cap allows: not kept
    assert len(memo) == (2 if cap == "MAX_PAYLOADS" else 1)
