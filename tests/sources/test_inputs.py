"""Capture arguments: directories walked by content, globs, duplicates, errors, capture-time order.

Expected times are tshark's first frame.time_epoch of each file; ring-buffer pieces are cut by
``editcap -c`` and must concatenate, in the order found, to tshark's reading of the whole file.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import threading

import pytest
from conftest import BAD, CORPUS, FIXTURES
from oracle import tshark_packets

from pcapclass.errors import CaptureOpenError, InvalidCaptureError
from pcapclass.sources.inputs import STDIN, CaptureInput, resolve_captures

RING_SOURCE = FIXTURES / "exchange_services.pcap"  # 310 packets: editcap -c 40 makes 8 pieces


def first_ns(path) -> int:
    return int(tshark_packets(path)["ts_ns"].iloc[0])


def ring(tmp_path, tshark):
    """editcap's pieces of RING_SOURCE, renamed so that name order is the reverse of time order
    and no name says capture."""
    cut = tmp_path / "cut"
    cut.mkdir()
    subprocess.run(["editcap", "-c", "40", str(RING_SOURCE), str(cut / "ring.pcap")], check=True)
    pieces = sorted(cut.iterdir())  # editcap numbers them in time order: ring_00000_..., ring_00001_...
    assert len(pieces) == 8
    ring_dir = tmp_path / "captures" / "ring"
    ring_dir.mkdir(parents=True)
    named = []
    for k, piece in enumerate(pieces):
        named.append(piece.rename(ring_dir / f"piece_{len(pieces) - k:02d}.bin"))
    return named


def test_directory_is_walked_by_content_in_capture_time_order(tmp_path, tshark):
    pieces = ring(tmp_path, tshark)
    top = tmp_path / "captures"
    (top / "notes.txt").write_text("mirror port 3, Tuesday\n")
    (top / "logs.gz").write_bytes(gzip.compress(b"not a capture\n" * 10))
    shutil.copy(FIXTURES / "pcapng_multi_if.pcapng.gz", top / "multi.bin")
    shutil.copy(CORPUS / "zeek" / "mapi.pcap", top / "deep.dat")
    got = resolve_captures([top])
    assert all(c.error is None for c in got), [str(c.error) for c in got if c.error]
    want = sorted([*pieces, top / "multi.bin", top / "deep.dat"], key=lambda p: (first_ns(p), str(p)))
    assert [c.path for c in got] == [str(p) for p in want]
    assert [c.first_ns for c in got] == [first_ns(p) for p in want]
    # the ring's pieces, in the order found, are the whole capture again
    whole = tshark_packets(RING_SOURCE)[["ts_ns", "wirelen", "caplen"]].values.tolist()
    found = [c.path for c in got if c.path.endswith(".bin") and "piece_" in c.path]
    joined = [row for path in found for row in tshark_packets(path)[["ts_ns", "wirelen", "caplen"]].values.tolist()]
    assert joined == whole


def test_equal_first_times_go_by_name(tmp_path, tshark):
    for name in ("b.pcap", "a.pcap", "c.pcap"):
        shutil.copy(FIXTURES / "pcap_le_nsec.pcap", tmp_path / name)
    got = resolve_captures([tmp_path / "c.pcap", tmp_path])
    assert [c.path for c in got] == [str(tmp_path / n) for n in ("a.pcap", "b.pcap", "c.pcap")]
    assert {c.first_ns for c in got} == {first_ns(FIXTURES / "pcap_le_nsec.pcap")}


def test_globs_links_and_repeats_name_each_file_once(tmp_path, tshark):
    for name in ("x.pcap", "y.pcap"):
        shutil.copy(FIXTURES / "pcap_be_usec.pcap", tmp_path / name)
    (tmp_path / "link.pcap").symlink_to(tmp_path / "x.pcap")
    got = resolve_captures([tmp_path / "*.pcap", tmp_path, tmp_path / "x.pcap", str(tmp_path / "y.pcap")])
    assert sorted(c.path for c in got) == [str(tmp_path / "link.pcap"), str(tmp_path / "y.pcap")]
    assert all(c.error is None for c in got)


def test_what_cannot_be_read_is_reported_and_does_not_stop_the_rest(tmp_path, tshark):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    (empty_dir / "README").write_text("captures go here\n")  # no capture in it all the same
    header_only = tmp_path / "header_only.pcap"
    header_only.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    good = FIXTURES / "pcap_le_nsec.pcap"
    arguments = [BAD / "not_a_capture.txt", tmp_path / "missing.pcap", tmp_path / "nothing*.pcap", empty_dir,
                 BAD / "truncated_global_header.pcap", STDIN, header_only, good]  # fmt: skip
    got = resolve_captures(arguments)
    assert got[0].path == str(good) and got[0].first_ns == first_ns(good) and got[0].error is None
    assert got[-1].path == STDIN and got[-1].error is None and got[-1].first_ns is None
    rest = {c.path: c for c in got[1:-1]}
    assert rest[str(header_only)].error is None and rest[str(header_only)].first_ns is None
    kinds = {path: (type(c.error), c.error.offset) for path, c in rest.items() if c.error is not None}
    assert kinds == {
        str(BAD / "not_a_capture.txt"): (InvalidCaptureError, 0),
        str(tmp_path / "missing.pcap"): (CaptureOpenError, None),
        str(tmp_path / "nothing*.pcap"): (CaptureOpenError, None),
        str(empty_dir): (CaptureOpenError, None),
        str(BAD / "truncated_global_header.pcap"): (InvalidCaptureError, 0),  # bad/EXPECTED.csv: offset 0
    }
    assert [c.path for c in got[1:-1]] == sorted(rest)


@pytest.mark.parametrize("name", ["exchange_services.pcap.gz", "pcapng_two_sections.pcapng", "corpus/zeek/mime-header-size-limit.pcap.gz"])
def test_first_time_is_tsharks(tshark, name):
    (capture,) = resolve_captures([FIXTURES / name])
    assert capture.first_ns == first_ns(FIXTURES / name)


def test_a_pipe_is_not_peeked_at(tmp_path):
    """A named pipe (``<(zcat ring.pcap.gz)`` is one) is read once: resolving it reads none of
    it (what is read is gone), and it comes after the timed captures, as stdin does. Resolving
    runs in a thread, so that a regression fails here instead of blocking on the pipe's open."""
    pipe = tmp_path / "ring.fifo"
    os.mkfifo(pipe)
    good = FIXTURES / "pcap_le_nsec.pcap"
    got: list[list[CaptureInput]] = []
    worker = threading.Thread(target=lambda: got.append(resolve_captures([pipe, good])), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert got, "resolving a named pipe opened it"
    assert got[0] == [CaptureInput(str(good), first_ns=got[0][0].first_ns), CaptureInput(str(pipe))]
