"""Runs spread over Dask workers (``session``, ``segments``) give what one process gives.

The oracle of a spread run is the run the issue defines it by: one process reading the same
captures in capture-time order (``Classifier.read_all``, itself held to tshark elsewhere), whose
files must come out byte for byte the same. Where the spread run has work of its own to get
right, the facts come from outside: the split capture's generator says which datagram is the
store's notification and which flows cross which cut, tshark says which server greeted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, TESTS
from distributed import Client, LocalCluster

from pcapclass import session
from pcapclass.api import Classifier
from pcapclass.cli import main
from pcapclass.flows import COLUMNS, FlowRows, Records
from pcapclass.segments import Reach, plan
from pcapclass.session import _fetch, _Spool, classify_file, read_captures
from pcapclass.sources.inputs import CaptureInput, resolve_captures

SPLIT = TESTS / "fixtures" / "split" / "split_boundaries.pcap"
SMTP = FIXTURES / "corpus" / "suricata-verify" / "smtp-file-data-01.pcap"
EVIDENCE_COLUMNS = ["service", "evidence", "detail", "rpc_interface", "protocol", "direction"]


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """Two worker processes with a thread each, as ``--jobs 2`` starts them."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def write(captures: list[Path], out: Path, client: Client | None = None, **settings: float) -> dict[str, bytes]:
    clf = Classifier(**settings)  # type: ignore[arg-type]
    try:
        read_captures(clf, captures, client=client)
        clf.write(out)
    finally:
        clf.close()
    return outputs(out)


def test_plan_cuts_before_each_capture_that_starts_afresh() -> None:
    # by hand, as CaptureInput.continues decides: B starts at A's last packet (continues), C
    # starts before B's last (afresh), D does not open (joins C's), E opens with no packet
    # (afresh), F starts after C's last packet, the last packet read (continues E)
    def at(name: str, first: int | None) -> CaptureInput:
        return CaptureInput(name, first_ns=first)

    captures = [at("A", 0), at("B", 10), at("C", 5), at("D", None), at("E", None), at("F", 20)]
    reaches = [Reach(True, 10), Reach(True, 15), Reach(True, 18), Reach(False, None), Reach(True, None), Reach(True, 30)]
    assert plan(captures, reaches) == [[0, 1], [2, 3], [4, 5]]


def test_every_fixture_on_two_workers_is_one_process_run(client: Client, tmp_path: Path) -> None:
    # every fixture, good and bad, most starting afresh: many segments, faults, empty files
    captures = [FIXTURES.parent]
    one = write(captures, tmp_path / "one", interval=30.0)
    spread = write(captures, tmp_path / "spread", client=client, interval=30.0)
    assert one.keys() == {"flows.csv", "breakdown.csv", "capture.csv", "servers.csv", "timeseries.csv"}
    for name in one:
        assert spread[name] == one[name], name


