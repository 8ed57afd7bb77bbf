"""``pcapclass explain``: the label of one flow, and tshark's dissection of the packets behind it.

The dissection lines are tshark's own (through pyshark), so the test checks them against what
tshark says of the same frames directly, and the label against zeek's mapi.pcap as its
MANIFEST describes it (Outlook binding EMSMDB on the store's dynamic port 1032).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES

from pcapclass.cli import main

MAPI = FIXTURES.parent / "payloads" / "mapi.pcap"


def test_explain_the_dynamic_port_flow_of_mapi_pcap(tshark: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(MAPI), "192.168.0.2:1032", "192.168.0.173:1073"]) == 0
    out = capsys.readouterr().out
    assert "192.168.0.173:1073 -> 192.168.0.2:1032" in out
    assert "information-store, decided by bind" in out and "EMSMDB (MAPI) a4f1db00-ca47-1067-b31f-00dd010662da" in out
    assert "the server 192.168.0.2 is an Exchange server" in out
    # the first payload each way, as tshark itself numbers and names them
    rows = subprocess.run([tshark, "-n", "-r", str(MAPI), "-Y", "tcp.port == 1073 && tcp.port == 1032 && tcp.len > 0",
                           "-T", "fields", "-e", "frame.number", "-e", "tcp.srcport", "-e", "dcerpc.cn_bind_to_uuid"],
                          capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    first_client = next(r.split("\t") for r in rows if r.split("\t")[1] == "1073")
    first_server = next(r.split("\t") for r in rows if r.split("\t")[1] == "1032")
    assert f"frame {int(first_client[0]):>6}  client->server  DCERPC" in out
    assert f"frame {int(first_server[0]):>6}  server->client  DCERPC" in out
    assert first_client[2] in out  # the interface tshark read from the bind


def test_explain_by_row_number_and_a_missing_flow(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["classify", str(MAPI), "-o", str(tmp_path), "-q"]) == 0
    with (tmp_path / "flows.csv").open() as f:
        row = next(i for i, line in enumerate(f) if '"192.168.0.2",2571' in line)  # the new-mail datagram
    capsys.readouterr()
    assert main(["explain", str(MAPI), str(row)]) == 0
    out = capsys.readouterr().out
    assert "udp 192.168.0.2:2571 -> 192.168.0.183:1054" in out and "heuristic (new-mail-notification)" in out
    assert main(["explain", str(MAPI), "999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flow 999 is not in the capture" in err


def test_explain_says_so_when_tshark_is_missing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import pyshark.capture.capture as pyshark_capture
    from pyshark.tshark.tshark import TSharkNotFoundException

    def missing(*args: object, **kwargs: object) -> str:
        raise TSharkNotFoundException("TShark not found")

    monkeypatch.setattr(pyshark_capture, "get_process_path", missing)
    assert main(["explain", str(MAPI), "1"]) == 2
    err = capsys.readouterr().err
    assert "tshark is not installed" in err and "Traceback" not in err
