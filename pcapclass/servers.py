"""Exchange servers inferred from Exchange evidence: the kinds, their weights, the scoring.

A host is an Exchange server when the traffic shows it doing what only Exchange does (a bind
to the store, an EHLO with Exchange's keywords, an OWA request ...), never because it answers
on a port Exchange also uses. The payload stage tags each piece of evidence with one of the
kinds below; ``classify`` attributes it to a host; :func:`infer` sums, per host, the weights of
the distinct kinds it showed (rules/server_evidence.toml) and keeps the hosts that reach the
threshold.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import RulesError
from .rules import RULES_DIR, read_toml

DEFAULT_SERVER_EVIDENCE = RULES_DIR / "server_evidence.toml"

#: the kinds of evidence the payload stage emits (each needs a weight in the rules)
RPC_INTERFACE = "rpc-interface"
EPM_ANSWER = "epm-answer"
RPC_OVER_HTTP = "rpc-over-http"
EXCHANGE_SMTP = "exchange-smtp"
EXCHANGE_GREETING = "exchange-greeting"
EXCHANGE_HTTP = "exchange-http"
PUBLIC_FOLDERS_HTTP = "public-folders-http"
MICROSOFT_SMTP_GREETING = "microsoft-smtp-greeting"
KINDS = frozenset({RPC_INTERFACE, EPM_ANSWER, RPC_OVER_HTTP, EXCHANGE_SMTP, EXCHANGE_GREETING, EXCHANGE_HTTP,
                   PUBLIC_FOLDERS_HTTP, MICROSOFT_SMTP_GREETING})  # fmt: skip

#: per (host, kind) of evidence: the host's address halves, the kind and how many flows showed it
EVIDENCE_COLUMNS = ("hi", "lo", "kind", "flows")


@dataclass(frozen=True, slots=True)
class ServerEvidenceRules:
    """rules/server_evidence.toml: each kind's weight and the score a host needs."""

    weights: dict[str, int]
    threshold: int

    @property
    def conclusive(self) -> frozenset[str]:
        """The kinds that make an Exchange server on their own: a flow whose own payload shows
        one is Exchange traffic whoever its ends are."""
        return frozenset(k for k, w in self.weights.items() if w >= self.threshold)


def load_server_evidence(path: str | os.PathLike[str] = DEFAULT_SERVER_EVIDENCE) -> ServerEvidenceRules:
    """Read and validate the weights (RulesError with the key path on any fault).

    >>> load_server_evidence().weights["rpc-interface"] >= load_server_evidence().threshold
    True
    """
    where = os.fspath(path)
    doc = read_toml(where)
    extra = set(doc) - {"threshold", "kind"}
    if extra:
        raise RulesError(f"unknown top-level key {min(extra)!r}", path=where, key=min(extra))
    threshold = doc.get("threshold")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold <= 0:
        raise RulesError(f"threshold must be a positive integer, not {threshold!r}", path=where, key="threshold")
    weights: dict[str, int] = {}
    for i, row in enumerate(doc.get("kind", [])):
        key = f"kind[{i}]"
        if not isinstance(row, dict) or set(row) != {"id", "weight", "what"}:
            raise RulesError("expected a table with exactly id, weight and what", path=where, key=key)
        if row["id"] not in KINDS:
            raise RulesError(f"unknown kind {row['id']!r} (known: {', '.join(sorted(KINDS))})", path=where, key=f"{key}.id")
        if row["id"] in weights:
            raise RulesError(f"duplicate kind {row['id']!r}", path=where, key=f"{key}.id")
        weight = row["weight"]
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise RulesError(f"weight must be an integer >= 0, not {weight!r}", path=where, key=f"{key}.weight")
        weights[row["id"]] = weight
    missing = KINDS - set(weights)
    if missing:
        raise RulesError(f"no weight for kind {min(missing)!r}", path=where, key="kind")
    return ServerEvidenceRules(weights, threshold)


@functools.cache
def default_server_evidence() -> ServerEvidenceRules:
    """The shipped weights, read once."""
    return load_server_evidence()


def empty_evidence() -> pd.DataFrame:
    """A server-evidence table with no rows."""
    return pd.DataFrame({"hi": np.zeros(0, np.uint64), "lo": np.zeros(0, np.uint64), "kind": np.zeros(0, object),
                         "flows": np.zeros(0, np.int64)})  # fmt: skip


def merged(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Evidence tables of several blocks (or units) as one: flows summed per (host, kind)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_evidence()
    if len(parts) == 1:
        return parts[0]
    both = pd.concat(parts, ignore_index=True)
    return both.groupby(["hi", "lo", "kind"], as_index=False, sort=True)["flows"].sum()


def infer(evidence: pd.DataFrame, rules: ServerEvidenceRules) -> pd.DataFrame:
    """Per host with any evidence: hi, lo, kinds (sorted, space-separated), flows (that showed
    any), score and whether it is an Exchange server; strongest first.

    Vectorized over hosts: each kind is a bit, a host's kinds their OR, and the names and
    scores are worked out once per distinct set of kinds."""
    if not len(evidence):
        return pd.DataFrame({"hi": np.zeros(0, np.uint64), "lo": np.zeros(0, np.uint64), "kinds": np.zeros(0, object),
                             "flows": np.zeros(0, np.int64), "score": np.zeros(0, np.int64), "exchange": np.zeros(0, bool)})  # fmt: skip
    kinds = sorted(rules.weights)
    bit = {k: 1 << i for i, k in enumerate(kinds)}
    hi, lo = evidence["hi"].to_numpy(np.uint64), evidence["lo"].to_numpy(np.uint64)
    order = np.lexsort((lo, hi))
    hi, lo = hi[order], lo[order]
    bits = evidence["kind"].map(bit).fillna(0).to_numpy(np.int64)[order]
    flows = evidence["flows"].to_numpy(np.int64)[order]
    start = np.flatnonzero(np.r_[True, (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])])
    masks, which = np.unique(np.bitwise_or.reduceat(bits, start), return_inverse=True)
    names = np.array([" ".join(k for k in kinds if m & bit[k]) for m in masks.tolist()], dtype=object)
    scores = np.array([sum(rules.weights[k] for k in kinds if m & bit[k]) for m in masks.tolist()], dtype=np.int64)
    hosts = pd.DataFrame({"hi": hi[start], "lo": lo[start], "kinds": names[which], "flows": np.add.reduceat(flows, start),
                          "score": scores[which]})  # fmt: skip
    hosts["exchange"] = hosts["score"] >= rules.threshold
    return hosts.sort_values(["score", "flows"], ascending=False, kind="stable").reset_index(drop=True)
