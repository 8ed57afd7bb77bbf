"""What the binds of a DCE/RPC connection name: their contexts, and the verdict of each interface.

Clients repeat their binds byte for byte, so a bind's (context id, interface) list is parsed
once and cached (a small cache, cleared when full); the verdict of an interface comes from the
interface table (``pcapclass.tables.interfaces``).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..protocols.dcerpc import BIND_N_CONTEXTS_OFFSET, parse_bind
from ..protocols.proofs import RPC_INTERFACE
from ..tables.interfaces import Interface
from .anomalies import EvidenceAnomalies
from .verdicts import DCERPC, INTERFACE_ONLY, Verdict

#: binds whose contexts are remembered at most
_CACHED_BINDS = 4096


class Binds:
    """The interface table, and the contexts of the binds met lately."""

    def __init__(self, interfaces: Mapping[str, Interface], counts: EvidenceAnomalies) -> None:
        self.interfaces = interfaces
        self._counts = counts
        self._cache: dict[bytes, tuple[list[tuple[int, str]], bool]] = {}

    def contexts(self, pdu: bytes) -> list[tuple[int, str]]:
        """(context id, interface) of a bind / alter_context; clients repeat theirs, so cached."""
        return self.parsed(pdu)[0]

    def parsed(self, pdu: bytes) -> tuple[list[tuple[int, str]], bool]:
        """``contexts``, and whether the PDU held every context its header counts (False: cut
        short, or not a whole bind at all)."""
        found = self._cache.get(pdu)
        if found is None:
            if len(self._cache) > _CACHED_BINDS:
                self._counts.binds_forgotten += len(self._cache)
                self._cache.clear()
            contexts = [(c.context_id, c.interface) for c in parse_bind(pdu)]
            whole = len(pdu) > BIND_N_CONTEXTS_OFFSET and len(contexts) == pdu[BIND_N_CONTEXTS_OFFSET]
            found = self._cache[pdu] = (contexts, whole)
        return found

    def verdict(self, uuid: str, kind: str) -> Verdict:
        """What a bind (``kind`` 'bind') naming ``uuid`` says."""
        iface = self.interfaces.get(uuid)
        if iface is None:
            return Verdict(INTERFACE_ONLY, "", "", uuid, "", protocol=DCERPC)
        if not iface.decisive:
            return Verdict(INTERFACE_ONLY, "", "", uuid, iface.name, protocol=DCERPC)
        return Verdict(kind, iface.service, "", uuid, iface.name, protocol=DCERPC, proof=RPC_INTERFACE if iface.exchange else "")
