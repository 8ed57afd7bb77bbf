"""Capture accounting: what each input contributed, and its capture.csv row (``schema.CAPTURE``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .classify import Servers
from .decode import Packets, Status, totals
from .errors import CaptureError
from .evidence.anomalies import EvidenceAnomalies
from .sources import ReadAnomalies


@dataclass(kw_only=True)
class CaptureCounts(ReadAnomalies, EvidenceAnomalies):
    """What one input contributed: the capture.csv row (the reader's and the payload stage's
    anomaly counters, and these)."""

    capture: str
    format: str = ""
    packets: int = 0
    bytes: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    non_ip_packets: int = 0
    truncated_packets: int = 0
    undecoded_packets: int = 0
    fragment_packets: int = 0
    hash_collisions: int = 0
    flows_exported_early: int = 0
    #: packets a live capture's kernel or capture process reported dropping
    drops: int = 0
    error: CaptureError | None = None

    def add(self, pk: Packets) -> None:
        """Count one decoded batch."""
        if not len(pk):
            return
        total, lo, hi, status, fragments = totals(pk)
        self.packets += len(pk)
        self.bytes += total
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
        self.non_ip_packets += status[Status.NON_IP]
        self.truncated_packets += status[Status.TRUNCATED]
        self.undecoded_packets += status[Status.UNDECODED]
        self.fragment_packets += fragments

    def add_evidence(self, counts: EvidenceAnomalies) -> None:
        """Add what the payload stage counted (``EvidenceCollector.take_anomalies``)."""
        for f in fields(EvidenceAnomalies):
            setattr(self, f.name, getattr(self, f.name) + getattr(counts, f.name))


def capture_row(c: CaptureCounts, flows: int, servers: Servers) -> dict[str, Any]:
    """The capture.csv row of ``c`` (``schema.CAPTURE``), with the flows it gave and the servers used."""
    return {
        "capture": c.capture,
        "format": c.format,
        "packets": c.packets,
        "bytes": c.bytes,
        "flows": flows,
        "first_ts": c.first_ns / 1e9 if c.first_ns is not None else np.nan,
        "last_ts": c.last_ns / 1e9 if c.last_ns is not None else np.nan,
        "non_ip_packets": c.non_ip_packets,
        "truncated_packets": c.truncated_packets,
        "undecoded_packets": c.undecoded_packets,
        "fragment_packets": c.fragment_packets,
        **{f.name: getattr(c, f.name) for f in fields(ReadAnomalies)},
        "hash_collisions": c.hash_collisions,
        "flows_exported_early": c.flows_exported_early,
        **{f.name: getattr(c, f.name) for f in fields(EvidenceAnomalies)},
        "drops": c.drops,
        "servers": servers.describe(),
        "servers_inferred": servers.inferred,
        "partial": c.error is not None,
        "error": str(c.error) if c.error is not None else "",
    }
