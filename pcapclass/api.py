"""The library API the CLI calls: captures in, pandas DataFrames out.

``classify_file`` is the one-call form; ``Classifier`` is the same pipeline fed step by step
(several files, or batches from a live source), so the CLI and a script never diverge.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import schema
from .addresses import Network, parse_networks
from .classify import Servers, classify, empty_flows
from .decode import FRAGMENT_PROTO_BASE, Packets, Status, decode
from .errors import CaptureError
from .evidence import DEFAULT_EPM_EXPIRY, EvidenceCollector
from .flows import FlowTable, Records, flow_keys
from .rules import RuleSet, load_rules
from .sources import CaptureFile, PacketBatch
from .summarize import breakdown

DEFAULT_IDLE_TIMEOUT = 120.0
DEFAULT_MAX_FLOWS = 2_000_000

ProgressFn = Callable[[int, int], None]


@dataclass
class CaptureCounts:
    """What one input contributed: the capture.csv row."""

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
    caplen_over_snaplen: int = 0
    hash_collisions: int = 0
    flows_exported_early: int = 0
    #: packets a live capture's kernel or capture process reported dropping
    drops: int = 0
    error: CaptureError | None = None

    def add(self, pk: Packets) -> None:
        """Count one decoded batch."""
        self.packets += len(pk)
        self.bytes += int(pk.wirelen.sum())
        lo, hi = int(pk.ts_ns.min()), int(pk.ts_ns.max())
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
        status = np.bincount(pk.status, minlength=len(Status))
        self.non_ip_packets += int(status[Status.NON_IP])
        self.truncated_packets += int(status[Status.TRUNCATED])
        self.undecoded_packets += int(status[Status.UNDECODED])
        self.fragment_packets += int(np.count_nonzero((pk.proto >= FRAGMENT_PROTO_BASE) & (pk.status == Status.FLOW)))


@dataclass
class Result:
    """Flows, breakdown and per-capture accounting of one run."""

    flows: pd.DataFrame
    breakdown: pd.DataFrame
    captures: pd.DataFrame
    servers: Servers
    errors: list[CaptureError] = field(default_factory=list)

    @property
    def error(self) -> CaptureError | None:
        """The first fault met, or None."""
        return self.errors[0] if self.errors else None

    @property
    def partial(self) -> bool:
        """True when some capture could not be read to its end."""
        return bool(self.errors)

    @property
    def stats(self) -> dict[str, Any]:
        """Totals over all captures: packets, bytes, flows and the anomaly counters."""
        numeric = [c.name for c in schema.CAPTURE if c.dtype == "int64"]
        totals: dict[str, Any] = {name: int(self.captures[name].sum()) for name in numeric}
        totals.update(partial=self.partial, error=str(self.error) if self.error else "",
                      servers=self.servers.describe(), servers_inferred=self.servers.inferred)  # fmt: skip
        return totals


class Classifier:
    """The pipeline, fed one capture (or one batch) at a time; ``result()`` classifies all.

    Flows never span two captures: each capture's table is flushed at its end, so that a
    flow row belongs to exactly one input file.
    """

    def __init__(
        self,
        *,
        servers: Sequence[str | Network] = (),
        rules: RuleSet | Iterable[str | os.PathLike[str]] | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_flows: int = DEFAULT_MAX_FLOWS,
        payload: bool = True,
        epm_expiry: float = DEFAULT_EPM_EXPIRY,
    ) -> None:
        self.rules = rules if isinstance(rules, RuleSet) else load_rules(rules or ())
        #: the payload stage (None with ``payload=False``: services by port only)
        self.evidence = EvidenceCollector(epm_expiry=epm_expiry, idle_timeout=idle_timeout) if payload else None
        self.lookup = self.rules.lookup()
        self.networks = [s if not isinstance(s, str) else parse_networks([s])[0] for s in servers]
        self.idle_timeout_ns = int(idle_timeout * 1e9)
        self.max_flows = max_flows
        self.counts: list[CaptureCounts] = []
        self._records: list[Records] = []
        self._capture_index: list[np.ndarray] = []
        self.table = self._new_table()

    def _new_table(self) -> FlowTable:
        return FlowTable(idle_timeout_ns=self.idle_timeout_ns, max_flows=self.max_flows)

    def begin(self, name: str, fmt: str = "") -> CaptureCounts:
        """Start a new input; later ``feed`` calls count towards it."""
        self.counts.append(CaptureCounts(capture=name, format=fmt))
        self.table = self._new_table()
        if self.evidence is not None:
            self.evidence.new_capture()
        return self.counts[-1]

    def feed(self, batch: PacketBatch) -> None:
        """Decode a batch and fold it into the current input's flow table."""
        pk = decode(batch)
        keys = flow_keys(pk)
        self.counts[-1].add(pk)
        if self.evidence is not None:
            self.evidence.feed(batch, pk, keys)
        self.table.update(pk, keys)

    def end(self) -> None:
        """Close the current input: every open flow becomes a finished record."""
        self.table.flush()
        recs = self.table.drain()
        # in order of first packet: result() then only stacks the captures
        recs = Records(recs.cols[:, np.argsort(recs["first_ns"], kind="stable")])
        counts = self.counts[-1]
        counts.hash_collisions = self.table.stats.hash_collisions
        counts.flows_exported_early = self.table.stats.flows_exported_early
        self._records.append(recs)
        self._capture_index.append(np.full(len(recs), len(self.counts) - 1, dtype=np.int64))

    def read(self, path: str | os.PathLike[str], *, progress: ProgressFn | None = None) -> CaptureCounts:
        """Read one capture to its end or its first fault (recorded, not raised).

        Raises CaptureError only when the file cannot be opened or is not a capture at all.
        """
        try:
            cap = CaptureFile(path)
        except CaptureError as exc:
            self.begin(os.fspath(path)).error = exc
            self.end()
            raise
        counts = self.begin(cap.path, cap.format)
        try:
            for batch in cap:
                self.feed(batch)
                if progress is not None:
                    progress(cap.consumed, counts.packets)
        except CaptureError as exc:
            counts.error = exc
        finally:
            counts.caplen_over_snaplen = cap.caplen_over_snaplen
            self.end()
        return counts

    def result(self, *, by: Sequence[str] = ("service", "direction")) -> Result:
        """Classify every finished flow and summarize."""
        recs = Records.concat(self._records)
        index = np.concatenate(self._capture_index) if self._capture_index else np.zeros(0, np.int64)
        evidence = self.evidence.evidence() if self.evidence is not None else None
        flows, servers = classify(recs, self.lookup, self.networks, evidence)
        if flows.empty:
            flows = empty_flows()
        else:
            names = np.array([c.capture for c in self.counts], dtype=object)
            flows.insert(0, "capture", pd.Categorical(names[index]))
        flow_count = np.bincount(index, minlength=len(self.counts))
        captures = pd.DataFrame(
            [_capture_row(c, int(flow_count[i]), servers) for i, c in enumerate(self.counts)],
            columns=schema.names(schema.CAPTURE),
        )
        return Result(
            flows=flows,
            breakdown=breakdown(flows, self.lookup.ids[1:] + ("other",), by),
            captures=captures,
            servers=servers,
            errors=[c.error for c in self.counts if c.error is not None],
        )


