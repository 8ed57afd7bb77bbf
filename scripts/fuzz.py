"""Fuzz pcapclass's readers and packet parsers: ``python scripts/fuzz.py TARGET --runs N``.

Targets: ``pcap`` and ``pcapng`` (the readers, then decode and flow keys over what they yield),
``gzip`` (the gzip framing under the readers), ``packet`` (one packet of a fuzzed link type
through decode, the flow table and the payload evidence: DCE/RPC, HTTP, signatures),
``classify`` (a whole capture through the whole pipeline: its flows' payloads reach the
evidence stage with the state earlier packets left, then classification and the summaries).
Inputs are mutations of the captures under tests/fixtures/pcaps/. The one property: nothing escapes
but pcapclass's own errors (``pcapclass.errors``), and no input takes longer than
``--timeout`` seconds.

The engine is hypothesis by default (a test dependency: failures are shrunk to a small input,
``--seed`` makes a run repeatable); ``--engine atheris`` uses libFuzzer's coverage-guided
mutation instead (``pip install atheris``) and prints its coverage of pcapclass's Python code
(libFuzzer's own options pass through; its memory grows by about 0.2 MB an input on the
``packet`` target under instrumentation, not without, so keep ``-runs`` there to some thousands
or raise ``-rss_limit_mb``); its corpus stays in the temp dir, ``pcapclass-fuzz-corpus-TARGET``,
for the next run to start from. A crash of the process itself (a signal from a compiled kernel)
ends the run with that signal; run it in a child process when that matters, as
tests/test_fuzz.py does. ``--boundscheck`` runs against a copy of the package whose kernels
check every index, so that an out-of-bounds access fails the input instead of passing
silently. Exit status 0: no failure.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import hashlib
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "pcaps"
#: seeds larger than this are left out: small inputs make many runs
MAX_SEED = 64 << 10
#: 32-bit values that framing code treats specially (zero, tiny, block minimums, sign and size edges)
INTERESTING = (0, 1, 4, 11, 12, 15, 16, 28, 32, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x40000, 0x40001, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
#: mutation operators: (position, operator, bytes)
OPERATORS = ("overwrite", "insert", "delete", "truncate", "u32le", "u32be", "splice")

#: where --boundscheck builds its copy of the package, and the variable that points a run at it
CHECKED_TREE = Path(tempfile.gettempdir()) / f"pcapclass-fuzz-boundscheck-{hashlib.sha256(bytes(REPO)).hexdigest()[:12]}"
CHECKED_ENV = "PCAPCLASS_FUZZ_TREE"
sys.path.insert(0, os.environ.get(CHECKED_ENV, str(REPO)))
if TYPE_CHECKING:
    from pcapclass.protocols.http import HttpPathTable
    from pcapclass.sources import CaptureFile
    from pcapclass.tables.rules import RuleSet


def _fixtures(*suffixes: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(FIXTURES.rglob("*")) if p.is_file() and p.name.endswith(suffixes) and p.stat().st_size <= MAX_SEED]


def seeds(target: str) -> list[bytes]:
    """The starting inputs of a target, from the test fixtures (the bad ones included)."""
    if target == "pcap":
        return [s for s in _fixtures(".pcap", ".cap") if s[:4] != b"\x0a\x0d\x0d\x0a"]
    if target == "pcapng":
        return [s for s in _fixtures(".pcapng", ".pcap", ".cap") if s[:4] == b"\x0a\x0d\x0d\x0a"]
    if target == "classify":
        return _fixtures(".pcap", ".pcapng", ".cap")
    if target == "gzip":
        return _fixtures(".gz") + [gzip.compress(s, compresslevel=1) for s in _fixtures(".pcap")[:8]]
    if target == "packet":
        return [bytes([i % 256]) + p for i, p in enumerate(_packets())]
    if target in PAYLOAD_TARGETS:
        return _payloads()
    raise ValueError(f"unknown target {target!r}")


@functools.cache
def _payloads() -> list[bytes]:
    """The distinct TCP/UDP payloads of the fixtures' packets (what the payload parsers see)."""
    from pcapclass.decode import decode
    from pcapclass.sources import open_capture

    out: dict[bytes, None] = {}
    for path in sorted(FIXTURES.rglob("*.pcap*")):
        if path.suffix == ".gz" or "bad" in path.parts or path.stat().st_size > MAX_SEED:
            continue
        for batch in open_capture(path):
            pk = decode(batch)
            for o, n in zip(pk.payload_off.tolist(), pk.payload_len.tolist()):
                if n:
                    out[bytes(batch.data[o : o + n])] = None
    return list(out)


