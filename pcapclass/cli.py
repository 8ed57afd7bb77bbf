"""The ``pcapclass`` command: argument parsing, wiring of the API, one-line errors, exit codes.

Exit codes (documented in the README):
  0  success
  2  usage error (bad option or argument)
  3  no capture could be read at all (missing, unreadable, not a capture): nothing written
  4  a capture stopped at a fault, or could not be read while others were: everything read was
     written, and capture.csv says which are partial and why
  5  a rules file is invalid
  6  a live capture could not start or died
  7  the outputs could not be written (OutputError): no output file is left half-written
  8  the Dask cluster could not be started or reached, or a worker failed (ClusterError)
  130  interrupted by SIGINT (143: SIGTERM): what was read is classified and written, marked partial
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from functools import partial
from typing import NoReturn

import pyarrow as pa

from . import __version__
from .accounting import CaptureCounts
from .addresses import Network, parse_networks
from .api import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS, Classifier
from .errors import (
    CaptureError,
    CaptureInterruptedError,
    LiveCaptureError,
    PcapclassError,
    signal_exit_code,
)
from .evidence import DEFAULT_EPM_EXPIRY
from .live import (
    BACKENDS,
    DEFAULT_ACTIVE_TIMEOUT,
    DEFAULT_BACKEND,
    DEFAULT_INTERVAL,
    LiveCapture,
    list_interfaces,
)
from .output import (
    BREAKDOWN_CSV,
    CAPTURE_CSV,
    FLOWS_CSV,
    TIMESERIES_CSV,
    Format,
    Table,
    make_outdir,
    print_table,
)
from .progress import Progress
from .session import Spread, dashboard, read_on, spread
from .sources import ReadAnomalies
from .sources.inputs import CaptureInput, resolve_captures
from .summarize import DEFAULT_BY, grouping
from .tables.rules import RuleSet, load_rules

# exit codes that belong to no error class (each error class carries its own, errors.py)
EXIT_OK = 0
EXIT_USAGE = 2
#: some capture was read only in part, or not at all while others were
EXIT_PARTIAL = 4


def _fail(message: str) -> None:
    print(f"pcapclass: error: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"pcapclass: warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcapclass",
        description="Classify packet captures into Microsoft Exchange Server 2003 services and summarize traffic per service and direction.",
    )
    parser.add_argument("--version", action="version", version=f"pcapclass {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rules_opts = argparse.ArgumentParser(add_help=False)
    rules_opts.add_argument("--rules", action="append", default=[], metavar="FILE",
                            help="extra rules file (TOML, same format as rules/exchange2003.toml); a service with the same id replaces the shipped one; repeatable")  # fmt: skip

    # what both classify and live take: the servers, the idle timeout and the flow cap
    flow_opts = argparse.ArgumentParser(add_help=False)
    flow_opts.add_argument("--server", action="append", default=[], metavar="ADDR|CIDR",
                           help="an Exchange server address or network; repeatable (default: infer them from Exchange evidence, rules/server_evidence.toml)")  # fmt: skip
    flow_opts.add_argument("--idle-timeout", type=_positive_float, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                           help="a 5-tuple idle this long starts a new flow (default: %(default)s)")  # fmt: skip
    flow_opts.add_argument("--max-flows", type=_positive_int, default=DEFAULT_MAX_FLOWS, metavar="N",
                           help="open flows kept at most; the least recently seen are exported early beyond it (default: %(default)s)")  # fmt: skip

    c = sub.add_parser("classify", parents=[rules_opts, flow_opts], help="classify capture files (pcap, pcapng, gzip; - for stdin)")
    c.add_argument("captures", nargs="+", metavar="CAPTURE",
                   help="capture files, directories (every capture in them, known by its content) or globs, read in capture-time order; '-' reads stdin")  # fmt: skip
    c.add_argument("-o", "--outdir", default="pcapclass-out", metavar="OUTDIR",
                   help=f"where {FLOWS_CSV}, {BREAKDOWN_CSV} and {CAPTURE_CSV} go (default: %(default)s)")  # fmt: skip
    c.add_argument("--no-payload", action="store_true",
                   help="skip the payload stage: services by port only (no bind, epm, http, signature evidence)")  # fmt: skip
    c.add_argument("--epm-expiry", type=_positive_float, default=DEFAULT_EPM_EXPIRY, metavar="SECONDS",
                   help="how long an endpoint-mapper reply vouches for the port it handed out, either side of it (default: %(default)s)")  # fmt: skip
    c.add_argument("--by", action="extend", type=_columns, default=[], metavar="COLUMN[,COLUMN...]",
                   help="also group the breakdown by these flow label columns, after service and direction; repeatable "
                        "(detail: OWA, ActiveSync, Direct Push, RPC over HTTP ...; server_addr, client_addr, protocol, capture ...)")
    c.add_argument("--top", type=_positive_int, metavar="N",
                   help="keep the N largest groups (by bytes) of each service in the breakdown, the rest summed in one (other) row")  # fmt: skip
    c.add_argument("--interval", type=_positive_float, metavar="SECONDS",
                   help="also write timeseries: traffic per service and direction in intervals of SECONDS from the first packet, each packet in its own")  # fmt: skip
    c.add_argument("--format", choices=[f.value for f in Format], default=Format.CSV.value,
                   help="the tables' file format: csv and jsonl with ISO 8601 times beside the epoch ones, parquet typed (default: %(default)s)")  # fmt: skip
    c.add_argument("--report", action="store_true", help="also write OUTDIR/report.html, a self-contained page with charts (see `report`; CSV tables)")
    c.add_argument("-j", "--jobs", type=_positive_int, metavar="N",
                   help="read captures that do not continue each other on N Dask worker processes (default: one per two cores, "
                        "for 1 GiB of input or more); 1 reads in this process")  # fmt: skip
    c.add_argument("--scheduler", metavar="ADDRESS", help="read on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no table")

    r = sub.add_parser("report", help="write OUTDIR/report.html (charts, top hosts, servers, captures) from a classify run's outputs")
    r.add_argument("outdir", metavar="OUTDIR", help="the output directory of `pcapclass classify`")

    e = sub.add_parser("explain", parents=[rules_opts, flow_opts],
                       help="why a flow got its label: the evidence, and tshark's dissection of the packets that decided it")  # fmt: skip
    e.add_argument("capture", metavar="CAPTURE", help="the capture file")
    e.add_argument("flow", nargs="+", metavar="FLOW", help=f"the flow's row number in {FLOWS_CSV} (1 is the first), or its two endpoints ADDR:PORT ADDR:PORT")
    sub.add_parser("rules", parents=[rules_opts], help="print the service table the classifier uses")
    _add_live_parser(sub, [rules_opts, flow_opts])
    sub.add_parser("interfaces", help="list the network interfaces a live capture can use")
    return parser


def _add_live_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]) -> None:
    live = sub.add_parser("live", parents=parents, help="classify the traffic of an interface as it happens")
    live.add_argument("-i", "--interface", required=True, metavar="IFACE", help="interface to capture on (see `pcapclass interfaces`)")
    live.add_argument("-f", "--filter", metavar="BPF", help="capture filter (libpcap syntax), e.g. 'tcp port 25 or udp'")
    live.add_argument("--interval", type=_positive_float, default=DEFAULT_INTERVAL, metavar="SECONDS",
                      help=f"seconds between {TIMESERIES_CSV} rows and output updates (default: %(default)s)")  # fmt: skip
    live.add_argument("-o", "--outdir", default="pcapclass-live", metavar="OUTDIR",
                      help=f"where {FLOWS_CSV}, {TIMESERIES_CSV}, {BREAKDOWN_CSV} and {CAPTURE_CSV} go (default: %(default)s)")  # fmt: skip
    stop = live.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="stop after this many seconds")
    stop.add_argument("--count", type=_positive_int, metavar="N", help="stop after N packets")
    live.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                      help="dumpcap or tcpdump writing to a pipe, or scapy's packet socket (default: %(default)s)")  # fmt: skip
    live.add_argument("--write-pcap", metavar="FILE", help="also save the captured packets to FILE (classic pcap, ns timestamps)")
    live.add_argument("--active-timeout", type=_positive_float, default=DEFAULT_ACTIVE_TIMEOUT, metavar="SECONDS",
                      help="a flow open this long is exported and continues as a new flow, as NetFlow does (default: %(default)s)")  # fmt: skip
    live.add_argument("-q", "--quiet", action="store_true", help="no live view and no final table")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _columns(text: str) -> list[str]:
    """``--by``'s comma-separated flow label columns."""
    try:
        return list(grouping([c.strip() for c in text.split(",") if c.strip()]))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def run() -> NoReturn:
    """The ``pcapclass`` command (and ``python -m pcapclass``): ``main``, then exit with its code.

    What the run made is frozen out of the garbage collector first: the interpreter's exit
    would otherwise walk every object once more (0.1 s after the benchmark capture) to free
    memory the process gives back anyway. Outputs are closed by then; exit handlers still run.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises for expected failures)."""
    # The command classifies and writes flows block by block; Arrow's default allocator
    # (mimalloc) keeps what each block freed, the system one gives it back, which keeps the
    # process's peak memory flat however many blocks a capture has.
    pa.set_memory_pool(pa.system_memory_pool())
    _tune_malloc()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.debug:
        return _run(args)
    try:
        return _run(args)
    except PcapclassError as exc:
        _fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _fail("interrupted")
        return signal_exit_code(signal.SIGINT)
    except BrokenPipeError:
        return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    if args.command == "interfaces":
        return _print_interfaces()
    if args.command == "report":
        return _report(args.outdir)
    rules = load_rules(args.rules)
    if args.command == "rules":
        return _print_rules(rules)
    if args.command == "live":
        return _live(args, rules)
    if args.command == "explain":
        return _explain(args)
    return _classify(args, rules)


