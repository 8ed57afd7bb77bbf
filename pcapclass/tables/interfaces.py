"""The interface table: what a DCE/RPC bind to a UUID says about a flow's service.

rules/rpc_interfaces.toml (and any ``--rules`` file's ``[[interface]]`` rows) name each
interface's service, whether a bind to it decides the flow alone (``decisive``) and whether only
Exchange serves it (``exchange``). The endpoint mapper's table and binds are read by
``pcapclass.protocols.dcerpc``; this table says what the UUIDs they carry mean.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import RulesError
from .services import SERVICE_IDS
from .toml_files import RULES_DIR, no_unknown_keys, read_toml

#: rules/rpc_interfaces.toml of a source checkout
DEFAULT_INTERFACES_PATH = RULES_DIR / "rpc_interfaces.toml"

@dataclass(frozen=True, slots=True)
class Interface:
    """A row of rules/rpc_interfaces.toml: what a bind to ``uuid`` says about a flow's service.

    ``decisive`` is False for UUIDs that other products share (Exchange 5.5 DRS is Windows
    FRS's UUID): such a bind names the interface but must not tag the flow as Exchange alone.
    ``exchange`` is True for interfaces only Exchange serves: a bind to one, or an endpoint-mapper
    answer naming one, is evidence that the host serving it is an Exchange server.
    """

    uuid: str
    name: str
    service: str
    version: tuple[int, int] | None = None
    note: str = ""
    decisive: bool = True
    exchange: bool = True


_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_VERSION_RE = re.compile(r"^(\d{1,5})\.(\d{1,5})$")
_INTERFACE_KEYS = frozenset({"uuid", "version", "name", "service", "note", "decisive", "exchange"})


def load_interfaces(
    path: str | os.PathLike[str] = DEFAULT_INTERFACES_PATH,
    *,
    services: frozenset[str] = SERVICE_IDS,
) -> dict[str, Interface]:
    """Load the UUID → service table (rules/rpc_interfaces.toml) keyed by lower-case UUID.

    Each ``[[interface]]`` needs ``uuid``, ``name`` and ``service`` (one of ``services``) and
    may have ``version = "major.minor"``, ``note``, ``decisive`` (default true) and ``exchange``
    (default: as ``decisive``).

    >>> load_interfaces()["a4f1db00-ca47-1067-b31f-00dd010662da"].service
    'information-store'

    Raises RulesError (carrying the file and the key path, e.g. ``interface[3].service``) for
    an unreadable file, bad TOML, a missing/unknown/mistyped key, a bad UUID or version, an
    unknown service or a duplicate UUID.
    """
    where = os.fspath(path)
    doc = read_toml(where)
    extra = set(doc) - {"interface"}
    if extra:
        raise RulesError(f"unknown top-level key {min(extra)!r}", path=where, key=min(extra))
    rows = doc.get("interface")
    if not isinstance(rows, list) or not rows:
        raise RulesError("expected one or more [[interface]] tables", path=where, key="interface")
    return parse_interfaces(rows, where, services)


def parse_interfaces(rows: list[Any], where: str, services: frozenset[str]) -> dict[str, Interface]:
    """The ``[[interface]]`` rows of the rules file ``where``, validated, keyed by lower-case UUID."""
    table: dict[str, Interface] = {}
    for i, row in enumerate(rows):
        key = f"interface[{i}]"
        if not isinstance(row, dict):
            raise RulesError("expected a table", path=where, key=key)
        no_unknown_keys(row, _INTERFACE_KEYS, where, key)
        for required in ("uuid", "name", "service"):
            if not isinstance(row.get(required), str) or not row[required].strip():
                raise RulesError(f"missing or empty string {required!r}", path=where, key=f"{key}.{required}")
        ident = row["uuid"].strip().lower()
        if not _UUID_RE.match(ident):
            raise RulesError(f"invalid UUID {row['uuid']!r}", path=where, key=f"{key}.uuid")
        if ident in table:
            raise RulesError(f"duplicate UUID {ident!r}", path=where, key=f"{key}.uuid")
        service = row["service"]
        if service not in services:
            raise RulesError(f"unknown service {service!r}", path=where, key=f"{key}.service")
        version: tuple[int, int] | None = None
        if "version" in row:
            match = _VERSION_RE.match(row["version"]) if isinstance(row["version"], str) else None
            if match is None:
                raise RulesError(
                    f'invalid version {row["version"]!r} (expected "major.minor")',
                    path=where,
                    key=f"{key}.version",
                )
            version = (int(match.group(1)), int(match.group(2)))
            if max(version) > 0xFFFF:
                raise RulesError(
                    f"invalid version {row['version']!r} (u16 parts)", path=where, key=f"{key}.version"
                )
        note = row.get("note", "")
        if not isinstance(note, str):
            raise RulesError(f"note must be a string, not {note!r}", path=where, key=f"{key}.note")
        decisive = row.get("decisive", True)
        if not isinstance(decisive, bool):
            raise RulesError(
                f"decisive must be true or false, not {decisive!r}", path=where, key=f"{key}.decisive"
            )
        exchange = row.get("exchange", decisive)
        if not isinstance(exchange, bool):
            raise RulesError(f"exchange must be true or false, not {exchange!r}", path=where, key=f"{key}.exchange")
        table[ident] = Interface(ident, row["name"].strip(), service, version, note, decisive, exchange)
    return table