def _packets() -> list[bytes]:
    """Single packets of the fixtures (their payloads are what the parsers see)."""
    from pcapclass.sources import open_capture

    out = []
    for path in sorted(FIXTURES.glob("*.pcap")):
        for batch in open_capture(path):
            out += [bytes(batch.data[o : o + c]) for o, c in zip(batch.offset[:40].tolist(), batch.caplen[:40].tolist())]
    return out


def _batches(stream: io.RawIOBase | io.BufferedIOBase) -> CaptureFile:
    """The capture reader over ``stream``, in small chunks (so records cross chunk edges)."""
    from pcapclass.sources import CaptureFile

    return CaptureFile("fuzz", stream=stream, name="fuzz", chunk_size=4096)  # type: ignore[arg-type]


def _read(stream: io.RawIOBase | io.BufferedIOBase) -> None:
    from pcapclass.decode import decode
    from pcapclass.flows import flow_keys

    for batch in _batches(stream):
        flow_keys(decode(batch))


def run_capture(data: bytes) -> None:
    """A capture's bytes through a reader, decode and flow keys."""
    _read(io.BytesIO(data))


def run_gzip(data: bytes) -> None:
    """gzip bytes through GzipStream, then a reader."""
    from pcapclass.sources.stream import GzipStream

    _read(GzipStream(io.BufferedReader(io.BytesIO(data)), path="fuzz"))  # type: ignore[arg-type]


@functools.cache
def _rules() -> RuleSet:
    """The shipped rules, loaded once (loading them per input would be most of the work)."""
    from pcapclass.tables.rules import load_rules

    return load_rules(())


def run_packet(data: bytes) -> None:
    """One packet (the first byte picks its link type), twice, through decode, the flow table
    and the payload evidence (DCE/RPC, HTTP, signatures): the second copy reaches the payload
    parsers with state. The summaries after (pandas over the flows) are left out: ten times
    the work of the rest, for nothing the input steers."""
    import numpy as np

    from pcapclass.api import Classifier
    from pcapclass.sources import PacketBatch, linktypes

    if not data:
        return
    types = sorted(linktypes.SUPPORTED)
    body = np.frombuffer(data[1:] * 2, dtype=np.uint8)
    n = len(data) - 1
    batch = PacketBatch(data=body, offset=np.array([0, n]), caplen=np.array([n, n]), wirelen=np.array([n, n]),
                        ts_ns=np.array([1, 2]), linktype=np.full(2, types[data[0] % len(types)]), first_packet=0)  # fmt: skip
    clf = Classifier(rules=_rules())
    clf.begin("fuzz")
    clf.feed(batch)
    clf.end()


def run_classify(data: bytes) -> None:
    """A capture's bytes through the whole pipeline, as ``classify`` reads a file: most edits
    land in payloads, so mutated binds, endpoint-mapper replies, requests and greetings reach
    the evidence stage in flows with the state their earlier packets left (followed DCE/RPC
    streams, PDUs being reassembled, learned ports, registrations); then what the run gathered
    is classified and summarized. A fault in the file ends the reading there, as it does for
    the command, and what was read before it is still classified."""
    from pcapclass.api import Classifier
    from pcapclass.errors import CaptureError

    clf = Classifier(rules=_rules())
    clf.begin("fuzz")
    with contextlib.suppress(CaptureError):
        for batch in _batches(io.BytesIO(data)):
            clf.feed(batch)
    clf.end()
    clf.result(by=("service", "direction", "detail"))


