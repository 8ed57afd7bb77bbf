"""First payloads remembered byte for byte, so that a verdict is reused only for the same bytes.

A payload's verdict depends on all its bytes and on its context (port guess, transport, which
side sent it: ``_firstlook.look_context``). ``deciding_bytes`` digests both; a digest finds a
remembered payload with one binary search per batch, and ``same_payloads`` then compares the
bytes and the context, because two different payloads can share a digest. What is remembered
is capped by count and by bytes; past either cap it is all forgotten at once (a payload not
found is only looked at again, never given a wrong verdict).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._firstlook import same_payloads

#: payloads remembered at most
MAX_PAYLOADS = 65536
#: bytes of remembered payloads held at most (the store is most of what remembering costs in
#: memory: 8 MiB holds some 30,000 first payloads of real traffic)
MAX_BYTES = 8 << 20


class PayloadMemo:
    """Payloads with a value each (a verdict set), found again by digest, context and bytes.

    >>> memo = PayloadMemo()
    >>> memo.remember(7, 0, b"+OK", 3)
    0
    >>> data = np.frombuffer(b"+OK+OX", dtype=np.uint8)
    >>> memo.find(data, np.array([0, 3]), np.array([3, 3]), np.array([7, 7], np.uint64), np.array([0, 0])).tolist()
    [3, -1]
    """

    def __init__(self) -> None:
        self._store = np.zeros(4096, dtype=np.uint8)
        self.clear()

    def clear(self) -> None:
        """Forget every payload (the store's memory is kept for the next ones)."""
        self._used = 0
        self._known: set[int] = set()
        #: per payload remembered, not yet in the arrays: digest, context, value, start in the store, length
        self._pending: list[tuple[int, int, int, int, int]] = []
        #: their bytes, not yet in the store (one copy per batch, not one numpy call per payload)
        self._pending_bytes: list[bytes] = []
        #: the same as arrays, one row each, in the order remembered
        self._cols = [np.zeros(0, np.uint64), *(np.zeros(0, np.int64) for _ in range(4))]
        self._order, self._sorted = np.zeros(0, np.int64), np.zeros(0, np.uint64)

    def __len__(self) -> int:
        return len(self._known)

    def remember(self, digest: int, context: int, payload: bytes, value: int) -> int:
        """Remember ``payload`` (seen in ``context``, with ``digest``) as having ``value``; a
        payload whose digest is taken already (the same one, or a collision) is not kept.
        How many payloads were forgotten to make room (0 unless a cap was reached)."""
        if digest in self._known or len(payload) > MAX_BYTES:
            return 0
        forgotten = 0
        if len(self._known) >= MAX_PAYLOADS or self._used + len(payload) > MAX_BYTES:
            forgotten = len(self._known)
            self.clear()
        self._pending.append((digest, context, value, self._used, len(payload)))
        self._pending_bytes.append(payload)
        self._used += len(payload)
        self._known.add(digest)
        return forgotten

    def _store_pending(self) -> None:
        blob = b"".join(self._pending_bytes)
        start = self._used - len(blob)
        if self._used > self._store.size:
            grown = np.zeros(max(2 * self._store.size, self._used), dtype=np.uint8)
            grown[:start] = self._store[:start]
            self._store = grown
        self._store[start : self._used] = np.frombuffer(blob, dtype=np.uint8)
        first = self._cols[0].size
        self._cols = [np.concatenate([old, np.array(col, old.dtype)]) for old, col in zip(self._cols, zip(*self._pending))]
        self._pending, self._pending_bytes = [], []
        # the new digests sorted, then merged into the sorted ones (no sort of them all per batch)
        by_digest = first + np.argsort(self._cols[0][first:], kind="stable")
        at = np.searchsorted(self._sorted, self._cols[0][by_digest], side="right")
        self._order = np.insert(self._order, at, by_digest)
        self._sorted = np.insert(self._sorted, at, self._cols[0][by_digest])

    def find(self, data: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], length: npt.NDArray[np.int64],
             digest: npt.NDArray[np.uint64], context: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:  # fmt: skip
        """The value of each payload ``data[off[i]:off[i] + length[i]]`` remembered with the
        same digest, context and bytes; -1 where none."""
        if self._pending:
            self._store_pending()
        if not self._sorted.size:
            return np.full(digest.size, -1, dtype=np.int64)
        _, ctx, value, start, stored = self._cols
        at = np.minimum(np.searchsorted(self._sorted, digest), self._sorted.size - 1)
        e = self._order[at]
        hit = (self._sorted[at] == digest) & (ctx[e] == context)
        same = same_payloads(data, off, length, self._store, np.where(hit, start[e], -1), stored[e])
        return np.where(same, value[e], -1)
