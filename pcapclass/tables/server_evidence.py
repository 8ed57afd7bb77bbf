"""The weights of Exchange server evidence: rules/server_evidence.toml, validated.

Each kind of evidence (``pcapclass.protocols.proofs``) has a weight; a host whose distinct kinds
weigh at least the threshold is an Exchange server (``pcapclass.servers.infer``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from ..errors import RulesError
from ..protocols.proofs import KINDS
from .toml_files import RULES_DIR, read_toml

#: rules/server_evidence.toml of a source checkout
DEFAULT_SERVER_EVIDENCE = RULES_DIR / "server_evidence.toml"


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

