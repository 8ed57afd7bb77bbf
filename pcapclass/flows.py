"""The bidirectional flow table: decoded batches in, flow records out, all with numpy.

A flow is keyed by (protocol, endpoint A, endpoint B) with A the lower (address, port), so both
directions of a conversation meet in one record. Each batch is hashed, sorted stably by key,
cut into segments wherever the key changes or the same key falls idle longer than the idle
timeout, and reduced with ``ufunc.reduceat``; segments then merge into the active table
(sorted by hash, so lookups are ``searchsorted``). Records are associative partials: sums,
min first-seen, max last-seen, OR of flags, which is what lets files, batches and live
intervals combine with one merge.

Packets that carry no IP flow (ARP, a truncated header, an undecoded link type) are not
dropped: they form pseudo-flows keyed by their decode status, so that every packet read
is in exactly one record.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .decode import Packets, Status

#: protocol value of a pseudo-flow: NON_FLOW_BASE + decode Status
NON_FLOW_BASE = 1000
#: "no SYN seen" in the first-SYN timestamp columns
NO_SYN = np.iinfo(np.int64).max
TCP_SYN = 0x02
TCP_ACK = 0x10
IPPROTO_TCP = 6

KEY_COLUMNS = ("hash", "proto", "a_hi", "a_lo", "b_hi", "b_lo", "port_a", "port_b")
VALUE_COLUMNS = (
    "first_ns", "last_ns", "packets_ab", "bytes_ab", "packets_ba", "bytes_ba",
    "flags_a", "flags_b", "syn_a_ns", "syn_b_ns", "first_from_a",
)  # fmt: skip
COLUMNS = KEY_COLUMNS + VALUE_COLUMNS

Records = dict[str, npt.NDArray[np.generic]]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finalizer: a cheap, well-distributed 64-bit mix."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def empty_records() -> Records:
    """A record table with no rows and the right dtypes."""
    recs: Records = {c: np.zeros(0, dtype=np.int64) for c in COLUMNS}
    for c in ("hash", "a_hi", "a_lo", "b_hi", "b_lo"):
        recs[c] = np.zeros(0, dtype=np.uint64)
    recs["first_from_a"] = np.zeros(0, dtype=bool)
    return recs


def take(recs: Records, idx: npt.NDArray[np.integer] | npt.NDArray[np.bool_]) -> Records:
    """The rows ``idx`` (indices or mask) of every column."""
    return {c: v[idx] for c, v in recs.items()}


def concat(parts: list[Records]) -> Records:
    """Rows of several record tables, in order."""
    parts = [p for p in parts if len(p["hash"])]
    if not parts:
        return empty_records()
    if len(parts) == 1:
        return parts[0]
    return {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}


def merge_into(dst: Records, src: Records) -> None:
    """Fold ``src`` (the earlier part of the same flows, row by row) into ``dst`` in place."""
    for c in ("packets_ab", "bytes_ab", "packets_ba", "bytes_ba"):
        dst[c] += src[c]
    for c in ("first_ns", "syn_a_ns", "syn_b_ns"):
        np.minimum(dst[c], src[c], out=dst[c])
    np.maximum(dst["last_ns"], src["last_ns"], out=dst["last_ns"])
    dst["flags_a"] |= src["flags_a"]
    dst["flags_b"] |= src["flags_b"]
    dst["first_from_a"] = src["first_from_a"].copy()


@dataclass
class FlowStats:
    """Counters a demanding user wants to see rather than have hidden."""

    hash_collisions: int = 0
    flows_exported_early: int = 0


@dataclass
class FlowTable:
    """Active flows keyed by 5-tuple hash, with idle-timeout expiry and a size cap.

    ``update`` takes decoded batches; finished flows (idle past the timeout, pushed out by the
    cap, or ``flush``ed) are handed out by ``drain``.
    """

    idle_timeout_ns: int = 120 * 1_000_000_000
    max_flows: int = 2_000_000
    stats: FlowStats = field(default_factory=FlowStats)
    _active: Records = field(default_factory=empty_records)
    _done: list[Records] = field(default_factory=list)
    _watermark: int = np.iinfo(np.int64).min

    def __len__(self) -> int:
        return int(self._active["hash"].shape[0])

    def update(self, pk: Packets) -> None:
        """Add one decoded batch."""
        if not len(pk):
            return
        segs, last_of_key = self._segments(pk)
        self._merge(segs, last_of_key)
        self._watermark = max(self._watermark, int(pk.ts_ns.max()))
        self._expire()

    def flush(self) -> None:
        """End every active flow (end of capture, or a live stop)."""
        self._done.append(self._active)
        self._active = empty_records()

    def drain(self) -> Records:
        """Hand out the finished flows collected so far, forgetting them."""
        done, self._done = concat(self._done), []
        return done

    def active(self) -> Records:
        """A snapshot of the flows still open."""
        return {c: v.copy() for c, v in self._active.items()}

    # -- one batch -> segments -------------------------------------------------------------

    def _segments(self, pk: Packets) -> tuple[Records, npt.NDArray[np.bool_]]:
        proto = pk.proto
        src_hi, src_lo, dst_hi, dst_lo = pk.src_hi, pk.src_lo, pk.dst_hi, pk.dst_lo
        sport, dport = pk.sport, pk.dport
        nonflow = pk.status != Status.FLOW
        if nonflow.any():
            proto = np.where(nonflow, NON_FLOW_BASE + pk.status.astype(np.int64), proto)
            zero64 = np.uint64(0)
            src_hi, src_lo = np.where(nonflow, zero64, src_hi), np.where(nonflow, zero64, src_lo)
            dst_hi, dst_lo = np.where(nonflow, zero64, dst_hi), np.where(nonflow, zero64, dst_lo)
            sport, dport = np.where(nonflow, 0, sport), np.where(nonflow, 0, dport)
        # endpoint A is the lower (address, port): both directions share one key
        swap = (src_hi > dst_hi) | (
            (src_hi == dst_hi) & ((src_lo > dst_lo) | ((src_lo == dst_lo) & (sport > dport)))
        )
        a_hi, b_hi = np.where(swap, dst_hi, src_hi), np.where(swap, src_hi, dst_hi)
        a_lo, b_lo = np.where(swap, dst_lo, src_lo), np.where(swap, src_lo, dst_lo)
        pa, pb = np.where(swap, dport, sport), np.where(swap, sport, dport)
        word = ((proto << 32) | (pa << 16) | pb).astype(np.uint64)
        h = _mix(word ^ _GOLDEN)
        for part in (a_lo, b_lo, a_hi, b_hi):
            h = _mix(h ^ part)

        order = np.argsort(h, kind="stable")
        hs = h[order]
        same = hs[1:] == hs[:-1]
        keys = (word, a_hi, a_lo, b_hi, b_lo)
        if same.any():
            # equal hashes must be equal keys; if not (a 64-bit collision), order by full key
            idx = np.flatnonzero(same)
            clash = np.zeros(idx.size, dtype=bool)
            for k in keys:
                ks = k[order]
                clash |= ks[idx] != ks[idx + 1]
            if clash.any():
                self.stats.hash_collisions += int(clash.sum())
                order = np.lexsort((h, *keys[::-1]))
                hs = h[order]
                same = np.ones(len(order) - 1, dtype=bool)
                for k in keys:
                    ks = k[order]
                    same &= ks[1:] == ks[:-1]
        ts = pk.ts_ns[order]
        new_key = np.concatenate(([True], ~same))
        gap = np.concatenate(([False], (ts[1:] - ts[:-1]) > self.idle_timeout_ns))
        starts = np.flatnonzero(new_key | gap)
        first_idx = order[starts]

        from_a = ~swap[order]
        wl = pk.wirelen[order]
        flags = pk.tcp_flags[order]
        count = np.diff(np.append(starts, len(order)))
        packets_ab = np.add.reduceat(from_a.astype(np.int64), starts)
        bytes_all = np.add.reduceat(wl, starts)
        bytes_ab = np.add.reduceat(np.where(from_a, wl, 0), starts)
        pure_syn = ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) & (proto[order] == IPPROTO_TCP)
        segs: Records = {
            "hash": hs[starts],
            "proto": proto[first_idx],
            "a_hi": a_hi[first_idx],
            "a_lo": a_lo[first_idx],
            "b_hi": b_hi[first_idx],
            "b_lo": b_lo[first_idx],
            "port_a": pa[first_idx],
            "port_b": pb[first_idx],
            "first_ns": np.minimum.reduceat(ts, starts),
            "last_ns": np.maximum.reduceat(ts, starts),
            "packets_ab": packets_ab,
            "bytes_ab": bytes_ab,
            "packets_ba": count - packets_ab,
            "bytes_ba": bytes_all - bytes_ab,
            "flags_a": np.bitwise_or.reduceat(np.where(from_a, flags, 0), starts),
            "flags_b": np.bitwise_or.reduceat(np.where(from_a, 0, flags), starts),
            "syn_a_ns": np.minimum.reduceat(np.where(pure_syn & from_a, ts, NO_SYN), starts),
            "syn_b_ns": np.minimum.reduceat(np.where(pure_syn & ~from_a, ts, NO_SYN), starts),
            "first_from_a": from_a[starts],
        }
        seg_new_key = new_key[starts]
        last_of_key = np.append(seg_new_key[1:], True)
        segs["_new_key"] = seg_new_key  # type: ignore[assignment]
        return segs, last_of_key

    # -- segments -> active table ----------------------------------------------------------

    def _merge(self, segs: Records, last_of_key: npt.NDArray[np.bool_]) -> None:
        act = self._active
        first_seg = np.flatnonzero(segs.pop("_new_key"))
        n_act = len(act["hash"])
        removed = np.zeros(n_act, dtype=bool)
        if n_act:
            pos = np.searchsorted(act["hash"], segs["hash"][first_seg])
            pos_c = np.minimum(pos, n_act - 1)
            found = act["hash"][pos_c] == segs["hash"][first_seg]
            hit_seg, hit_act = first_seg[found], pos_c[found]
            if hit_seg.size:
                same = np.ones(hit_seg.size, dtype=bool)
                for c in KEY_COLUMNS[1:]:
                    same &= act[c][hit_act] == segs[c][hit_seg]
                self.stats.hash_collisions += int((~same).sum())
                fresh = segs["first_ns"][hit_seg] - act["last_ns"][hit_act] <= self.idle_timeout_ns
                cont = same & fresh
                if cont.any():
                    part = take(segs, hit_seg[cont])
                    merge_into(part, take(act, hit_act[cont]))
                    for c in COLUMNS:
                        segs[c][hit_seg[cont]] = part[c]
                expired = hit_act[~cont]
                if expired.size:
                    self._done.append(take(act, expired))
                removed[hit_act] = True
        # segments followed by another segment of their key ended idle: they are finished
        if (~last_of_key).any():
            self._done.append(take(segs, ~last_of_key))
        kept = take(act, ~removed) if removed.any() else act
        new = take(segs, last_of_key)
        at = np.searchsorted(kept["hash"], new["hash"])
        self._active = {c: np.insert(kept[c], at, new[c]) for c in COLUMNS}

    def _expire(self) -> None:
        act = self._active
        idle = act["last_ns"] < self._watermark - self.idle_timeout_ns
        over = len(act["hash"]) - int(idle.sum()) - self.max_flows
        if over > 0:
            # the cap: push the least recently seen flows out early, and count them
            alive = np.flatnonzero(~idle)
            oldest = alive[np.argsort(act["last_ns"][alive], kind="stable")[:over]]
            idle[oldest] = True
            self.stats.flows_exported_early += over
        if idle.any():
            self._done.append(take(act, idle))
            self._active = take(act, ~idle)


def iter_records(recs: Records, size: int) -> Iterator[Records]:
    """Slices of ``size`` rows, for writers that stream."""
    n = len(recs["hash"])
    for i in range(0, n, size):
        yield {c: v[i : i + size] for c, v in recs.items()}
