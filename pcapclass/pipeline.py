"""The pipeline's second phase: what the reading phase gathered, merged into one classified result.

The first phase (read → decode → flows → evidence, ``api.Classifier`` offline, ``live`` by the
clock) leaves a ``Gathered``: the finished flows, the evidence tables and the per-capture
counters. ``merge`` and ``merge_to`` take it the rest of the way (infer servers → classify →
summarize → result or files); neither reads a packet.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import schema
from .accounting import CaptureCounts, capture_row
from .addresses import Network, RowSet, distinct_rows
from .classify import (
    Answers,
    Servers,
    Shared,
    VerdictArrays,
    block_facts,
    classify,
    empty_flows,
    epm_evidence,
    infer_servers,
    rpc_sessions_among,
)
from .errors import CaptureError
from .evidence import Evidence
from .flows import FlowRows, Records
from .output import Format, Outputs, Table, write_tables
from .servers import merged
from .store import FlowStore
from .summarize import breakdown, partial_breakdown, top
from .summarize import merge as merge_partials
from .tables.server_evidence import ServerEvidenceRules
from .tables.services import PortLookup
from .timeseries import PacketIntervals


@dataclass
class Result:
    """Flows, breakdown and per-capture accounting of one run."""

    flows: pd.DataFrame
    breakdown: pd.DataFrame
    captures: pd.DataFrame
    servers: Servers
    errors: list[CaptureError] = field(default_factory=list)
    #: per interval, service and direction (schema.TIMESERIES), when an interval was asked for
    timeseries: pd.DataFrame | None = None

    def tables(self) -> dict[Table, pd.DataFrame]:
        """The tables a run writes, by name, in the order written (capture last)."""
        tables = {Table.FLOWS: self.flows, Table.BREAKDOWN: self.breakdown, Table.SERVERS: self.servers.evidence}
        if self.timeseries is not None:
            tables[Table.TIMESERIES] = self.timeseries
        tables[Table.CAPTURE] = self.captures
        return tables

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


@dataclass(frozen=True)
class Criteria:
    """What a flow is decided by: the service ports, the given servers (none: infer them) and
    what makes a host an Exchange server."""

    lookup: PortLookup
    networks: Sequence[Network]
    server_rules: ServerEvidenceRules

    @property
    def order(self) -> tuple[str, ...]:
        """The services in breakdown order, ``other`` last."""
        return self.lookup.ids[1:] + ("other",)


@dataclass
class Gathered:
    """What the reading phase hands to the merge: the finished flows (every flow still open at
    an input's end is finished there: flows are not stitched across inputs), the evidence
    tables, the per-input counters (a flow's capture number indexes ``counts``), and each
    packet's counts per interval when a time series was asked for."""

    store: FlowStore
    counts: list[CaptureCounts]
    evidence: Evidence | None
    intervals: PacketIntervals | None


@dataclass
class Snapshot:
    """Live capture's reading phase at a tick: the flows the clock finished, those still open,
    and the evidence so far with its rows joined to ``done`` then ``opened`` flows (None
    without the payload stage)."""

    done: Records
    opened: Records
    evidence: Evidence | None
    rows: FlowRows | None

    @property
    def flows(self) -> Records:
        """``done``, then ``opened``."""
        return Records.concat([self.done, self.opened])


def merge(g: Gathered, c: Criteria, by: Sequence[str], top_groups: int | None) -> Result:
    """Classify every finished flow and summarize, all in memory (``flows`` has them all);
    ``by`` (checked already) and ``top_groups`` as for ``Classifier.result``."""
    blocks = list(g.store.blocks())
    recs = Records.concat([r for r, _, _ in blocks])
    index = np.concatenate([i for _, i, _ in blocks]) if blocks else np.zeros(0, np.int64)
    rows = FlowRows.concat([w for _, _, w in blocks], np.cumsum([0] + [len(r) for r, _, _ in blocks[:-1]]).tolist())
    if len(blocks) > 1:  # each block is in order, not the blocks together
        order = np.lexsort((recs["first_ns"], index))
        recs, index = Records(recs.cols[:, order]), index[order]
        moved = np.empty_like(order)
        moved[order] = np.arange(order.size)
        rows = rows.renumbered(moved)
    flows, servers = classify(recs, c.lookup, c.networks, g.evidence, rows=rows, server_rules=c.server_rules)
    flows = _labelled(g, flows, index)
    summary = top(breakdown(flows, c.order, by), top_groups, by)
    series = [g.intervals.part(recs, flows)] if g.intervals is not None else []
    return _result(g, c, flows, summary, np.bincount(index, minlength=len(g.counts)), servers, series)


def merge_to(g: Gathered, c: Criteria, outdir: str | os.PathLike[str], fmt: Format, by: Sequence[str],
             top_groups: int | None) -> Result:  # fmt: skip
    """``merge``, written to ``outdir`` block by block (see ``Classifier.write``); the Result's
    ``flows`` is empty."""
    if g.store.one_block:
        result = merge(g, c, by, top_groups)
        write_tables(result.tables(), outdir, fmt)
        return result
    shared = _shared(g, c)
    with Outputs(outdir) as out:
        writer = out.appender(fmt.file(Table.FLOWS))
        parts, series, counts = [], [], np.zeros(len(g.counts), dtype=np.int64)
        servers = Servers(networks=(), addresses=(), inferred=not c.networks)
        for recs, index, rows in g.store.blocks():
            flows, servers = classify(recs, c.lookup, c.networks, g.evidence, shared, rows, c.server_rules)
            flows = _labelled(g, flows, index)
            writer.write(flows)
            parts.append(partial_breakdown(flows, by))
            series += [g.intervals.part(recs, flows)] if g.intervals is not None else []
            counts += np.bincount(index, minlength=len(g.counts))
        result = _result(g, c, empty_flows(), top(merge_partials(parts, c.order, by), top_groups, by), counts, servers, series)
        for name, df in result.tables().items():
            if name is not Table.FLOWS:
                out.write(fmt.file(name), df)
    return result


def _shared(g: Gathered, c: Criteria) -> Shared:
    """The facts every block is decided with, gathered over all blocks first: the Exchange
    servers and the RPC sessions the new-mail heuristic needs."""
    shared = Shared(answers=Answers.of(g.evidence.epm) if g.evidence is not None else None, verdicts=VerdictArrays.of(g.evidence))
    shown, pairs, bound = [epm_evidence(g.evidence)], [], []
    for recs, _, rows in g.store.blocks():
        facts = block_facts(recs, c.lookup, g.evidence, rows, infer_servers=not c.networks, answers=shared.answers,
                            verdicts=shared.verdicts)  # fmt: skip
        shown += [facts.shown] if facts.shown is not None else []
        pairs += [facts.candidates] if facts.candidates is not None and facts.candidates[0].size else []
        bound += [facts.bound] if len(facts.bound) else []
    shared.bound = Answers.concat(bound) if bound else None
    if not c.networks:
        shared.known, shared.servers = infer_servers(merged(shown), c.server_rules)
    if g.evidence is not None:  # the new-mail heuristic needs every block's RPC sessions
        candidates = distinct_rows([np.concatenate(level) for level in zip(*pairs)]) if pairs else [np.zeros(0, np.uint64)] * 4
        shared.sessions = RowSet(rpc_sessions_among(candidates, c.networks, shared.known))
    return shared


def _labelled(g: Gathered, flows: pd.DataFrame, index: npt.NDArray[np.int64]) -> pd.DataFrame:
    if flows.empty:
        return empty_flows()
    # codes into the distinct names: no per-flow strings to factorize
    names, code = np.unique(np.array([c.capture for c in g.counts], dtype=object), return_inverse=True)
    capture = pd.Categorical.from_codes(code.reshape(-1)[index], categories=pd.Index(names, dtype="str"))
    flows.insert(0, "capture", capture)  # type: ignore[arg-type]  # pandas-stubs leave Categorical out; pandas takes it
    return flows


def _result(g: Gathered, c: Criteria, flows: pd.DataFrame, summary: pd.DataFrame, flow_count: npt.NDArray[np.int64],
            servers: Servers, series: list[pd.DataFrame]) -> Result:  # fmt: skip
    captures = pd.DataFrame(
        [capture_row(counts, int(flow_count[i]), servers) for i, counts in enumerate(g.counts)],
        columns=schema.names(schema.CAPTURE),
    )
    return Result(
        flows=flows,
        breakdown=summary,
        captures=captures,
        servers=servers,
        errors=[counts.error for counts in g.counts if counts.error is not None],
        timeseries=g.intervals.table(series, c.order) if g.intervals is not None else None,
    )
