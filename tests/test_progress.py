"""The progress bar: on a terminal only, bytes read of the total, erased at the end."""

from __future__ import annotations

import io

from pcapclass.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_draws_on_a_terminal_and_erases() -> None:
    out = Terminal()
    bar = Progress(4 * 2**20, label="trace.pcap", stream=out)
    bar.update(2**20, packets=1000)
    text = out.getvalue()
    assert text.startswith("\rtrace.pcap [") and "25.0%" in text and "1/4 MiB" in text
    bar.close()
    assert out.getvalue().endswith("\r\x1b[K")


def test_silent_when_not_a_terminal_or_quiet() -> None:
    pipe = io.StringIO()
    Progress(100, stream=pipe).update(50)
    quiet = Terminal()
    Progress(100, stream=quiet, enabled=False).update(50)
    assert pipe.getvalue() == "" and quiet.getvalue() == ""


def test_cli_writes_nothing_but_the_table_to_a_pipe(tmp_path, capsys) -> None:
    from pathlib import Path

    from pcapclass.cli import main

    sample = Path(__file__).resolve().parent / "fixtures" / "pcaps" / "exchange_services.pcap"
    assert main(["classify", str(sample), "-o", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "\r" not in captured.out and "rpc-endpoint-mapper" in captured.out