def _report(outdir: str) -> int:
    from .htmlreport import write_report

    print(f"wrote {write_report(outdir)}")
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    from .explain import explain

    servers = _parse_servers(args.server)
    if servers is None:
        return EXIT_USAGE
    print("\n".join(explain(args.capture, args.flow, servers=servers, rules=args.rules)))
    return EXIT_OK


def _parse_servers(specs: list[str]) -> list[Network] | None:
    """The --server networks, or None after saying which one is malformed."""
    try:
        return parse_networks(specs)
    except ValueError as exc:
        _fail(f"--server: {exc}")
        return None


def _tune_malloc() -> None:
    """Ask glibc's allocator for one heap ("arena") for all threads, and to give blocks of 16 MiB
    and more their own mappings always.

    Batches are decoded in one thread, added to the flow table in another and looked at in a
    third; with an arena per thread, what one frees scatters over three heaps. And glibc, once
    a large mapped block is freed, serves later blocks up to that size from the heap, which
    keeps them: after a burst of ended flows (26 MB at once at the doubled benchmark file's
    jump of the clock) the peak stayed (294-296 MB as glibc has it, 237-239 MB with 16 MiB).
    The threshold is no lower because every block above it is mapped afresh and faulted in
    page by page: at 1 MiB the single bench file took 82k page faults instead of 42k and
    1.68 s instead of 1.53 s (medians of ten), for 230 MB instead of 237 MB on the doubled
    file. Elsewhere than glibc this does nothing.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_arena_max, m_mmap_threshold = -8, -3  # glibc malloc.h
    mallopt(m_arena_max, 1)
    mallopt(m_mmap_threshold, 16 << 20)


def _classify(args: argparse.Namespace, rules: RuleSet) -> int:
    servers = _parse_servers(args.server)
    if servers is None:
        return EXIT_USAGE
    make_outdir(args.outdir)  # before minutes of reading, not after
    clf = Classifier(servers=servers, rules=rules, idle_timeout=args.idle_timeout, max_flows=args.max_flows,
                     payload=not args.no_payload, epm_expiry=args.epm_expiry, interval=args.interval)  # fmt: skip

    def stop(signum: int) -> None:
        if clf.interrupted is not None:  # a second signal: give up at once (temporaries go)
            raise KeyboardInterrupt
        clf.interrupt(signum)

    try:
        with _signals_call(stop):
            return _classify_into(args, clf)
    finally:
        clf.close()


@contextmanager
def _signals_call(handler: Callable[[int], None]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM call ``handler(signum)`` instead of ending the process."""
    previous = {sig: signal.signal(sig, lambda signum, _frame: handler(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, was in previous.items():
            signal.signal(sig, was)


def _show_progress(bar: Progress, done: int, packets: int) -> None:
    bar.update(done, packets=packets)


def _classify_into(args: argparse.Namespace, clf: Classifier) -> int:
    captures = resolve_captures(args.captures)
    with spread(captures, jobs=args.jobs, scheduler=args.scheduler) as where:
        unreadable = _read_here(args, clf, captures) if where is None else _read_on(args, clf, captures, where)
    if unreadable == len(captures):
        return CaptureError.exit_code
    result = clf.write(args.outdir, by=(*DEFAULT_BY, *args.by), top_groups=args.top, fmt=Format(args.format))
    if not args.quiet:
        print_table(result.breakdown, result.servers, sys.stdout)
        tables = (Table.FLOWS, Table.BREAKDOWN, Table.CAPTURE, Table.SERVERS, *((Table.TIMESERIES,) if args.interval else ()))
        print(f"wrote {args.outdir}/" + ", ".join(Format(args.format).file(t) for t in tables))
    if args.report:
        _report(args.outdir)
    if clf.interrupted is not None:
        return signal_exit_code(clf.interrupted)
    return EXIT_PARTIAL if (result.partial or unreadable) else EXIT_OK


def _read_here(args: argparse.Namespace, clf: Classifier, captures: list[CaptureInput]) -> int:
    """Read the captures in this process, telling of each as it is read; returns how many
    could not be read at all."""
    unreadable = 0
    for capture in captures:
        bar = Progress(capture.size, label=capture.path, enabled=False if args.quiet else None)
        try:
            counts = clf.read_input(capture, progress=partial(_show_progress, bar))
        except CaptureError as exc:
            bar.close()
            _fail(str(exc))
            unreadable += 1
            continue
        bar.close()
        unreadable += _tell(counts)
        if isinstance(counts.error, CaptureInterruptedError):
            break
    return unreadable


def _read_on(args: argparse.Namespace, clf: Classifier, captures: list[CaptureInput], where: Spread) -> int:
    """Read the captures on Dask workers, then tell of each; returns how many could not be
    read at all."""
    if not args.quiet:
        link = dashboard(where.client)
        print(f"pcapclass: {len(captures)} captures in {len(where.segments)} segments on {where.workers} Dask workers"
              + (f", dashboard {link}" if link else ""), file=sys.stderr)  # fmt: skip
    total = sum(c.size or 0 for c in captures)
    bar = Progress(total, label=f"{len(captures)} captures", enabled=False if args.quiet else None)
    try:
        read_on(where, clf, captures, progress=partial(_show_progress, bar))
    except CaptureError:
        pass  # every capture has its row, with its error, told below
    bar.close()
    return sum(_tell(counts) for counts in clf.counts)


def _tell(counts: CaptureCounts) -> int:
    """One line on stderr for a capture read with a fault or an oddity; 1 if it could not be
    read at all."""
    if isinstance(counts.error, CaptureInterruptedError):
        read = f"the {counts.packets} packets read are classified" if counts.packets else "not read"
        _fail(f"{counts.error} ({read}; output marked partial)")
        return 0
    if counts.error is not None:
        if not counts.packets:
            _fail(str(counts.error))
            return 1
        _fail(f"{counts.error} (the {counts.packets} packets before it are classified; output marked partial)")
    odd = ", ".join(f"{getattr(counts, f.name)} {f.name}" for f in fields(ReadAnomalies) if getattr(counts, f.name))
    if odd:
        _warn(f"{counts.capture}: read anyway, counted in {CAPTURE_CSV}: {odd}")
    return 0


def _live(args: argparse.Namespace, rules: RuleSet) -> int:
    """Capture until Ctrl-C / SIGTERM / --duration / --count; the CSVs are final either way."""
    servers = _parse_servers(args.server)
    if servers is None:
        return EXIT_USAGE
    from .live.view import LiveView  # rich's screen code: loaded only for the live view

    view = LiveView(enabled=False if args.quiet else None)
    cap = LiveCapture(
        args.interface, outdir=args.outdir, backend=args.backend, bpf=args.filter, interval=args.interval,
        duration=args.duration, count=args.count, servers=servers, rules=rules, idle_timeout=args.idle_timeout,
        active_timeout=args.active_timeout, max_flows=args.max_flows, write_pcap=args.write_pcap, on_status=view.update,
    )  # fmt: skip
    try:
        with _signals_call(lambda _signum: cap.stop()):
            result = cap.run()
    finally:
        view.close()
    row = result.captures.iloc[0]
    if not args.quiet:
        print_table(result.breakdown, result.servers, sys.stdout)
        print(f"{row['packets']:,} packets captured on {args.interface}, {row['drops']:,} dropped; wrote {args.outdir}/{FLOWS_CSV}, {TIMESERIES_CSV}, {BREAKDOWN_CSV}, {CAPTURE_CSV}")
    if row["drops"]:
        _warn(f"{row['drops']:,} packets were dropped by the kernel or the capture process (counted in {CAPTURE_CSV})")
    if result.error is not None:
        _fail(f"{result.error} (the {row['packets']:,} packets before it are classified and written)")
        return LiveCaptureError.exit_code
    return EXIT_OK


def _print_interfaces() -> int:
    rows = [("interface", "state", "kind", "addresses")]
    rows += [(i.name, i.state, i.kind, " ".join(i.addresses)) for i in list_interfaces()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
    return EXIT_OK


def _print_rules(rules: RuleSet) -> int:
    rows = [("service", "side", "transport/port", "name / note")]
    for s in rules.services:
        for side in ("inbound", "outbound"):
            for r in getattr(s, side):
                rows.append((s.id, side, f"{r.transport}/{r.port}", r.note or s.name))
            if getattr(s, f"rpc_{side}"):
                rows.append((s.id, side, "135 & other RPC", "dynamic ports handed out by the endpoint mapper"))
        for d in s.dynamic:
            rows.append((s.id, d["direction"], f"{d['transport']}/dynamic", d.get("note") or d.get("what", "")))
        if not (s.inbound or s.outbound or s.rpc_inbound or s.rpc_outbound or s.dynamic):
            rows.append((s.id, "-", "(no port)", s.notes or s.name))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
    print(f"rules from: {', '.join(rules.sources)}")
    return EXIT_OK
