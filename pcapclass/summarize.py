"""pandas aggregations of flows: the breakdown per service × direction, or any grouping of flow labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from . import schema

DIRECTIONS = ("inbound", "outbound", "other")
DEFAULT_BY = ("service", "direction")
#: the key of the row ``top`` sums the smaller groups of a service into
OTHER_GROUPS = "(other)"
#: the breakdown's counts: summed when parts merge (first and last seen take min and max)
COUNTS = tuple(c for c in schema.names(schema.BREAKDOWN) if c not in (*DEFAULT_BY, "first_ts", "last_ts"))


def grouping(by: Sequence[str]) -> tuple[str, ...]:
    """``by`` checked against the flows' label columns, without repeats.

    >>> grouping(["server_addr", "service", "server_addr"])
    ('server_addr', 'service')

    Raises ValueError naming a column that is not a flow label (a counter, a time, a typo).
    """
    keys = tuple(dict.fromkeys(by))
    if not keys:
        raise ValueError("cannot group by no column")
    for k in keys:
        if k not in schema.GROUP_COLUMNS:
            raise ValueError(f"cannot group by {k!r}: not a flow label column (one of {', '.join(schema.GROUP_COLUMNS)})")
    return keys


def breakdown(flows: pd.DataFrame, service_order: Sequence[str] = (), by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """One row per group of ``by`` (default: service and direction): flows, packets and bytes
    each way, first/last seen.

    Rows follow the rules' service order, then direction, then the other keys.
    """
    return _ordered(partial_breakdown(flows, by), service_order, list(by))


def partial_breakdown(flows: pd.DataFrame, by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """``breakdown`` of one part of the flows (a block, an interval), its groups in the order
    their first flows come: what ``merge`` combines, without ordering each part it will order
    again.

    numpy rather than a pandas groupby: every block is summed so, and a groupby's four
    aggregations and its frame took twice as long."""
    keys = list(by)
    if flows.empty:
        return empty_breakdown(keys)
    # each flow's group, numbered in the order groups first come (missing keys are a group)
    group = np.zeros(len(flows), dtype=np.int64)
    for k in keys:
        codes, uniques = pd.factorize(flows[k], use_na_sentinel=False)
        group = pd.factorize(group * len(uniques) + codes)[0].astype(np.int64)
    top = np.maximum.accumulate(group)
    first = np.flatnonzero(np.r_[True, top[1:] > top[:-1]])
    columns: dict[str, Any] = {k: flows[k].array.take(first) for k in keys}
    columns["flows"] = np.bincount(group, minlength=first.size)
    mismatch = (flows["evidence"] == "port-mismatch").to_numpy(dtype=bool)
    columns["port_mismatch_flows"] = np.bincount(group[mismatch], minlength=first.size)
    for c in ("packets_c2s", "bytes_c2s", "packets_s2c", "bytes_s2c"):
        columns[c] = np.zeros(first.size, dtype=np.int64)
        np.add.at(columns[c], group, flows[c].to_numpy(np.int64))
    for c, extreme in (("first_ts", np.fmin), ("last_ts", np.fmax)):  # missing times skipped, as pandas does
        ts = flows[c].to_numpy(np.float64)
        columns[c] = ts[first]
        extreme.at(columns[c], group, ts)
    columns["packets"] = columns["packets_c2s"] + columns["packets_s2c"]
    columns["bytes"] = columns["bytes_c2s"] + columns["bytes_s2c"]
    return pd.DataFrame(columns)


def empty_breakdown(by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """A breakdown with no rows: the keys ``by``, then the schema's counts and times."""
    columns = {c.name: c for c in schema.BREAKDOWN}
    keys = {k: pd.Series(dtype=columns[k].dtype if k in columns else "string") for k in by}
    return pd.DataFrame({**keys, **{c.name: pd.Series(dtype=c.dtype) for c in schema.BREAKDOWN if c.name not in DEFAULT_BY}})


