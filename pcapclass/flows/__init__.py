"""Flows: the bidirectional flow table (``table``) and the join of evidence rows to flows (``rows``)."""

from .rows import FlowIndex, FlowRows
from .table import (
    CLOSED_GRACE_NS,
    COLUMNS,
    IPPROTO_TCP,
    KEY_COLUMNS,
    NO_SYN,
    NON_FLOW_BASE,
    FlowKeys,
    FlowStats,
    FlowTable,
    Records,
    flow_keys,
)

__all__ = ["CLOSED_GRACE_NS", "COLUMNS", "IPPROTO_TCP", "KEY_COLUMNS", "NON_FLOW_BASE", "NO_SYN", "FlowIndex", "FlowKeys",
           "FlowRows", "FlowStats", "FlowTable", "Records", "flow_keys"]  # fmt: skip
