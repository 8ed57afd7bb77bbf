"""pandas aggregations of flows: the per service × direction breakdown."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from . import schema

DIRECTIONS = ("inbound", "outbound", "other")


def breakdown(flows: pd.DataFrame, service_order: Sequence[str] = (), by: Sequence[str] = ("service", "direction")) -> pd.DataFrame:
    """One row per (service, direction): flows, packets and bytes each way, first/last seen.

    Rows follow the rules' service order, then direction; ``by`` may add grouping columns.
    """
    keys = list(by)
    if flows.empty:
        return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in schema.BREAKDOWN})
    grouped = flows.groupby(keys, sort=False, dropna=False)
    out = grouped.agg(
        flows=("packets_c2s", "size"),
        packets_c2s=("packets_c2s", "sum"),
        bytes_c2s=("bytes_c2s", "sum"),
        packets_s2c=("packets_s2c", "sum"),
        bytes_s2c=("bytes_s2c", "sum"),
        first_ts=("first_ts", "min"),
        last_ts=("last_ts", "max"),
    ).reset_index()
    out["packets"] = out["packets_c2s"] + out["packets_s2c"]
    out["bytes"] = out["bytes_c2s"] + out["bytes_s2c"]
    rank = {s: i for i, s in enumerate(service_order)}
    out = out.assign(
        _s=out["service"].map(lambda s: rank.get(s, len(rank))),
        _d=out["direction"].map(lambda d: DIRECTIONS.index(d) if d in DIRECTIONS else len(DIRECTIONS)),
    ).sort_values(["_s", "service", "_d", *keys[2:]], kind="stable")
    extra = [k for k in keys if k not in ("service", "direction")]
    cols = ["service", "direction", *extra] + [c for c in schema.names(schema.BREAKDOWN) if c not in ("service", "direction")]
    return out[cols].reset_index(drop=True)