def merge(parts: Sequence[pd.DataFrame], service_order: Sequence[str] = (), by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """Breakdowns of disjoint traffic (intervals, files, workers) combined into one.

    The associative merge of the design: counts add up, first seen is the minimum, last
    seen the maximum; so the totals of a live capture are the merge of its intervals.
    """
    keys = list(by)
    parts = [p for p in parts if not p.empty]
    if not parts:
        return _ordered(empty_breakdown(keys), service_order, keys)
    out = pd.concat(parts, ignore_index=True).groupby(keys, sort=False, dropna=False, observed=True).agg(
        {**{c: "sum" for c in COUNTS}, "first_ts": "min", "last_ts": "max"}
    ).reset_index()
    return _ordered(out, service_order, keys)


def top(b: pd.DataFrame, n: int | None, by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """The ``n`` largest groups (by bytes) of each service of breakdown ``b``, in ``b``'s
    order, and after them one row per service summing the rest, its other keys ``(other)``:
    totals still add up. Without ``service`` among the keys the whole table is one service;
    ``n`` None keeps every group.

    >>> b = pd.DataFrame({"service": ["smtp"] * 3, "server_addr": ["a", "b", "c"], "bytes": [5, 9, 1],
    ...                   **{c: [1, 1, 1] for c in COUNTS if c != "bytes"}, "first_ts": [3.0, 1.0, 2.0], "last_ts": [4.0, 5.0, 6.0]})
    >>> top(b, 1, ["service", "server_addr"])[["service", "server_addr", "bytes", "flows", "first_ts", "last_ts"]].values.tolist()
    [['smtp', 'b', 9, 1, 1.0, 5.0], ['smtp', '(other)', 6, 2, 2.0, 6.0]]
    """
    if n is None:
        return b
    keys = list(by)
    group = b["service"] if "service" in keys else pd.Series("", index=b.index)
    keep = b.groupby(group, sort=False)["bytes"].rank(method="first", ascending=False) <= n
    if keep.all():
        return b
    rest = b[~keep].groupby(group[~keep], sort=False).agg({**{c: "sum" for c in COUNTS}, "first_ts": "min", "last_ts": "max"})
    others = rest.reset_index(drop=True).assign(**{k: OTHER_GROUPS for k in keys})
    if "service" in keys:
        others["service"] = rest.index.to_numpy()
    place = {s: i for i, s in enumerate(dict.fromkeys(group))}
    out = pd.concat([b[keep].assign(_o=0), others[b.columns].assign(_o=1)], ignore_index=True)
    out = out.assign(_s=(out["service"] if "service" in keys else pd.Series("", index=out.index)).map(place))
    return out.sort_values(["_s", "_o"], kind="stable").drop(columns=["_s", "_o"]).reset_index(drop=True)


def _ordered(out: pd.DataFrame, service_order: Sequence[str], keys: list[str]) -> pd.DataFrame:
    """Rows in the order of the keys (service in the rules' order, direction as DIRECTIONS);
    the flow label keys as text (a small table: plain strings read better than the flows'
    categoricals); service and direction first, then the other keys, then the counts."""
    rank = {s: i for i, s in enumerate(service_order)}
    out = out.astype({k: str for k in keys if isinstance(out[k].dtype, pd.CategoricalDtype)})
    order: dict[str, pd.Series] = {}
    for k in keys:
        if k == "service":
            order["_s"] = out[k].map(lambda s: rank.get(s, len(rank)))
        elif k == "direction":
            order["_d"] = out[k].map(lambda d: DIRECTIONS.index(d) if d in DIRECTIONS else len(DIRECTIONS))
        order[k] = out[k]
    out = out.assign(**{k: v for k, v in order.items() if k.startswith("_")})
    out = out.sort_values(list(order), kind="stable", na_position="first")
    out = out.assign(**{k: _text(out[k]) for k in keys if k in schema.GROUP_COLUMNS})
    lead = [k for k in DEFAULT_BY if k in keys] + [k for k in keys if k not in DEFAULT_BY]
    rest = [c for c in schema.names(schema.BREAKDOWN) if c not in DEFAULT_BY]
    return out[lead + rest].reset_index(drop=True)


def _text(column: pd.Series) -> pd.Series:
    """A key column as plain strings, as the flows' CSV writes it: booleans ``true``/``false``,
    missing values empty."""
    if pd.api.types.is_bool_dtype(column):
        return column.map({True: "true", False: "false"}).astype(str)
    return column.astype("string").fillna("").astype(str)
