"""The bidirectional flow table: decoded batches in, flow records out, all with numpy.

A flow is keyed by (protocol, endpoint A, endpoint B) with A the lower (address, port), so both
directions of a conversation meet in one record. Each batch is hashed, sorted stably by key,
cut into segments wherever the key changes or the same key falls idle longer than the idle
timeout, and reduced with ``ufunc.reduceat``; segments then merge into the active table
(sorted by hash, so lookups are ``searchsorted``). Records are associative partials: sums,
min first-seen, max last-seen, OR of flags, which is what lets files, batches and live
intervals combine with one merge.

Records live in one 2-D int64 array (a row per flow, a column per field): moving a flow is
one row copy, not one copy per field, which is what keeps the per-batch merge cheap.

Packets that carry no IP flow (ARP, a truncated header, an undecoded link type) are not
dropped: they form pseudo-flows keyed by their decode status, so that every packet read
is in exactly one record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .decode import Packets, Status

#: protocol value of a pseudo-flow: NON_FLOW_BASE + decode Status
NON_FLOW_BASE = 1000
#: "no SYN seen" in the first-SYN timestamp columns
NO_SYN = np.iinfo(np.int64).max
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10
IPPROTO_TCP = 6

KEY_COLUMNS = ("hash", "check", "proto", "a_hi", "a_lo", "b_hi", "b_lo", "port_a", "port_b")
VALUE_COLUMNS = (
    "first_ns", "last_ns", "packets_ab", "bytes_ab", "packets_ba", "bytes_ba",
    "flags_a", "flags_b", "syn_a_ns", "syn_b_ns", "first_from_a",
)  # fmt: skip
COLUMNS = KEY_COLUMNS + VALUE_COLUMNS
COL = {name: i for i, name in enumerate(COLUMNS)}
_UNSIGNED = {"hash", "check", "a_hi", "a_lo", "b_hi", "b_lo"}
_H, _CHECK, _FIRST, _LAST = COL["hash"], COL["check"], COL["first_ns"], COL["last_ns"]
_SUMS = [COL[c] for c in ("packets_ab", "bytes_ab", "packets_ba", "bytes_ba")]
_MINS = [COL[c] for c in ("first_ns", "syn_a_ns", "syn_b_ns")]
_ORS = [COL[c] for c in ("flags_a", "flags_b")]


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

    def __getitem__(self, name: str) -> npt.NDArray[np.generic]:
        col = self.cols[COL[name]]
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


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SEED2 = np.uint64(0xD6E8FEB86659FD93)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finalizer: a cheap, well-distributed 64-bit mix."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


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


def flow_keys(pk: Packets) -> FlowKeys:
    """The flow key of every packet of a decoded batch (pseudo-keys for non-IP frames)."""
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
    swap = (src_hi > dst_hi) | ((src_hi == dst_hi) & ((src_lo > dst_lo) | ((src_lo == dst_lo) & (sport > dport))))
    a_hi, b_hi = np.where(swap, dst_hi, src_hi), np.where(swap, src_hi, dst_hi)
    a_lo, b_lo = np.where(swap, dst_lo, src_lo), np.where(swap, src_lo, dst_lo)
    pa, pb = np.where(swap, dport, sport), np.where(swap, sport, dport)
    word = ((proto << 32) | (pa << 16) | pb).view(np.uint64)
    # merging two keys would need both hashes to collide (about 2**-128 per pair); a clash
    # of the first alone is resolved by the table and counted
    h = _mix(_mix(_mix(word ^ _GOLDEN) ^ a_lo) ^ b_lo)
    h2 = _mix(_mix(_mix(b_lo ^ _SEED2) ^ word) ^ a_lo)
    v6 = np.flatnonzero(a_hi | b_hi)
    if v6.size:  # IPv6: the high halves join the key (IPv4 keys never see them)
        h[v6] = _mix(_mix(h[v6] ^ a_hi[v6]) ^ b_hi[v6])
        h2[v6] = _mix(_mix(h2[v6] ^ b_hi[v6]) ^ a_hi[v6])
    return FlowKeys(h.view(np.int64), h2.view(np.int64), proto, a_hi, a_lo, b_hi, b_lo, pa, pb, ~swap)


@dataclass
class FlowStats:
    """Counters a demanding user wants to see rather than have hidden."""

    hash_collisions: int = 0
    flows_exported_early: int = 0


#: a closed TCP flow quiet this long (capture time) is finished; later stragglers (a last
#: ACK, a retransmitted FIN) start a new record. Zeek's tcp_close_delay is the same 5 s.
CLOSED_GRACE_NS = 5 * 1_000_000_000
#: packets buffered before they are reduced to segments: a wide window sees most of a
#: flow's packets at once, so far fewer segments reach the (costlier) merge rounds
WINDOW_PACKETS = 1 << 17
#: segments collected before they are merged into the table (about 10 MB)
MIN_PENDING_ROWS = 1 << 16


@dataclass
class FlowTable:
    """Active flows, merged in rounds: each batch's segments wait, then join in one sort.

    Merging a batch into the table one key at a time costs per key and per batch; instead
    the segments of many batches are stacked behind the active rows (which keeps each key's
    parts in time order) and merged with one stable sort by hash and ``reduceat``, so a
    round costs about one sort of the rows it touches. A round runs when the waiting rows
    outnumber the active ones (and at least MIN_PENDING_ROWS), which bounds memory to a few
    times the open flows. Finished flows (idle past the timeout, pushed out by the cap, or
    ``flush``ed) are handed out by ``drain``.
    """

    idle_timeout_ns: int = 120 * 1_000_000_000
    max_flows: int = 2_000_000
    stats: FlowStats = field(default_factory=FlowStats)
    _active: npt.NDArray[np.int64] = field(default_factory=_empty)
    _pending: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _pending_rows: int = 0
    _window: list[tuple[FlowKeys, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]] = field(default_factory=list)
    _window_packets: int = 0
    _done: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _watermark: int = np.iinfo(np.int64).min

    def __len__(self) -> int:
        """Open flows (exact after a merge round; an upper bound between rounds)."""
        return self._active.shape[1] + self._pending_rows + self._window_packets

    def update(self, pk: Packets, keys: FlowKeys | None = None) -> None:
        """Add one decoded batch (``keys``: its ``flow_keys``, if already computed)."""
        if not len(pk):
            return
        self._window.append((keys if keys is not None else flow_keys(pk), pk.ts_ns, pk.wirelen, pk.tcp_flags))
        self._window_packets += len(pk)
        self._watermark = max(self._watermark, int(pk.ts_ns.max()))
        if self._window_packets >= WINDOW_PACKETS:
            self._reduce_window()

    def _reduce_window(self) -> None:
        """Reduce the buffered packets to segments; merge when enough segments wait."""
        if not self._window:
            return
        parts, self._window, self._window_packets = self._window, [], 0
        keys = FlowKeys(*(np.concatenate([getattr(p[0], f) for p in parts]) for f in FlowKeys.__slots__))
        ts, wl, flags = (np.concatenate([p[i] for p in parts]) for i in (1, 2, 3))
        self._pending.append(self._segments(keys, ts, wl, flags))
        self._pending_rows += self._pending[-1].shape[1]
        if self._pending_rows >= max(MIN_PENDING_ROWS, self._active.shape[1]):
            self._merge()

    def flush(self) -> None:
        """End every active flow (end of capture, or a live stop)."""
        self._merge()
        self._done.append(self._active)
        self._active = _empty()

    @property
    def finished(self) -> int:
        """Finished flows waiting to be drained."""
        return sum(d.shape[1] for d in self._done)

    def drain(self) -> Records:
        """Hand out the finished flows collected so far, forgetting them."""
        done = Records.concat([Records(r) for r in self._done])
        self._done = []
        return done

    def active(self) -> Records:
        """The flows still open (merges what is waiting first)."""
        self._merge()
        return Records(self._active.copy())

    def expire(self, now_ns: int, *, active_timeout_ns: int, closed_grace_ns: int) -> None:
        """Finish flows by the clock, for a live capture whose packets may pause.

        Finished: idle past the idle timeout; TCP closed (RST, or FIN both ways) and quiet for
        ``closed_grace_ns``; or open longer than ``active_timeout_ns`` (NetFlow's active
        timeout: the key's next packets start a new record). ``drain`` hands them out.
        """
        self._merge()
        self._watermark = max(self._watermark, now_ns)
        act = self._active
        last = act[_LAST]
        done = (last < self._watermark - self.idle_timeout_ns) | (_closed(act[COL["flags_a"]], act[COL["flags_b"]], act[COL["proto"]]) & (last < now_ns - closed_grace_ns))
        done |= act[_FIRST] < now_ns - active_timeout_ns
        if done.any():
            self._done.append(act[:, done])
            self._active = act[:, ~done]

    # -- one batch -> segments -------------------------------------------------------------

    def _segments(
        self, keys: FlowKeys, ts_ns: npt.NDArray[np.int64], wirelen: npt.NDArray[np.int64], tcp_flags: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Per-key, per-idle-gap aggregates of a packet window, sorted by hash (one row each)."""
        h, h2, proto = keys.hash, keys.check, keys.proto
        a_hi, a_lo, b_hi, b_lo, pa, pb = keys.a_hi, keys.a_lo, keys.b_hi, keys.b_lo, keys.port_a, keys.port_b
        order = stable_order(h)
        hs, h2s = h[order], h2[order]
        same = hs[1:] == hs[:-1]
        clash = same & (h2s[1:] != h2s[:-1])
        if clash.any():
            self.stats.hash_collisions += int(np.count_nonzero(clash))
            order = np.lexsort((h2, h))
            hs, h2s = h[order], h2[order]
            same = (hs[1:] == hs[:-1]) & (h2s[1:] == h2s[:-1])
        ts = ts_ns[order]
        new_key = np.empty(len(order), dtype=bool)
        new_key[0] = True
        np.logical_not(same, out=new_key[1:])
        starts = np.flatnonzero(new_key | np.concatenate(([False], (ts[1:] - ts[:-1]) > self.idle_timeout_ns)))
        first = order[starts]

        from_a = keys.from_a[order]
        wl = wirelen[order]
        flags = tcp_flags[order]
        count = np.diff(np.append(starts, len(order)))
        pure_syn = ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) & (proto[order] == IPPROTO_TCP)
        wl_a = np.where(from_a, wl, 0)
        seg = np.empty((len(COLUMNS), len(starts)), dtype=np.int64)
        seg[_H] = hs[starts]
        seg[_CHECK] = h2s[starts]
        seg[COL["proto"]] = proto[first]
        for name, col in (("a_hi", a_hi), ("a_lo", a_lo), ("b_hi", b_hi), ("b_lo", b_lo)):
            seg[COL[name]] = col[first].view(np.int64)
        seg[COL["port_a"]] = pa[first]
        seg[COL["port_b"]] = pb[first]
        seg[_FIRST] = np.minimum.reduceat(ts, starts)
        seg[_LAST] = np.maximum.reduceat(ts, starts)
        packets_ab = np.add.reduceat(from_a.view(np.int8), starts, dtype=np.int64)
        bytes_ab = np.add.reduceat(wl_a, starts)
        seg[COL["packets_ab"]] = packets_ab
        seg[COL["bytes_ab"]] = bytes_ab
        seg[COL["packets_ba"]] = count - packets_ab
        seg[COL["bytes_ba"]] = np.add.reduceat(wl, starts) - bytes_ab
        if (flags != 0).any():
            flags_a = np.where(from_a, flags, 0)
            seg[COL["flags_a"]] = np.bitwise_or.reduceat(flags_a, starts)
            seg[COL["flags_b"]] = np.bitwise_or.reduceat(flags ^ flags_a, starts)
        else:
            seg[_ORS] = 0
        if pure_syn.any():
            seg[COL["syn_a_ns"]] = np.minimum.reduceat(np.where(pure_syn & from_a, ts, NO_SYN), starts)
            seg[COL["syn_b_ns"]] = np.minimum.reduceat(np.where(pure_syn & ~from_a, ts, NO_SYN), starts)
        else:
            seg[[COL["syn_a_ns"], COL["syn_b_ns"]]] = NO_SYN
        seg[COL["first_from_a"]] = from_a[starts]
        return seg

    # -- segments -> active table ----------------------------------------------------------

    def _merge(self) -> None:
        """One round: active flows and waiting segments, sorted by key, reduced per flow.

        Fields are sorted and reduced one at a time straight into the finished and active
        tables, so a round holds its input and its output but no full intermediate copy.
        """
        self._reduce_window()
        if not self._pending:
            return
        parts = [self._active, *self._pending]
        self._pending, self._pending_rows = [], 0
        self._active = _empty()

        def field(c: int) -> npt.NDArray[np.int64]:
            return np.concatenate([p[c] for p in parts])

        h = field(_H)
        order = stable_order(h)
        h, check = h[order], field(_CHECK)[order]
        same = h[1:] == h[:-1]
        clash = same & (check[1:] != check[:-1])
        if clash.any():
            # a clash of the first hash alone: order by both (stable keeps time order)
            self.stats.hash_collisions += int(np.count_nonzero(clash))
            again = np.lexsort((check, h))
            order, h, check = order[again], h[again], check[again]
            same = (h[1:] == h[:-1]) & (check[1:] == check[:-1])
        del h, check
        new_key = np.empty(len(order), dtype=bool)
        new_key[0] = True
        np.logical_not(same, out=new_key[1:])
        first_ns, last_ns = field(_FIRST)[order], field(_LAST)[order]
        gap = np.zeros(len(order), dtype=bool)
        gap[1:] = first_ns[1:] - last_ns[:-1] > self.idle_timeout_ns
        starts = np.flatnonzero(new_key | gap)
        del first_ns

        def reduced(c: int, v: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.int64]:
            v = field(c)[order] if v is None else v
            if c in _SUMS:
                return np.add.reduceat(v, starts)
            if c in _MINS:
                return np.minimum.reduceat(v, starts)
            if c == _LAST:
                return np.maximum.reduceat(v, starts)
            if c in _ORS:
                return np.bitwise_or.reduceat(v, starts)
            return v[starts]

        # what decides a flow's end, first; then every field goes straight to its table
        last = reduced(_LAST, last_ns)
        del last_ns
        ends = {c: reduced(c) for c in (COL["proto"], *_ORS)}
        # a part followed by another part of its key ended idle; others may be idle by now
        last_of_key = np.ones(len(starts), dtype=bool)
        last_of_key[:-1] = new_key[starts[1:]]
        finished = ~last_of_key | (last < self._watermark - self.idle_timeout_ns)
        # closed TCP (RST, or FIN both ways) and quiet since: done, as Zeek's tcp_close_delay
        closed = _closed(ends[COL["flags_a"]], ends[COL["flags_b"]], ends[COL["proto"]])
        finished |= closed & (last < self._watermark - CLOSED_GRACE_NS)
        over = len(starts) - int(np.count_nonzero(finished)) - self.max_flows
        if over > 0:
            # the cap: push the least recently seen flows out early, and count them
            alive = np.flatnonzero(~finished)
            finished[alive[np.argpartition(last[alive], over - 1)[:over]]] = True
            self.stats.flows_exported_early += over
        done, active = _empty(int(np.count_nonzero(finished))), _empty(int(np.count_nonzero(~finished)))
        for c in range(len(COLUMNS)):
            v = last if c == _LAST else ends.pop(c, None)
            v = reduced(c) if v is None else v
            done[c], active[c] = v[finished], v[~finished]
        if done.shape[1]:
            self._done.append(done)
        self._active = active


