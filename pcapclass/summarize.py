"""pandas aggregations of flows: the per service × direction breakdown."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from . import schema

DIRECTIONS = ("inbound", "outbound", "other")


def breakdown(flows: pd.DataFrame, service_order: Sequence[str] = (), by: Sequence[str] = ("service", "direction")) -> pd.DataFrame:
    """One row per (service, direction): flows, packets and bytes each way, first/last seen.

    Rows follow the rules' service order, then direction; ``by`` may add grouping columns.
    """
    if flows.empty:
        return empty_breakdown()
    return _ordered(partial_breakdown(flows, by), service_order, list(by))


def partial_breakdown(flows: pd.DataFrame, by: Sequence[str] = ("service", "direction")) -> pd.DataFrame:
    """``breakdown`` of one part of the flows (a block, an interval), in no particular row
    order: what ``merge`` combines, without ordering each part it will order again."""
    keys = list(by)
    if flows.empty:
        return empty_breakdown()
    flows = flows.assign(_mismatch=(flows["evidence"] == "port-mismatch").astype(np.int64))
    grouped = flows.groupby(keys, sort=False, dropna=False, observed=True)
    out = grouped.agg(
        flows=("packets_c2s", "size"),
        port_mismatch_flows=("_mismatch", "sum"),
        packets_c2s=("packets_c2s", "sum"),
        bytes_c2s=("bytes_c2s", "sum"),
        packets_s2c=("packets_s2c", "sum"),
        bytes_s2c=("bytes_s2c", "sum"),
        first_ts=("first_ts", "min"),
        last_ts=("last_ts", "max"),
    ).reset_index()
    out["packets"] = out["packets_c2s"] + out["packets_s2c"]
    out["bytes"] = out["bytes_c2s"] + out["bytes_s2c"]
    return out


def empty_breakdown() -> pd.DataFrame:
    """A breakdown with no rows and the schema's columns."""
    return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in schema.BREAKDOWN})


def merge(parts: Sequence[pd.DataFrame], service_order: Sequence[str] = (), by: Sequence[str] = ("service", "direction")) -> pd.DataFrame:
    """Breakdowns of disjoint traffic (intervals, files, workers) combined into one.

    The associative merge of the design: counts add up, first seen is the minimum, last
    seen the maximum; so the totals of a live capture are the merge of its intervals.
    """
    parts = [p for p in parts if not p.empty]
    if not parts:
        return empty_breakdown()
    keys = list(by)
    sums = [c for c in schema.names(schema.BREAKDOWN) if c not in (*keys, "first_ts", "last_ts")]
    out = pd.concat(parts, ignore_index=True).groupby(keys, sort=False, dropna=False, observed=True).agg(
        {**{c: "sum" for c in sums}, "first_ts": "min", "last_ts": "max"}
    ).reset_index()
    return _ordered(out, service_order, keys)


def _ordered(out: pd.DataFrame, service_order: Sequence[str], keys: list[str]) -> pd.DataFrame:
    """Rules' service order, then direction; the schema's column order."""
    rank = {s: i for i, s in enumerate(service_order)}
    # a small table: plain strings read better than the flows' categoricals, and sort as ranked
    out = out.astype({k: str for k in keys})
    out = out.assign(
        _s=out["service"].map(lambda s: rank.get(s, len(rank))),
        _d=out["direction"].map(lambda d: DIRECTIONS.index(d) if d in DIRECTIONS else len(DIRECTIONS)),
    ).sort_values(["_s", "service", "_d", *keys[2:]], kind="stable")
    extra = [k for k in keys if k not in ("service", "direction")]
    cols = ["service", "direction", *extra] + [c for c in schema.names(schema.BREAKDOWN) if c not in ("service", "direction")]
    return out[cols].reset_index(drop=True)
