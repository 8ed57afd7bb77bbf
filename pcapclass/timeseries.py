"""Offline time series: each packet counted in the interval its timestamp falls in, per flow,
then summed per service and direction once the flows are classified (timeseries.csv).

A flow that spans several intervals is split by its packets, as tshark's ``-z io,stat``
splits a capture. Reading keeps about one row per (interval, flow, direction) that had
packets, not one per packet: the packets' rows are summed per (interval, flow, direction)
whenever they have doubled since the last sum (one large groupby is cheaper than one per
batch). Intervals start at the first packet read, every ``interval`` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import schema
from .addresses import format_addresses
from .flows import NON_FLOW_BASE, FlowIndex, FlowKeys, Records
from .summarize import merge, partial_breakdown

#: what a row of the accumulator is counted by: the interval, the flow's key and a time in its span, the side
_KEY = ["interval", "hash", "check", "started", "from_a"]
#: rows held before the first folding together
_FOLD_AT = 1 << 16


class PacketIntervals:
    """Packets and bytes per (interval, flow, direction), fed batch by batch while reading;
    ``part`` hands over those of a block of classified flows."""

    def __init__(self, interval: float) -> None:
        self.interval_ns = round(interval * 1e9)
        #: the first packet read: where interval 0 starts
        self.origin_ns: int | None = None
        #: rows summed per key, and the packets' rows added since
        self._held = pd.DataFrame({c: pd.Series(dtype=np.int64) for c in [*_KEY, "packets", "bytes"]})
        self._parts: list[pd.DataFrame] = []
        self._rows = 0
        self._fold_at = _FOLD_AT

    def add(self, ts_ns: npt.NDArray[np.int64], wirelen: npt.NDArray[np.int64], keys: FlowKeys, started: npt.NDArray[np.int64]) -> None:
        """Count one batch; ``started`` as the flow table's ``update`` wrote it."""
        if not len(ts_ns):
            return
        if self.origin_ns is None:
            self.origin_ns = int(ts_ns[0])
        batch = pd.DataFrame({"interval": (ts_ns - self.origin_ns) // self.interval_ns, "hash": keys.hash, "check": keys.check,
                              "started": started, "from_a": keys.from_a, "packets": np.ones(len(ts_ns), np.int64), "bytes": wirelen})  # fmt: skip
        self._keep([batch], len(batch))

    def absorb(self, other: PacketIntervals) -> None:
        """Take in the counts of ``other``, which read other captures with the same origin."""
        self._keep([other._held, *other._parts], other._rows)

    def _keep(self, parts: list[pd.DataFrame], rows: int) -> None:
        """Hold ``parts`` (``rows`` rows in all), folded once the rows held outgrow the last fold."""
        self._parts += parts
        self._rows += rows
        if self._rows >= self._fold_at:
            self._fold()
            self._fold_at = max(_FOLD_AT, 2 * self._rows)

    def _fold(self) -> pd.DataFrame:
        """The rows held, summed per key (kept so)."""
        if self._parts:
            rows = pd.concat([self._held, *self._parts], ignore_index=True)
            self._held = rows.groupby(_KEY, sort=False).sum().reset_index()
            self._parts = []
        self._rows = len(self._held)
        return self._held

    def part(self, recs: Records, flows: pd.DataFrame) -> pd.DataFrame:
        """The time series of one block of flows (``flows`` classified from ``recs``, row for
        row), per (interval, service, direction), to ``merge`` with other blocks'; their rows
        leave the accumulator."""
        held = self._fold()
        flow = FlowIndex(recs).flows(held["hash"].to_numpy().view(np.uint64), held["check"].to_numpy().view(np.uint64),
                                     held["started"].to_numpy())  # fmt: skip
        mine = flow >= 0
        self._held, self._rows = held[~mine], int(np.count_nonzero(~mine))
        rows, flow = held[mine], flow[mine]
        c2s = rows["from_a"].to_numpy() == _client_is_a(recs, flows)[flow]
        packets, nbytes = rows["packets"].to_numpy(), rows["bytes"].to_numpy()
        per_flow = pd.DataFrame({
            "interval": rows["interval"].to_numpy(), "flow": flow,
            "packets_c2s": np.where(c2s, packets, 0), "bytes_c2s": np.where(c2s, nbytes, 0),
            "packets_s2c": np.where(c2s, 0, packets), "bytes_s2c": np.where(c2s, 0, nbytes),
        }).groupby(["interval", "flow"], sort=False).sum().reset_index()  # fmt: skip
        labels = flows[["service", "direction", "evidence", "first_ts", "last_ts"]].iloc[per_flow["flow"].to_numpy()].reset_index(drop=True)
        return partial_breakdown(pd.concat([per_flow, labels], axis=1), ("interval", "service", "direction"))

    def table(self, parts: Sequence[pd.DataFrame], service_order: Sequence[str]) -> pd.DataFrame:
        """The time series of the whole run from the blocks' ``part``s: schema.TIMESERIES,
        by interval, then service and direction as the breakdown orders them."""
        ts = merge(parts, service_order, ("interval", "service", "direction"))
        origin = self.origin_ns or 0
        # the interval of a timestamp saturated at int64's end (ts_out_of_range) ends there too
        last = (np.iinfo(np.int64).max - origin) // self.interval_ns - 1
        start = origin + np.minimum(ts["interval"].to_numpy(np.int64), last) * self.interval_ns
        ts = ts.assign(interval_start=start / 1e9, interval_end=(start + self.interval_ns) / 1e9, drops=0)
        return ts[schema.names(schema.TIMESERIES)].astype({c.name: c.dtype for c in schema.TIMESERIES})


def _client_is_a(recs: Records, flows: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """Which end of each record ``classify`` took for the client: the one whose address and
    port are the client's; where both ends read the same (pseudo-flows of non-IP frames),
    the end whose counts are the client's."""
    blank = np.asarray(recs["proto"], np.int64) >= NON_FLOW_BASE

    def u64(name: str) -> npt.NDArray[np.uint64]:
        return np.asarray(recs[name], np.uint64)

    a, b = format_addresses(u64("a_hi"), u64("a_lo"), blank), format_addresses(u64("b_hi"), u64("b_lo"), blank)
    client, port = flows["client_addr"].to_numpy(object), flows["client_port"].to_numpy()
    as_a = (client == np.asarray(a, dtype=object)) & (port == recs["port_a"])
    as_b = (client == np.asarray(b, dtype=object)) & (port == recs["port_b"])
    by_counts = (flows["packets_c2s"].to_numpy() == recs["packets_ab"]) & (flows["bytes_c2s"].to_numpy() == recs["bytes_ab"])
    client_is_a: npt.NDArray[np.bool_] = np.where(as_a & as_b, by_counts, as_a)
    return client_is_a
