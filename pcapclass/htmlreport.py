"""One self-contained HTML page of a run's outputs, for the people an administrator reports to.

The page is read from OUTDIR's tables (flows, breakdown, capture, servers, and timeseries when
``--interval`` wrote one), so it can be made again at any time without the capture. Charts are
matplotlib SVG inlined in the page: no script and no network fetch, so the page reads offline
and in any browser, stays small (a few hundred kB for millions of packets, the charts being
aggregates), and each chart is also written beside it as SVG and PNG for slides.
"""

from __future__ import annotations

import html
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import OutputError
from .output import Format, Table

#: groups named per service in the top clients / servers tables
TOP = 10
#: bins of the time series drawn from flows when no timeseries.csv was written
FLOW_BINS = 60
REPORT = "report.html"
#: the flow columns the page uses (flows.csv is read with these alone)
FLOW_COLUMNS = ["first_ts", "client_addr", "server_addr", "service", "evidence", "packets_c2s", "bytes_c2s", "bytes_s2c"]
CHARTS = "charts"


@dataclass(frozen=True, slots=True)
class Tables:
    """A run's output tables, as classify wrote them."""

    flows: pd.DataFrame
    breakdown: pd.DataFrame
    captures: pd.DataFrame
    servers: pd.DataFrame
    timeseries: pd.DataFrame | None

    @staticmethod
    def read(outdir: Path) -> Tables:
        """The tables in OUTDIR, in whichever format classify wrote them (``--format``)."""

        def table(name: Table, required: bool = True, usecols: list[str] | None = None) -> pd.DataFrame | None:
            for fmt in Format:
                path = outdir / fmt.file(name)
                if path.exists():
                    if fmt is Format.PARQUET:
                        return pd.read_parquet(path, columns=usecols)
                    if fmt is Format.JSONL:
                        df = pd.read_json(path, lines=True)
                        return df[usecols] if usecols and len(df) else df
                    return pd.read_csv(path, keep_default_na=False, na_values=[""], usecols=usecols, engine="pyarrow" if usecols else "c")
            if required:
                missing = Format.CSV.file(name)
                raise OutputError(f"{missing} is missing: run `pcapclass classify ... -o {outdir}` first", path=str(outdir / missing))
            return None

        found = [table(n, usecols=FLOW_COLUMNS if n is Table.FLOWS else None) for n in (Table.FLOWS, Table.BREAKDOWN, Table.CAPTURE, Table.SERVERS)]
        assert all(t is not None for t in found)
        flows, breakdown, captures, servers = (t for t in found if t is not None)
        return Tables(flows, breakdown, captures, servers, table(Table.TIMESERIES, required=False))


def write_report(outdir: str | os.PathLike[str]) -> Path:
    """Write OUTDIR/report.html (and OUTDIR/charts/*.svg, *.png) from OUTDIR's tables."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(outdir)
    t = Tables.read(out)
    charts = out / CHARTS
    try:
        charts.mkdir(exist_ok=True)
        figures = {
            "bytes": ("Bytes per service and direction", _bars(t.breakdown, "bytes", "bytes")),
            "flows": ("Flows per service and direction", _bars(t.breakdown, "flows", "flows")),
            "timeseries": _timeseries(t),
            "evidence": ("How each service was decided (flows per evidence)", _evidence(t.flows)),
        }
        svgs = {}
        for name, (title, fig) in figures.items():
            buf = io.StringIO()
            fig.savefig(buf, format="svg", bbox_inches="tight")
            svg = buf.getvalue()
            (charts / f"{name}.svg").write_text(svg, encoding="utf-8")
            fig.savefig(charts / f"{name}.png", dpi=110, bbox_inches="tight")
            svgs[name] = (title, svg[svg.index("<svg"):])
            matplotlib.pyplot.close(fig)
        page = _page(t, svgs)
        path = out / REPORT
        tmp = path.with_name(f".{REPORT}.tmp")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError.from_os(exc, "cannot write the report", path=out) from None
    return path


def _bars(b: pd.DataFrame, column: str, unit: str):  # type: ignore[no-untyped-def]
    """The breakdown's ``column`` per service, stacked by direction."""
    return _stacked(b.pivot_table(index="service", columns="direction", values=column, aggfunc="sum", fill_value=0, sort=False), unit)


