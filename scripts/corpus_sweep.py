#!/usr/bin/env python3
"""Classify every capture under a directory and compare two such sweeps flow by flow.

Every change to classification is checked over a whole corpus of real captures before and
after; this is the tool for it.

    scripts/corpus_sweep.py run CORPUS OUT [--jobs N] [-- EXTRA CLASSIFY ARGS]
    scripts/corpus_sweep.py summary OUT
    scripts/corpus_sweep.py compare BEFORE AFTER

``run`` finds captures by their first bytes (pcap, pcapng, gzip), runs ``pcapclass classify``
on each into ``OUT/<n>/`` and records its exit code and last line of stderr in ``OUT/sweep.csv``.
``summary`` counts captures with an inferred Exchange server, hosts inferred and flows with an
Exchange service. ``compare`` lists every flow whose service, evidence, detail, protocol or
direction differs between two sweeps, and every capture whose exit code or servers differ.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a", b"\x1f\x8b")
FLOW_KEY = ["first_ts", "transport", "client_addr", "client_port", "server_addr", "server_port"]
COMPARED = ["service", "evidence", "detail", "protocol", "direction", "rpc_interface"]


def captures(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "_analysis" in path.parts or "expected" in path.parts:
            continue
        with path.open("rb") as f:
            if f.read(4).startswith(MAGICS) or path.suffix in (".pcap", ".pcapng", ".cap"):
                found.append(path)
    return found


def run(corpus: Path, out: Path, jobs: int, extra: list[str]) -> None:
    corpus, out = corpus.resolve(), out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = captures(corpus)

    def one(item: tuple[int, Path]) -> list[str]:
        n, path = item
        dest = out / str(n)
        proc = subprocess.run(
            [sys.executable, "-m", "pcapclass", "classify", str(path), "-o", str(dest), "-q", *extra],
            capture_output=True, text=True, check=False, timeout=600, cwd=out,
        )
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        return [str(n), str(path.relative_to(corpus)), str(proc.returncode), last, str("Traceback" in proc.stderr)]

    with ThreadPoolExecutor(jobs) as pool:
        rows = list(pool.map(one, enumerate(files)))
    with (out / "sweep.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["n", "capture", "exit", "stderr", "traceback"])
        w.writerows(rows)
    codes = pd.Series([r[2] for r in rows]).value_counts().to_dict()
    print(f"{len(rows)} captures; exit codes {codes}; tracebacks {sum(r[4] == 'True' for r in rows)}")


def _load(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    sweep = pd.read_csv(out / "sweep.csv", keep_default_na=False, dtype={"n": str})
    flows, caps = [], []
    for n, name in zip(sweep["n"], sweep["capture"], strict=True):
        d = out / n
        if (d / "flows.csv").exists():
            f = pd.read_csv(d / "flows.csv", keep_default_na=False, dtype=str)
            f["capture"] = name
            flows.append(f)
        if (d / "capture.csv").exists():
            c = pd.read_csv(d / "capture.csv", keep_default_na=False, dtype=str)
            c["capture"] = name
            caps.append(c)
    return sweep, pd.concat(flows, ignore_index=True), pd.concat(caps, ignore_index=True)


def summary(out: Path) -> None:
    sweep, flows, caps = _load(out)
    inferred = caps[(caps["servers_inferred"] == "true") & (caps["servers"] != "")]
    hosts = sum(len(s.split()) for s in inferred["servers"])
    exchange = flows[flows["service"] != "other"]
    print(f"captures: {len(sweep)}; exit codes {sweep['exit'].value_counts().to_dict()}; tracebacks {(sweep['traceback'] == 'True').sum()}")
    print(f"captures with an inferred Exchange server: {inferred['capture'].nunique()}; hosts inferred: {hosts}")
    print(f"flows: {len(flows)}; with an Exchange service: {len(exchange)}")
    print(exchange["service"].value_counts().to_string())


def compare(before: Path, after: Path) -> None:
    sb, fb, cb = _load(before)
    sa, fa, ca = _load(after)
    codes = sb.merge(sa, on="capture", suffixes=("_before", "_after"))
    diff = codes[codes["exit_before"] != codes["exit_after"]]
    for _, r in diff.iterrows():
        print(f"exit {r['exit_before']} -> {r['exit_after']}: {r['capture']} ({r['stderr_after']})")
    caps = cb.merge(ca, on="capture", suffixes=("_before", "_after"))
    for _, r in caps[caps["servers_before"] != caps["servers_after"]].iterrows():
        print(f"servers {r['servers_before']!r} -> {r['servers_after']!r}: {r['capture']}")
    key = ["capture", *FLOW_KEY]
    for frame in (fb, fa):
        for col in COMPARED:
            if col not in frame:
                frame[col] = ""
    merged = fb.merge(fa, on=key, how="outer", suffixes=("_before", "_after"), indicator=True)
    only = merged[merged["_merge"] != "both"]
    if len(only):
        print(f"{len(only)} flows only on one side:")
        print(only[[*key, "_merge"]].to_string(index=False))
    both = merged[merged["_merge"] == "both"]
    changed = pd.Series(False, index=both.index)
    for col in COMPARED:
        changed |= both[f"{col}_before"] != both[f"{col}_after"]
    rows = both[changed]
    print(f"{len(rows)} of {len(both)} flows changed")
    cols = ["capture", "server_addr", "server_port", "transport"]
    for col in COMPARED:
        cols += [f"{col}_before", f"{col}_after"]
    if len(rows):
        grouped = rows.groupby([f"{c}_{s}" for c in ("service", "evidence") for s in ("before", "after")], dropna=False).size()
        print(grouped.sort_values(ascending=False).to_string())
        rows[cols].to_csv(after / "changed_flows.csv", index=False)
        print(f"details: {after / 'changed_flows.csv'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("corpus", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("extra", nargs="*")
    s = sub.add_parser("summary")
    s.add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    a = ap.parse_args()
    if a.cmd == "run":
        run(a.corpus, a.out, a.jobs, a.extra)
    elif a.cmd == "summary":
        summary(a.out)
    else:
        compare(a.before, a.after)


if __name__ == "__main__":
    main()