def _capture_row(c: CaptureCounts, flows: int, servers: Servers) -> dict[str, Any]:
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
        "caplen_over_snaplen": c.caplen_over_snaplen,
        "hash_collisions": c.hash_collisions,
        "flows_exported_early": c.flows_exported_early,
        "drops": c.drops,
        "servers": servers.describe(),
        "servers_inferred": servers.inferred,
        "partial": c.error is not None,
        "error": str(c.error) if c.error is not None else "",
    }


def classify_file(
    path: str | os.PathLike[str],
    *,
    servers: Sequence[str | Network] = (),
    rules: RuleSet | Iterable[str | os.PathLike[str]] | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    max_flows: int = DEFAULT_MAX_FLOWS,
    payload: bool = True,
    epm_expiry: float = DEFAULT_EPM_EXPIRY,
    by: Sequence[str] = ("service", "direction"),
) -> Result:
    """Classify one capture file (pcap, pcapng, gzip; ``-`` for stdin).

    A fault in the middle of the file does not raise: the result holds everything before
    it, ``partial`` is true and ``error`` says where. A file that cannot be opened, or is
    not a capture at all, raises CaptureError. ``payload=False`` skips the payload stage
    (services by port only); ``epm_expiry`` is how long an endpoint-mapper reply vouches for
    the port it handed out; ``by`` groups the breakdown (add ``"detail"`` for OWA / ActiveSync /
    RPC over HTTP ... rows).

    >>> r = classify_file("tests/fixtures/pcaps/exchange_services.pcap")  # doctest: +SKIP
    >>> r.breakdown[["service", "direction", "packets"]]  # doctest: +SKIP
    """
    clf = Classifier(servers=servers, rules=rules, idle_timeout=idle_timeout, max_flows=max_flows,
                     payload=payload, epm_expiry=epm_expiry)  # fmt: skip
    clf.read(path)
    return clf.result(by=by)