def _closed(flags_a: npt.NDArray[np.int64], flags_b: npt.NDArray[np.int64], proto: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """TCP flows that were reset, or closed with a FIN from each side."""
    ended = (((flags_a | flags_b) & TCP_RST) != 0) | ((flags_a & flags_b & TCP_FIN) != 0)
    return ended & (proto == IPPROTO_TCP)


#: low bits of a sort word that carry the element's position (the rest: the hash's top bits)
_POS_BITS = 24


def stable_order(h: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The stable argsort of ``h``, computed with a plain value sort where it can be.

    Sorting words made of the hash's top bits and the element's position is several times
    faster than a stable argsort (numpy's value sort is vectorized) and keeps equal hashes in
    input order. If two different hashes share their top bits, their elements could
    interleave; then (rarely) the stable argsort is used instead.
    """
    n = len(h)
    if n >= 1 << _POS_BITS:
        return np.argsort(h, kind="stable")
    words = (h & ~np.int64((1 << _POS_BITS) - 1)) | np.arange(n, dtype=np.int64)
    words.sort()
    order = words & ((1 << _POS_BITS) - 1)
    hs = h[order]
    top_same = (words[1:] >> _POS_BITS) == (words[:-1] >> _POS_BITS)
    if (top_same & (hs[1:] != hs[:-1])).any():
        return np.argsort(h, kind="stable")
    return order
