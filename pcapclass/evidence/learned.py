"""``Evidence``: what the payload stage hands ``classify``, as three tables.

``rows`` (a piece of evidence per flow key and time), ``verdicts`` (the distinct verdicts the
rows point into) and ``epm`` (ports the endpoint mapper handed out); each is built by the part
that owns its state (``rows.RowLog``, ``verdicts.VerdictTable``, ``epm.EndpointMapperTable``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .verdicts import VerdictRow

DEFAULT_EPM_EXPIRY = 300.0


@dataclass
class Evidence:
    """What the payload stage learned, ready for ``classify``."""

    #: one row per piece of evidence, in the order found: hash, check (uint64), ts_ns, from_a
    #: (the sender was endpoint A), vid (its verdict: a row of ``verdicts``) and kind (the
    #: verdict's kind, categorical)
    rows: pd.DataFrame
    #: the distinct verdicts, indexed by vid: kind, service ('' = the port's), detail,
    #: rpc_interface, rpc_interface_name, server_is_sender (1 / 0 / -1 either),
    #: client_is_sender (registration rows: 1), protocol (what the bytes are, '' unknown) and
    #: proof (the kind of Exchange server evidence it is, proofs.KINDS, '' none)
    verdicts: pd.DataFrame
    #: server_hi, server_lo, transport ('tcp'/'udp'), port, first_ns, last_ns, service,
    #: rpc_interface, rpc_interface_name, exchange (the interface is Exchange's alone)
    epm: pd.DataFrame
    epm_expiry_ns: int

    @staticmethod
    def empty(epm_expiry: float = DEFAULT_EPM_EXPIRY) -> Evidence:
        """Nothing learned."""
        return Evidence(rows_frame([]), verdict_frame([]), epm_frame([]), int(epm_expiry * 1e9))


VERDICT_COLUMNS = ("kind", "service", "detail", "rpc_interface", "rpc_interface_name", "server_is_sender",
                   "client_is_sender", "protocol", "proof")  # fmt: skip
EPM_COLUMNS = ("server_hi", "server_lo", "transport", "port", "first_ns", "last_ns", "service",
               "rpc_interface", "rpc_interface_name", "exchange")  # fmt: skip


def rows_frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The rows table of these parts (one per batch of rows), or an empty one."""
    if parts:
        return pd.concat(parts, ignore_index=True)
    return pd.DataFrame({
        "hash": np.zeros(0, np.uint64), "check": np.zeros(0, np.uint64), "ts_ns": np.zeros(0, np.int64),
        "from_a": np.zeros(0, bool), "vid": np.zeros(0, np.int32), "kind": pd.Categorical([]),
    })  # fmt: skip


def verdict_frame(table: Sequence[VerdictRow]) -> pd.DataFrame:
    """The verdicts table of ``VerdictTable.rows``."""
    df = pd.DataFrame(table, columns=list(VERDICT_COLUMNS))
    return df.astype({"server_is_sender": np.int8, "client_is_sender": np.int8})


def epm_frame(rows: Sequence[tuple[object, ...]]) -> pd.DataFrame:
    """The endpoint-mapper table of (server, transport, port, span, interface) rows."""
    df = pd.DataFrame(rows, columns=list(EPM_COLUMNS))
    for c in ("server_hi", "server_lo"):
        df[c] = df[c].astype(np.uint64)
    for c in ("port", "first_ns", "last_ns"):
        df[c] = df[c].astype(np.int64)
    df["exchange"] = df["exchange"].astype(bool)
    return df


