"""Exchange servers inferred from Exchange evidence: the scoring of hosts by the kinds they showed.

A host is an Exchange server when the traffic shows it doing what only Exchange does (a bind
to the store, an EHLO with Exchange's keywords, an OWA request ...), never because it answers
on a port Exchange also uses. The payload stage tags each piece of evidence with one of the
kinds of ``pcapclass.protocols.proofs``; ``classify`` attributes it to a host; :func:`infer` sums, per host, the weights of
the distinct kinds it showed (rules/server_evidence.toml, ``pcapclass.tables.server_evidence``) and keeps the hosts that reach the
threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .tables.server_evidence import ServerEvidenceRules


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
    # the sum per (hi, lo, kind), in that order, as a sorted groupby gives it: one lexsort and a
    # sum per run of equal keys (a groupby of the three keys costs 1.7 times as much)
    hi, lo, flows = (np.concatenate([p[c].to_numpy(t) for p in parts]) for c, t in (("hi", np.uint64), ("lo", np.uint64), ("flows", np.int64)))
    kind, kinds = pd.factorize(np.concatenate([p["kind"].to_numpy(object) for p in parts]), sort=True)
    order = np.lexsort((kind, lo, hi))
    hi, lo, kind, flows = hi[order], lo[order], kind[order], flows[order]
    start = np.flatnonzero(np.r_[True, (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1]) | (kind[1:] != kind[:-1])])
    return pd.DataFrame({"hi": hi[start], "lo": lo[start], "kind": np.asarray(kinds, dtype=object)[kind[start]],
                         "flows": np.add.reduceat(flows, start)})  # fmt: skip


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
    kind, named = pd.factorize(evidence["kind"].to_numpy(object))  # each distinct kind looked up once
    bits = np.array([bit.get(k, 0) for k in named], dtype=np.int64)[kind][order]
    flows = evidence["flows"].to_numpy(np.int64)[order]
    start = np.flatnonzero(np.r_[True, (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])])
    masks, which = np.unique(np.bitwise_or.reduceat(bits, start), return_inverse=True)
    names = np.array([" ".join(k for k in kinds if m & bit[k]) for m in masks.tolist()], dtype=object)
    scores = np.array([sum(rules.weights[k] for k in kinds if m & bit[k]) for m in masks.tolist()], dtype=np.int64)
    hosts = pd.DataFrame({"hi": hi[start], "lo": lo[start], "kinds": names[which], "flows": np.add.reduceat(flows, start),
                          "score": scores[which]})  # fmt: skip
    hosts["exchange"] = hosts["score"] >= rules.threshold
    return hosts.sort_values(["score", "flows"], ascending=False, kind="stable").reset_index(drop=True)