def run_dcerpc(data: bytes) -> None:
    """A byte stream through the PDU reassembler, each PDU through every DCE/RPC parser."""
    from pcapclass.protocols import dcerpc, emsmdb, epm

    reassembler = dcerpc.PduReassembler(resync_segments=1)
    for piece in (data[: len(data) // 2], data[len(data) // 2 :]):
        for pdu in reassembler.feed(piece):
            dcerpc.parse_header(pdu)
            dcerpc.parse_bind(pdu)
            dcerpc.parse_bind_ack(pdu)
            req, resp = dcerpc.parse_request(pdu), dcerpc.parse_response(pdu)
            if req is not None:
                emsmdb.parse_register_push_notification(req.stub)
            if resp is not None:
                epm.parse_epm_map_response(resp.stub)
                epm.parse_epm_lookup_response(resp.stub)


@functools.cache
def _shipped_http_paths() -> HttpPathTable:
    """The shipped path table, read once per run."""
    from pcapclass.tables.http_paths import load_http_paths

    return load_http_paths()


def run_http(data: bytes) -> None:
    """A payload through the request-line parser and the Exchange path table."""
    from pcapclass.protocols import http

    req = http.parse_request_line(data)
    if req is not None:
        http.classify_request(req, table=_shipped_http_paths())
        http.parse_rpc_proxy_target(req)


def run_signatures(data: bytes) -> None:
    """A payload through every signature, from either side, on every port with an expectation."""
    from pcapclass.protocols import signatures

    for from_server in (False, True):
        signatures.identify(data, from_server=from_server)
        for port in signatures.EXPECTED_PROTOCOLS:
            signatures.port_mismatch(port, data, from_server=from_server)
    signatures.exchange_smtp_markers(data)
    signatures.exchange_greeting(data)
    signatures.shared_prefix(data)


def run_certificate(data: bytes) -> None:
    """A server payload through the certificate-subject kernel, whole and cut short, and each
    subject it finds through the DER name reader."""
    import numpy as np

    from pcapclass._certificate import certificate_subjects
    from pcapclass.certificate import subject_text

    buf = np.frombuffer(data or b"\0", dtype=np.uint8)
    cuts = np.unique(np.array([len(data), len(data) // 2, len(data) - 1, 0]).clip(0))
    start, length, _ = certificate_subjects(buf, np.zeros(cuts.size, np.int64), cuts)
    for s, n in zip(start.tolist(), length.tolist()):
        if n:
            subject_text(data[s : s + n])


#: the payload parsers' targets (seeded with the fixtures' payloads)
PAYLOAD_TARGETS = ("dcerpc", "http", "signatures", "certificate")
TARGETS: dict[str, Callable[[bytes], None]] = {"pcap": run_capture, "pcapng": run_capture, "gzip": run_gzip, "packet": run_packet,
                                               "classify": run_classify,
                                               "dcerpc": run_dcerpc, "http": run_http, "signatures": run_signatures,
                                               "certificate": run_certificate}  # fmt: skip


def mutate(data: bytes, edits: list[tuple[int, str, bytes]], donor: bytes) -> bytes:
    """``data`` with each edit applied in turn; ``splice`` inserts a piece of ``donor``."""
    buf = bytearray(data)
    for pos, op, value in edits:
        pos %= len(buf) + 1
        if op == "overwrite":
            buf[pos : pos + len(value)] = value
        elif op == "insert":
            buf[pos:pos] = value
        elif op == "delete":
            del buf[pos : pos + len(value) + 1]
        elif op == "truncate":
            del buf[pos:]
        elif op in ("u32le", "u32be"):
            word = INTERESTING[value[0] % len(INTERESTING)] if value else 0
            buf[pos : pos + 4] = struct.pack("<I" if op == "u32le" else ">I", word)
        else:
            start = int.from_bytes(value[:4] or b"\0", "little") % (len(donor) + 1)
            buf[pos:pos] = donor[start : start + 64]
    return bytes(buf)


class Hang(Exception):
    """An input ran past the time limit."""


def answer(target: Callable[[bytes], None], data: bytes) -> None:
    """Run one input: a pcapclass error is an answer; anything else escapes as a failure, and
    so does an exception Python could only report, not raise (an IndexError in a ``noexcept``
    kernel function of a --boundscheck build)."""
    from pcapclass.errors import PcapclassError

    swallowed: list[BaseException | None] = []
    previous, sys.unraisablehook = sys.unraisablehook, lambda u: swallowed.append(u.exc_value)
    try:
        with contextlib.suppress(PcapclassError):
            target(data)
    finally:
        sys.unraisablehook = previous
    if swallowed:
        raise RuntimeError(f"an exception was swallowed: {swallowed[0]!r}")


def check(target: Callable[[bytes], None], data: bytes, timeout: int) -> None:
    """``answer``, and a Hang when it takes longer than ``timeout`` seconds."""

    def expire(_signum: int, _frame: object) -> None:
        raise Hang(f"no answer within {timeout} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(timeout)
    try:
        answer(target, data)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def fuzz_hypothesis(name: str, runs: int, seed: int, timeout: int) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    corpus = seeds(name)
    target = TARGETS[name]
    edit = st.tuples(st.integers(0, 1 << 20), st.sampled_from(OPERATORS), st.binary(max_size=16))

    @hseed(seed)
    @settings(max_examples=runs, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(corpus) - 1), st.integers(0, len(corpus) - 1), st.lists(edit, max_size=8))
    def one(which: int, donor: int, edits: list[tuple[int, str, bytes]]) -> None:
        check(target, mutate(corpus[which], edits, corpus[donor]), timeout)

    try:
        one()
    except Exception as exc:  # noqa: BLE001 - the failure is the result, reported in one line
        print(f"{name}: FAILED after shrinking: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: {runs} inputs from {len(corpus)} seeds, no failure")
    return 0


def fuzz_atheris(name: str, runs: int, timeout: int, extra: list[str]) -> int:
    import atheris  # type: ignore[import-not-found]

    with atheris.instrument_imports(include=["pcapclass"]):  # coverage of pcapclass's code only
        import pcapclass.api
        import pcapclass.sources.stream  # noqa: F401
    target = TARGETS[name]
    # libFuzzer ends the process itself, so the corpus lives on: one directory per target, which
    # the next run starts from (the seeds, and every input that reached new code)
    corpus = Path(tempfile.gettempdir()) / f"pcapclass-fuzz-corpus-{name}"
    corpus.mkdir(exist_ok=True)
    for i, data in enumerate(seeds(name)):
        (corpus / f"seed{i:04d}").write_bytes(data)
    # libFuzzer's -timeout finds hangs (with SIGALRM: check's alarm would take it over)
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-timeout={timeout}", f"-max_len={MAX_SEED}", *extra, str(corpus)],
                  lambda data: answer(target, data))  # fmt: skip
    atheris.Fuzz()
    return 0


def checked_build() -> Path:
    """A copy of the package whose kernels check every index (``boundscheck=True`` in place of
    the shipped ``False``), so that an out-of-bounds access is an IndexError instead of silent
    corruption; built once into CHECKED_TREE, again when a kernel's source changes."""
    CHECKED_TREE.mkdir(exist_ok=True)
    shutil.copytree(REPO / "rules", CHECKED_TREE / "rules", dirs_exist_ok=True)  # the tables the package reads
    sources = sorted((REPO / "pcapclass").rglob("*.pyx"))
    stamp = "\n".join(f"{p}:{p.stat().st_mtime_ns}" for p in sources)
    if (CHECKED_TREE / "STAMP").is_file() and (CHECKED_TREE / "STAMP").read_text() == stamp:
        return CHECKED_TREE
    shutil.rmtree(CHECKED_TREE / "pcapclass", ignore_errors=True)
    shutil.copytree(REPO / "pcapclass", CHECKED_TREE / "pcapclass", ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    kernels = [str(p.relative_to(REPO)) for p in sources]
    for kernel in kernels:
        path = CHECKED_TREE / kernel
        path.write_text(path.read_text().replace("boundscheck=False", "boundscheck=True"))
    build = f"from Cython.Build import cythonize; from setuptools import setup; setup(ext_modules=cythonize({kernels!r}, quiet=True))"
    subprocess.run([sys.executable, "-c", build, "build_ext", "--inplace", "-q"], cwd=CHECKED_TREE, check=True, capture_output=True)
    (CHECKED_TREE / "STAMP").write_text(stamp)
    return CHECKED_TREE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--runs", type=int, default=1000, help="inputs to try (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds an input may take (default: %(default)s)")
    parser.add_argument("--engine", choices=("hypothesis", "atheris"), default="hypothesis")
    parser.add_argument("--boundscheck", action="store_true", help="run against kernels built with bounds checks (built once, ~30 s)")
    args, extra = parser.parse_known_args(argv)
    if args.boundscheck and CHECKED_ENV not in os.environ:
        tree = checked_build()
        env = {**os.environ, CHECKED_ENV: str(tree), "PYTHONPATH": str(tree)}
        return subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])], env=env, check=False).returncode
    if args.engine == "atheris":
        return fuzz_atheris(args.target, args.runs, args.timeout, extra)
    return fuzz_hypothesis(args.target, args.runs, args.seed, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