def _stacked(table: pd.DataFrame, unit: str):  # type: ignore[no-untyped-def]
    """Horizontal bars per service (largest on top), stacked by ``table``'s columns."""
    import matplotlib.pyplot as plt

    table = table.loc[table.sum(axis=1).sort_values().index]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(table) + 1.2))
    table.plot.barh(stacked=True, ax=ax, width=0.75)
    ax.set_xlabel(unit)
    ax.set_ylabel("")
    ax.legend(title=table.columns.name, loc="lower right", fontsize=8)
    return fig


def _timeseries(t: Tables):  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    if t.timeseries is not None and len(t.timeseries):
        ts = t.timeseries.assign(t=pd.to_datetime(t.timeseries["interval_start"], unit="s", utc=True))
        title = "Bytes per service over time (per interval, each packet in its own interval)"
    else:
        f = t.flows[t.flows["first_ts"].notna()]
        edges = np.linspace(f["first_ts"].min(), f["first_ts"].max() + 1e-6, FLOW_BINS + 1) if len(f) else np.array([0.0, 1.0])
        ts = f.assign(interval_start=edges[np.clip(np.searchsorted(edges, f["first_ts"], side="right") - 1, 0, FLOW_BINS - 1)],
                      bytes=f["bytes_c2s"] + f["bytes_s2c"])  # fmt: skip
        ts = ts.assign(t=pd.to_datetime(ts["interval_start"], unit="s", utc=True))
        title = "Bytes per service over time (each flow at its first packet; classify --interval splits flows by packet)"
    table = ts.pivot_table(index="t", columns="service", values="bytes", aggfunc="sum", fill_value=0)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    if len(table):
        ax.stackplot(table.index, *(table[c] for c in table.columns), labels=list(table.columns))
        ax.legend(loc="upper left", fontsize=7, ncol=3)
    ax.set_ylabel("bytes")
    ax.set_xlabel("UTC")
    return title, fig


def _evidence(f: pd.DataFrame):  # type: ignore[no-untyped-def]
    """Flows per service, stacked by the evidence that decided them."""
    return _stacked(f.pivot_table(index="service", columns="evidence", values="packets_c2s", aggfunc="size", fill_value=0, sort=False), "flows")


def _top(f: pd.DataFrame, side: str) -> pd.DataFrame:
    """Per service, the ``TOP`` hosts on one side with the most bytes."""
    exchange = f[f["service"] != "other"]
    g = exchange.assign(bytes=exchange["bytes_c2s"] + exchange["bytes_s2c"]).groupby(["service", f"{side}_addr"], as_index=False)
    top = g.agg(flows=("bytes", "size"), bytes=("bytes", "sum")).sort_values(["service", "bytes"], ascending=[True, False])
    return top.groupby("service", sort=False).head(TOP).rename(columns={f"{side}_addr": side})


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p class=note>none</p>"
    return df.to_html(index=False, border=0, classes="t", na_rep="", escape=True)


def _page(t: Tables, svgs: dict[str, tuple[str, str]]) -> str:
    f = t.flows
    total = int(t.breakdown["bytes"].sum()) if len(t.breakdown) else 0
    by_port = int((f["evidence"] == "port").sum())
    exchange = int((f["service"] != "other").sum())
    servers = t.servers[t.servers["exchange"].astype(str).str.lower() == "true"] if len(t.servers) else t.servers
    anomalies = [c for c in t.captures.columns if c.endswith(("_packets", "_snaplen", "collisions", "_early", "drops", "_bytes"))]
    sections = [
        (f"<h1>Exchange traffic report</h1><p class=note>{len(t.captures)} capture(s), {int(t.captures['packets'].sum()):,} packets, "
         f"{total:,} bytes, {len(f):,} flows, {exchange:,} of them Exchange traffic; {by_port:,} decided by port alone.</p>"),
        *(f"<h2>{html.escape(title)}</h2><div class=chart>{svg}</div>" for title, svg in svgs.values()),
        "<h2>Exchange servers, and why they were taken for ones</h2>" + _table(servers),
        "<h2>Top clients per service</h2>" + _table(_top(f, "client")),
        "<h2>Top servers per service</h2>" + _table(_top(f, "server")),
        "<h2>Breakdown</h2>" + _table(t.breakdown),
        "<h2>Captures</h2>" + _table(t.captures[["capture", "format", "packets", "bytes", "flows", *anomalies, "partial", "error"]]),
    ]
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em}table.t{border-collapse:collapse;font-size:0.85em}"
             "table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}.note{color:#555}"
             ".chart svg{max-width:100%;height:auto}")  # fmt: skip
    return f"<!doctype html><html lang=en><meta charset=utf-8><title>pcapclass report</title><style>{style}</style><body>{''.join(sections)}</body></html>"
