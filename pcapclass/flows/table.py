"""The bidirectional flow table: decoded batches in, flow records out.

A flow is keyed by (protocol, endpoint A, endpoint B) with A the lower (address, port), so both
directions of a conversation meet in one record; keys, their hashes and each packet's place
in its flow's row are all computed in ``_flowkeys.pyx`` and ``_flowhash.pyx``, one compiled pass per batch. Records are associative partials: sums, min first-seen, max last-seen,
OR of flags, which is what lets files, batches and live intervals combine with one merge.

Finished records leave the table column-major (a row per field, a column per flow): that
is the shape every later stage reads a field from.

Packets that carry no IP flow (ARP, a truncated header, an undecoded link type) are not
dropped: they form pseudo-flows keyed by their decode status, so that every packet read
is in exactly one record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .._flowhash import COLUMNS, IPPROTO_TCP, KEY_COLUMNS, NO_SYN, FlowHash
from .._flowkeys import flow_keys as keys_of_packets
from .._flowkeys import keys_at
from ..decode import Packets, Status

__all__ = ["COLUMNS", "IPPROTO_TCP", "KEY_COLUMNS", "NON_FLOW_BASE", "NO_SYN", "FlowKeys", "FlowStats", "FlowTable", "Records", "flow_keys"]

#: protocol value of a pseudo-flow: NON_FLOW_BASE + decode Status
NON_FLOW_BASE = 1000

COL = {name: i for i, name in enumerate(COLUMNS)}
_UNSIGNED = {"hash", "check", "a_hi", "a_lo", "b_hi", "b_lo"}
_LAST = COL["last_ns"]


class Records:
    """Flow records in a column-major 2-D int64 array (a row per field, a column per flow).

    ``recs["bytes_ab"]`` gives a field with its real dtype (uint64 for hashes and addresses,
    bool for ``first_from_a``), as a contiguous view for the int64 fields.
    """

    __slots__ = ("cols",)

    def __init__(self, cols: npt.NDArray[np.int64] | None = None) -> None:
        self.cols = cols if cols is not None else _empty()

    def __len__(self) -> int:
        return int(self.cols.shape[1])

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        col: npt.NDArray[np.int64] = self.cols[COL[name]]
        if name in _UNSIGNED:
            return col.view(np.uint64)
        if name == "first_from_a":
            return col.astype(bool)
        return col

    def with_columns(self, values: dict[str, npt.NDArray[np.int64]]) -> Records:
        """A copy with some int64 fields replaced."""
        cols = self.cols.copy()
        for name, v in values.items():
            cols[COL[name]] = v
        return Records(cols)

    @staticmethod
    def concat(parts: list[Records]) -> Records:
        """Flows of several record tables, in order."""
        cols = [p.cols for p in parts if len(p)]
        if not cols:
            return Records()
        return Records(cols[0] if len(cols) == 1 else np.concatenate(cols, axis=1))


def _empty(n: int = 0) -> npt.NDArray[np.int64]:
    return np.zeros((len(COLUMNS), n), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class FlowKeys:
    """Each packet's flow key: endpoint A is the lower (address, port), so both directions
    of a conversation share it; ``hash`` and ``check`` are two independent 64-bit hashes of it.

    Later stages (payload evidence) use the same keys to attach what they learn to flows.
    """

    hash: npt.NDArray[np.int64]
    check: npt.NDArray[np.int64]
    proto: npt.NDArray[np.int64]
    a_hi: npt.NDArray[np.uint64]
    a_lo: npt.NDArray[np.uint64]
    b_hi: npt.NDArray[np.uint64]
    b_lo: npt.NDArray[np.uint64]
    port_a: npt.NDArray[np.int64]
    port_b: npt.NDArray[np.int64]
    #: the packet travels from endpoint A to endpoint B
    from_a: npt.NDArray[np.bool_]

    def at(self, idx: npt.NDArray[np.intp], ts_ns: npt.NDArray[np.int64]) -> tuple[
            npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:  # fmt: skip
        """``(hash, check, ts_ns, from_a)`` of packets ``idx`` (``ts_ns``: the batch's times), the
        hashes as uint64: what finds each packet's flow record later, gathered in one compiled pass."""
        return keys_at(idx, self.hash, self.check, ts_ns, self.from_a.view(np.uint8))


def flow_keys(pk: Packets) -> FlowKeys:
    """The flow key of every packet of a decoded batch (pseudo-keys for non-IP frames)."""
    return FlowKeys(*keys_of_packets(pk.status, pk.proto, pk.src_hi, pk.src_lo, pk.dst_hi, pk.dst_lo,
                                         pk.sport, pk.dport, Status.FLOW, NON_FLOW_BASE))  # fmt: skip


@dataclass
class FlowStats:
    """Counters a demanding user wants to see rather than have hidden."""

    hash_collisions: int = 0
    flows_exported_early: int = 0


#: a closed TCP flow quiet this long (capture time) is finished; later stragglers (a last
#: ACK, a retransmitted FIN) start a new record. Zeek's tcp_close_delay is the same 5 s.
CLOSED_GRACE_NS = 5 * 1_000_000_000


class FlowTable:
    """Open flows, and the records of finished ones until ``drain`` hands them out.

    A flow finishes when its next packet comes after an idle gap (or after a closed TCP
    flow's grace time), when a sweep finds it idle by the capture's clock, when the
    ``max_flows`` cap pushes the least recently seen out early (counted), or at ``flush``.
    """

    def __init__(self, idle_timeout_ns: int = 120 * 1_000_000_000, max_flows: int = 2_000_000) -> None:
        self.idle_timeout_ns = idle_timeout_ns
        self.max_flows = max_flows
        self.stats = FlowStats()
        self._hash = FlowHash(idle_timeout_ns, CLOSED_GRACE_NS)
        self._swept_at = np.iinfo(np.int64).min

    def __len__(self) -> int:
        """Open flows."""
        return len(self._hash)

    def update(self, pk: Packets, keys: FlowKeys | None = None, started: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.intp]:
        """Add one decoded batch (``keys``: its ``flow_keys``, if already computed).

        Returns the packets that carry the first TCP/UDP payload of their flow in their
        direction (a reused 5-tuple after the idle timeout is a new flow): the ones payload
        evidence looks at. ``started``, if given (one int64 per packet), receives a time
        inside each packet's flow's span: with the key, what finds the flow's record later.
        """
        if not len(pk):
            return np.zeros(0, dtype=np.intp)
        k = keys if keys is not None else flow_keys(pk)
        if self._hash.watermark - self._swept_at > CLOSED_GRACE_NS:
            # every few seconds of capture time the flows the clock has ended (closed ones
            # above all) leave the table, so that it holds about the flows still active
            self._sweep(self._hash.watermark, CLOSED_GRACE_NS)
        if len(self._hash) + len(pk) > self._hash.capacity:
            # before the table grows, the flows the clock has ended make room; when that is not
            # enough, it grows to half as much again as it must hold, so sweeps stay rare
            # (O(1) per flow) and the slack moderate
            if self._swept_at != self._hash.watermark:  # not swept at this clock already
                self._sweep(self._hash.watermark, CLOSED_GRACE_NS)
            if 3 * (len(self._hash) + len(pk)) > 2 * self._hash.capacity:
                self._hash.reserve(3 * (len(self._hash) + len(pk)) // 2)
        first = np.empty(len(pk), dtype=np.intp)
        found = self._hash.update(k.hash, k.check, k.proto, k.a_hi, k.a_lo, k.b_hi, k.b_lo, k.port_a, k.port_b,
                                  k.from_a.view(np.uint8), pk.ts_ns, pk.wirelen, pk.tcp_flags, pk.payload_len, first, started)  # fmt: skip
        self.stats.hash_collisions = self._hash.collisions
        if len(self._hash) > self.max_flows:
            self._sweep(self._hash.watermark, CLOSED_GRACE_NS)
        return first[:found]

    def drain_all(self) -> Records:
        """End every open flow (end of capture, or a live stop) and hand out every finished
        flow, forgetting them: the ones ended before, then the ones still open."""
        return Records(self._hash.take_all())

    @property
    def finished(self) -> int:
        """Finished flows waiting to be drained."""
        return int(self._hash.finished)

    def drain(self) -> Records:
        """Hand out the finished flows collected so far, forgetting them."""
        return Records(self._hash.take_done())

    def active(self) -> Records:
        """The flows still open (a copy)."""
        return Records(np.ascontiguousarray(self._hash.table.T))

    def expire(self, now_ns: int, *, active_timeout_ns: int, closed_grace_ns: int) -> None:
        """Finish flows by the clock, for a live capture whose packets may pause.

        Finished: idle past the idle timeout; TCP closed (RST, or FIN both ways) and quiet for
        ``closed_grace_ns``; or open longer than ``active_timeout_ns`` (NetFlow's active
        timeout: the key's next packets start a new record). ``drain`` hands them out.
        """
        self._sweep(max(self._hash.watermark, now_ns), closed_grace_ns, now_ns, active_timeout_ns)

    def _sweep(self, now_ns: int, grace_ns: int, active_now_ns: int | None = None, active_timeout_ns: int = 0) -> None:
        """End the open flows that the clock ``now_ns`` says are over, and those over the cap."""
        started_before = active_now_ns - active_timeout_ns if active_now_ns is not None else np.iinfo(np.int64).min
        self._swept_at = now_ns
        done = self._hash.ended_by_clock(now_ns, grace_ns, started_before)
        over = len(done) - int(np.count_nonzero(done)) - self.max_flows
        if over > 0:
            # the cap: push the least recently seen flows out early, and count them
            alive = np.flatnonzero(~done)
            last = self._hash.table[:, _LAST]
            done[alive[np.argpartition(last[alive], over - 1)[:over]]] = True
            self.stats.flows_exported_early += over
        if done.any():
            self._hash.remove(done.view(np.uint8))