def test_progress_counts_every_worker_s_bytes_and_packets(client: Client) -> None:
    # the files' sizes, and the packets capinfos counts in them
    files = sorted(p for p in (FIXTURES / "corpus").rglob("*") if p.is_file() and not p.name.startswith("LICENSE"))
    out = subprocess.run(["capinfos", "-T", "-r", "-c", "-M", *map(str, files)], capture_output=True, text=True, check=True).stdout
    packets = sum(int(line.split("\t")[1]) for line in out.splitlines())
    seen: list[tuple[int, int]] = []
    clf = Classifier()
    read_captures(clf, [FIXTURES / "corpus"], client=client, progress=lambda done, count: seen.append((done, count)))
    clf.close()
    assert seen[-1] == (sum(p.stat().st_size for p in files), packets)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_parts_a_worker_spooled_come_back_through_it(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # a part of finished flows as a worker's store is given it, spooled to a file there; the
    # client fetches it through that worker when it cannot see the file (another machine)
    rng = np.random.default_rng(7)
    part = (Records(rng.integers(0, 1 << 40, (len(COLUMNS), 5))), np.arange(5, dtype=np.int64),
            FlowRows(np.array([0, 3]), np.array([2, 1]), np.array([True, False])), True)  # fmt: skip
    run = f"pcapclass-test-{uuid.uuid4().hex}"
    address, path = client.submit(_Spool(run), part, pure=False).result()
    assert address in client.scheduler_info()["workers"]
    monkeypatch.setattr(session.os.path, "exists", lambda _: False)
    recs, capture, rows, last = _fetch(client)((address, path))
    np.testing.assert_array_equal(recs.cols, part[0].cols)
    np.testing.assert_array_equal(capture, part[1])
    assert (rows.flow.tolist(), rows.vid.tolist(), rows.from_a.tolist(), last) == ([0, 3], [2, 1], [True, False], True)
    monkeypatch.undo()
    assert not Path(path).exists()
    client.run(session._remove_spool, run)
    assert not Path(path).parent.exists()


def test_a_registration_names_the_notification_of_a_capture_read_afresh(client: Client, tmp_path: Path) -> None:
    # the generator's table (tests/fixtures/split/SOURCES.md): the store's datagram
    # 10.0.0.10:3002 -> 10.0.1.43:1055 carries the blob registered at 250 s. Cut out alone, it
    # starts before the rest's last packet: read afresh, on another worker, but the
    # registration is remembered across captures
    datagram = subprocess.run(["tshark", "-r", str(SPLIT), "-Y", "udp.srcport == 3002 && udp.dstport == 1055", "-T", "fields",
                               "-e", "frame.number"], capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert len(datagram) == 1
    rest, alone = tmp_path / "in" / "rest.pcap", tmp_path / "in" / "datagram.pcap"
    rest.parent.mkdir()
    subprocess.run(["editcap", str(SPLIT), str(rest), datagram[0]], check=True)
    subprocess.run(["editcap", "-r", str(SPLIT), str(alone), datagram[0]], check=True)
    one = write([rest.parent], tmp_path / "one")
    spread = write([rest.parent], tmp_path / "spread", client=client)
    assert spread == one
    flows = pd.read_csv(tmp_path / "spread" / "flows.csv")
    notified = flows[(flows.transport == "udp") & ((flows.client_port == 1055) | (flows.server_port == 1055))]
    assert notified[["capture", "service", "evidence", "detail"]].values.tolist() == [
        [str(alone), "information-store", "registration", "new-mail-notification"]
    ]


def test_the_split_capture_three_ways(client: Client, tmp_path: Path) -> None:
    # whole in one process; editcap's 20 pieces in one process; the pieces on the workers
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    subprocess.run(["editcap", "-c", "38", str(SPLIT), str(pieces / "piece.pcap")], check=True)
    assert len(list(pieces.iterdir())) == 20
    whole = write([SPLIT], tmp_path / "whole")
    cut = write([pieces], tmp_path / "cut")
    spread = write([pieces], tmp_path / "spread", client=client)
    assert spread == cut
    assert whole["breakdown.csv"] == cut["breakdown.csv"]
    by_flow = ["first_ts", "client_addr", "client_port", "server_addr", "server_port"]
    a, b = (pd.read_csv(tmp_path / run / "flows.csv").drop(columns="capture").sort_values(by_flow, ignore_index=True) for run in ("whole", "cut"))
    pd.testing.assert_frame_equal(a, b)
    # the generator's facts: the port the endpoint mapper handed out, in a later piece than its reply
    assert a.loc[a.server_port == 1043, ["service", "evidence"]].values.tolist() == [["information-store", "epm"]]


def test_rows_stay_with_the_flows_of_their_capture(tmp_path: Path) -> None:
    # two mirror ports see one conversation: two captures with the same flows at the same times.
    # tshark: frame 4 is the server's "220 ... Microsoft ESMTP MAIL Service", so each copy's
    # SMTP flow has its greeting's evidence, not the port's
    greeting = subprocess.run(["tshark", "-r", str(SMTP), "-Y", "smtp.response.code == 220", "-T", "fields", "-e", "tcp.srcport",
                               "-e", "smtp.rsp.parameter"], capture_output=True, text=True, check=True).stdout.split("\t")  # fmt: skip
    assert greeting[0] == "25" and "Microsoft ESMTP MAIL Service" in greeting[1]
    for port in ("a", "b"):
        (tmp_path / port).mkdir()
        shutil.copy(SMTP, tmp_path / port / SMTP.name)
    flows = classify_file([tmp_path / "a", tmp_path / "b"]).flows
    smtp = flows[flows.server_port == 25]
    assert len(smtp) == 2
    assert smtp[["service", "evidence", "detail"]].values.tolist() == [["smtp", "signature", "exchange-smtp"]] * 2


def test_the_command_on_a_scheduler_with_two_worker_processes(tmp_path: Path) -> None:
    # started the way a user starts them: `dask scheduler`, then `dask worker` twice
    info = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen([*dask, "--scheduler-file", str(info), "--port", "0", "--no-dashboard"], stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(info),
                                           "--nthreads", "1", "--no-dashboard"], stderr=subprocess.DEVNULL))  # fmt: skip
        address = json.loads(info.read_text())["address"]
        with Client(address) as c:
            c.wait_for_workers(2, timeout=60)
        captures = str(FIXTURES / "corpus")
        assert main(["classify", captures, "-o", str(tmp_path / "one"), "-q", "--jobs", "1"]) == 0
        assert main(["classify", captures, "-o", str(tmp_path / "spread"), "-q", "--scheduler", address]) == 0
        assert outputs(tmp_path / "spread") == outputs(tmp_path / "one")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_the_command_says_its_segments_workers_and_dashboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", str(FIXTURES.parent), "-o", str(tmp_path / "out"), "--jobs", "2"]) == 4  # bad/ has faults
    said = [line for line in capsys.readouterr().err.splitlines() if "Dask" in line]
    assert len(said) == 1 and re.fullmatch(r"pcapclass: \d+ captures in \d+ segments on 2 Dask workers, dashboard http://\S+/status", said[0])


