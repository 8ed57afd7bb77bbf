"""CAPTURE as files, directories and globs: `classify` and `classify_file` read them in
capture-time order; what cannot be read gets its capture.csv row and does not stop the rest.

The oracle for a ring buffer is the whole capture it was cut from: ``editcap -c 40`` cuts
exchange_services.pcap into 8 pieces of the same packets, whose totals capinfos gives. Each
piece starts where the one before stopped, so its packets carry on the open flows: the pieces
give the whole capture's flows, each row under the piece of its first packet.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest
from conftest import BAD, FIXTURES

import pcapclass
from pcapclass.cli import main
from pcapclass.errors import CaptureOpenError

WHOLE = FIXTURES / "exchange_services.pcap"
PIECES = 8  # editcap -c 40 of its 310 packets
EXIT_OK, EXIT_UNREADABLE, EXIT_PARTIAL = 0, 3, 4
CONVERSATION = ["transport", "client_addr", "client_port", "server_addr", "server_port", "service", "direction"]
COUNTERS = ["packets_c2s", "bytes_c2s", "packets_s2c", "bytes_s2c"]
TRAFFIC = ["packets", "bytes", *COUNTERS, "first_ts", "last_ts"]


def ring(directory: Path) -> list[Path]:
    """editcap's pieces of WHOLE in ``directory``, in time order, renamed so that name order is
    the reverse of time order and no name says capture."""
    cut = directory.parent / f"{directory.name}-cut"
    cut.mkdir()
    subprocess.run(["editcap", "-c", "40", str(WHOLE), str(cut / "ring.pcap")], check=True)
    pieces = sorted(cut.iterdir())  # editcap numbers them in time order
    assert len(pieces) == PIECES
    directory.mkdir(exist_ok=True)
    return [piece.rename(directory / f"piece_{PIECES - k:02d}.bin") for k, piece in enumerate(pieces)]


def capinfos(path: Path) -> tuple[int, int]:
    """(packets, bytes) as capinfos counts them."""
    out = subprocess.run(["capinfos", "-T", "-M", "-c", "-d", str(path)], check=True, capture_output=True, text=True).stdout
    _name, packets, size = out.splitlines()[1].split("\t")
    return int(packets), int(size)


def classify(tmp_path: Path, name: str, *captures: str | Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, dict[str, pd.DataFrame]]:
    """The exit code, stderr and tables of ``classify CAPTURE...``."""
    out = tmp_path / name
    rc = main(["classify", *map(str, captures), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    tables = {t: pd.read_csv(out / f"{t}.csv", keep_default_na=False) for t in ("flows", "breakdown", "capture")} if rc != EXIT_UNREADABLE else {}
    return rc, err, tables


def by_conversation(flows: pd.DataFrame) -> pd.DataFrame:
    return flows.groupby(CONVERSATION)[COUNTERS].sum()


def test_ring_buffer_directory_reads_as_the_whole_capture(tmp_path, capsys, tshark):
    pieces = ring(tmp_path / "ring")
    rc, err, got = classify(tmp_path, "ring-out", tmp_path / "ring", capsys=capsys)
    assert (rc, err) == (EXIT_OK, "")
    _, _, whole = classify(tmp_path, "whole-out", WHOLE, capsys=capsys)
    # the pieces in capture-time order, which is not their names'
    assert list(got["capture"]["capture"]) == [str(p) for p in pieces] != sorted(str(p) for p in pieces)
    assert got["capture"]["first_ts"].is_monotonic_increasing
    assert (got["capture"][["packets", "bytes"]].sum().tolist() == whole["capture"][["packets", "bytes"]].sum().tolist()
            == list(capinfos(WHOLE)) == [sum(col) for col in zip(*map(capinfos, pieces))])  # fmt: skip
    # each packet in the same conversation, service and direction as in the whole capture
    pd.testing.assert_frame_equal(by_conversation(got["flows"]), by_conversation(whole["flows"]), check_exact=True)
    keys = ["service", "direction"]
    pd.testing.assert_frame_equal(got["breakdown"].set_index(keys)[TRAFFIC].sort_index(),
                                  whole["breakdown"].set_index(keys)[TRAFFIC].sort_index(), check_exact=True)  # fmt: skip
    assert got["flows"].groupby("capture")["capture"].size().to_dict() == got["capture"].set_index("capture")["flows"].to_dict()


def test_ring_buffer_flows_are_the_whole_captures(tmp_path, capsys):
    ring(tmp_path / "ring")
    _, _, got = classify(tmp_path, "ring-out", tmp_path / "ring", capsys=capsys)
    _, _, whole = classify(tmp_path, "whole-out", WHOLE, capsys=capsys)
    for name in ("flows", "breakdown"):
        a, b = (t[name].drop(columns=["capture"], errors="ignore") for t in (got, whole))
        pd.testing.assert_frame_equal(a.sort_values(list(a.columns)).reset_index(drop=True),
                                      b.sort_values(list(b.columns)).reset_index(drop=True), check_exact=True)  # fmt: skip


def test_a_glob_names_the_files_it_matches(tmp_path, capsys):
    pieces = ring(tmp_path / "ring")
    (tmp_path / "ring" / "notes.txt").write_text("mirror port 3\n")  # the glob does not match it
    _, _, by_directory = classify(tmp_path, "dir-out", tmp_path / "ring", capsys=capsys)
    rc, err, by_glob = classify(tmp_path, "glob-out", tmp_path / "ring" / "piece_*.bin", capsys=capsys)
    assert (rc, err) == (EXIT_OK, "")
    for name, table in by_glob.items():
        pd.testing.assert_frame_equal(table, by_directory[name], check_exact=True, obj=name)
    assert len(by_glob["capture"]) == len(pieces)


def test_what_cannot_be_read_has_its_row_and_does_not_stop_the_rest(tmp_path, capsys):
    captures = tmp_path / "captures"
    pieces = ring(captures)
    (captures / "notes.txt").write_text("mirror port 3, Tuesday\n")  # no capture by its content: not taken
    (captures / "empty.pcap").write_bytes(b"")  # the same
    header_only = captures / "cut_short.pcap"  # a capture's magic, then not the rest of its header
    header_only.write_bytes(struct.pack("<IHH", 0xA1B2C3D4, 2, 4))
    partial = captures / "zz_partial.pcap"  # five good packets, then a cut record
    shutil.copy(BAD / "truncated_last_record.pcap", partial)
    empty_dir = tmp_path / "nothing_here"
    empty_dir.mkdir()
    named = [BAD / "not_a_capture.txt", BAD / "empty.pcap", tmp_path / "missing.pcap", tmp_path / "no*.pcapng", empty_dir]
    rc, err, got = classify(tmp_path, "out", captures, *named, capsys=capsys)
    assert rc == EXIT_PARTIAL
    rows = got["capture"].set_index("capture")
    failed = [str(header_only), *map(str, named)]
    assert sorted(rows.index[rows["error"] != ""]) == sorted([*failed, str(partial)])
    assert set(rows.index[rows["error"] == ""]) == set(map(str, pieces))
    assert str(captures / "notes.txt") not in rows.index and str(captures / "empty.pcap") not in rows.index
    assert rows.loc[failed, "packets"].tolist() == [0] * len(failed) and rows.loc[failed, "partial"].all()
    assert rows.loc[str(partial), "packets"] == 5
    assert int(rows["packets"].sum()) == capinfos(WHOLE)[0] + 5
    # one line each on stderr, naming the file
    lines = err.splitlines()
    assert len(lines) == len(failed) + 1 and "Traceback" not in err
    for path in [*failed, str(partial)]:
        assert sum(path + ":" in line or path + "," in line for line in lines) == 1, (path, lines)


def test_nothing_readable_is_exit_3_and_writes_nothing(tmp_path, capsys):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    rc, err, _ = classify(tmp_path, "out", BAD / "not_a_capture.txt", empty_dir, tmp_path / "*.pcap", capsys=capsys)
    assert rc == EXIT_UNREADABLE
    assert len(err.splitlines()) == 3
    assert not any((tmp_path / "out").iterdir())


def test_a_named_pipe_is_read_once(tmp_path, capsys):
    pipe = tmp_path / "ring.fifo"
    os.mkfifo(pipe)

    def write() -> None:
        with pipe.open("wb") as f:
            f.write(WHOLE.read_bytes())

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    rc, err, got = classify(tmp_path, "out", pipe, capsys=capsys)
    writer.join(timeout=30)
    assert (rc, err) == (EXIT_OK, "")
    assert got["capture"][["capture", "packets"]].values.tolist() == [[str(pipe), capinfos(WHOLE)[0]]]


def test_api_reads_directories_globs_and_lists(tmp_path):
    pieces = ring(tmp_path / "ring")
    by_directory = pcapclass.classify_file(tmp_path / "ring")
    by_list = pcapclass.classify_file(list(reversed(pieces)))
    by_glob = pcapclass.classify_file(str(tmp_path / "ring" / "*.bin"))
    for result in (by_list, by_glob):
        pd.testing.assert_frame_equal(result.flows, by_directory.flows, check_exact=True)
        pd.testing.assert_frame_equal(result.captures, by_directory.captures, check_exact=True)
    assert by_directory.captures["capture"].tolist() == [str(p) for p in pieces]
    assert not by_directory.partial
    mixed = pcapclass.classify_file([tmp_path / "ring", tmp_path / "missing.pcap"])
    assert mixed.partial and isinstance(mixed.error, CaptureOpenError) and mixed.error.path == str(tmp_path / "missing.pcap")
    assert len(mixed.flows) == len(by_directory.flows)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CaptureOpenError, match="no capture file in this directory") as raised:
        pcapclass.classify_file(empty)
    assert raised.value.path == str(empty)