def test_a_pipe_among_the_captures_is_read_once_in_this_process(client: Client, tmp_path: Path) -> None:
    # a named pipe can be read once, and only here: its packets all arrive, as capinfos counts
    # them in the file fed through it
    pipe = tmp_path / "in" / "live.pcap"
    pipe.parent.mkdir()
    os.mkfifo(pipe)
    shutil.copy(SMTP, tmp_path / "in" / "copy.pcap")
    feeder = threading.Thread(target=lambda: pipe.write_bytes(SMTP.read_bytes()), daemon=True)
    feeder.start()
    clf = Classifier()
    read_captures(clf, [tmp_path / "in" / "copy.pcap", pipe], client=client)
    clf.close()
    feeder.join(timeout=30)
    packets = int(subprocess.run(["capinfos", "-T", "-r", "-c", str(SMTP)], capture_output=True, text=True, check=True).stdout.split()[-1])
    assert sorted((c.capture, c.packets) for c in clf.counts) == [(str(p), packets) for p in sorted(pipe.parent.iterdir())]


def _udp_capture(path: Path, packets: int, port_base: int) -> None:
    """A pcap of ``packets`` UDP datagrams 50 µs apart from 1700000000 s, each its own flow."""
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    records = []
    for k in range(packets):
        udp = struct.pack(">HHHH", port_base + k % 20000, 9, 12, 0) + b"stop"
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, struct.pack(">I", 0x0A000000 + k // 20000),
                         b"\x0a\xff\0\2") + udp  # fmt: skip
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip
        usec = k * 50
        records.append(struct.pack("<IIII", 1_700_000_000 + usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame)
    path.write_bytes(head + b"".join(records))


def test_a_signal_stops_a_spread_run_with_what_was_read_marked_partial(tmp_path: Path) -> None:
    # two captures of the same second (two segments); SIGINT once the workers are announced:
    # exit 130, every capture has its row, the unread ones with the signal
    (tmp_path / "in").mkdir()
    for name, base in (("a.pcap", 1024), ("b.pcap", 30000)):
        _udp_capture(tmp_path / "in" / name, 300_000, base)
    proc = subprocess.Popen([sys.executable, "-m", "pcapclass", "classify", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                             "--jobs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    announced = proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, announced + rest
    assert "segments on 2 Dask workers" in announced
    captures = pd.read_csv(tmp_path / "out" / "capture.csv")
    assert captures["capture"].tolist() == [str(tmp_path / "in" / n) for n in ("a.pcap", "b.pcap")]
    assert captures["partial"].any() and captures["error"].fillna("").str.contains("interrupted by SIGINT").any()
    assert "interrupted by SIGINT (not read; output marked partial)" in rest


def test_a_ring_buffer_as_dumpcap_leaves_it_is_not_read_twice_to_plan(tmp_path: Path) -> None:
    # editcap's pieces of one capture, each file last written at its last packet (capinfos), as
    # a capturing process leaves them: one ring buffer, not worth a reach; a piece written later
    # than the next one starts (copied without its time) makes it worth a closer look
    subprocess.run(["editcap", "-c", "40", str(FIXTURES / "exchange_services.pcap"), str(tmp_path / "piece.pcap")], check=True)
    pieces = sorted(tmp_path.iterdir())
    for piece in pieces:
        out = subprocess.run(["capinfos", "-T", "-r", "-e", "-S", str(piece)], capture_output=True, text=True, check=True).stdout
        last_ns = int(Decimal(out.split()[-1]) * 10**9)  # exact: the file's times are whole microseconds
        os.utime(piece, ns=(last_ns, last_ns))
    captures = resolve_captures([tmp_path])
    assert [c.path for c in captures] == [str(p) for p in pieces]
    assert session._one_ring(captures)
    os.utime(pieces[2])  # now: after every packet
    assert not session._one_ring(captures)


def test_one_job_reads_in_this_process_without_dask(tmp_path: Path) -> None:
    code = ("import sys; from pcapclass.cli import main; "
            f"rc = main(['classify', {str(FIXTURES / 'corpus')!r}, '-o', {str(tmp_path / 'out')!r}, '-q', '--jobs', '1']); "
            "sys.exit(rc or 10 * any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules))")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_an_unreachable_scheduler_is_one_line_and_exit_8(tmp_path: Path) -> None:
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    run = subprocess.run([sys.executable, "-m", "pcapclass", "classify", str(SMTP), "-o", str(tmp_path / "out"), "--scheduler",
                          "tcp://127.0.0.1:9"], capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert run.returncode == 8
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("pcapclass: error: tcp://127.0.0.1:9: cannot reach the Dask scheduler")
    assert not (tmp_path / "out" / "flows.csv").exists()
