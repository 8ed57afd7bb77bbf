"""The service table: ``[[service]]`` rows validated, the port lookup arrays, the service ids.

rules/exchange2003.toml mirrors Microsoft's "Ports used in Exchange 2003" row by row, so that a reader can
check every port against the table and add services for their own site without touching code.
Validation is strict (unknown keys, bad ids, ports out of range, one port claimed by two
services on one side) because a typo in a rules file would otherwise silently mislabel traffic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import RulesError
from .toml_files import RULES_DIR, no_unknown_keys, read_toml

#: Microsoft's table, the shipped services
DEFAULT_RULES = RULES_DIR / "exchange2003.toml"

OTHER = "other"
TRANSPORTS = ("tcp", "udp")
SIDES = ("inbound", "outbound")

_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SERVICE_KEYS = frozenset({"id", "name", "depends_on", "inbound", "outbound", "rpc", "dynamic", "notes"})
_PORT_KEYS = frozenset({"transport", "port", "ports", "note"})
_DYNAMIC_KEYS = {"direction", "transport", "what", "note"}


@dataclass(frozen=True, slots=True)
class PortRule:
    """One (transport, port) of a service on one side of the seed table."""

    transport: str
    port: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Service:
    """One row of the service table."""

    id: str
    name: str
    depends_on: tuple[str, ...]
    inbound: tuple[PortRule, ...]
    outbound: tuple[PortRule, ...]
    #: reached through "135 & other RPC" (endpoint mapper, dynamic ports) on each side
    rpc_inbound: bool
    rpc_outbound: bool
    #: the service of a DCE/RPC connection to an Exchange server whose interface nobody named
    rpc_unnamed: bool
    #: port-less traffic the table describes, e.g. UDP new-mail notifications
    dynamic: tuple[Mapping[str, str], ...]
    notes: str
    #: the file this row came from
    source: str


@dataclass(frozen=True, slots=True)
class PortLookup:
    """Port → service code arrays: ``table[transport, side, port]`` indexes ``ids``.

    Code 0 is ``other``. ``rule_port[transport, port]`` is true for a port any service names,
    which orients flows whose SYN was not captured. ``unnamed_rpc`` is the code of the service a
    DCE/RPC connection to an Exchange server is taken for when nothing named its interface.
    """

    ids: tuple[str, ...]
    table: npt.NDArray[np.int16]
    rule_port: npt.NDArray[np.bool_]
    unnamed_rpc: int = 0


def port_lookup(services: Sequence[Service]) -> PortLookup:
    """The vectorized lookup of ``services`` (codes from 1 in their order): one 65536-entry
    array per transport and side."""
    table = np.zeros((len(TRANSPORTS), len(SIDES), 65536), dtype=np.int16)
    for code, service in enumerate(services, start=1):
        for side_index, rules in enumerate((service.inbound, service.outbound)):
            for rule in rules:
                table[TRANSPORTS.index(rule.transport), side_index, rule.port] = code
    unnamed = [code for code, service in enumerate(services, start=1) if service.rpc_unnamed]
    ids = (OTHER, *(s.id for s in services))
    return PortLookup(ids=ids, table=table, rule_port=(table != 0).any(axis=1), unnamed_rpc=unnamed[-1] if unnamed else 0)


def parse_services(doc: Mapping[str, Any], path: str) -> list[Service]:
    """The ``[[service]]`` rows of a rules file's parsed TOML, validated."""
    rows = doc.get("service", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise RulesError("must be an array of tables ([[service]])", path=path, key="service")
    seen: set[str] = set()
    services = []
    for i, row in enumerate(rows):
        service = _parse_service(row, path, f"service[{i}]")
        if service.id in seen:
            raise RulesError(f"duplicate service id {service.id!r}", path=path, key=f"service[{i}].id")
        seen.add(service.id)
        services.append(service)
    return services


def _parse_service(row: dict[str, Any], path: str, where: str) -> Service:
    no_unknown_keys(row, _SERVICE_KEYS, path, where)
    sid = row.get("id")
    if not isinstance(sid, str) or not _ID.match(sid):
        raise RulesError("id must be lower-case words joined by hyphens, e.g. 'information-store'", path=path, key=f"{where}.id")
    if sid == OTHER:
        raise RulesError("'other' is reserved for traffic that matches no rule", path=path, key=f"{where}.id")
    where = f"{where}({sid})"
    name = _string(row.get("name", sid), path, f"{where}.name")
    notes = _string(row.get("notes", ""), path, f"{where}.notes")
    depends = row.get("depends_on", [])
    if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
        raise RulesError("must be a list of strings", path=path, key=f"{where}.depends_on")
    rpc = row.get("rpc", {})
    if not isinstance(rpc, dict) or set(rpc) - {*SIDES, "unnamed"} or not all(isinstance(v, bool) for v in rpc.values()):
        raise RulesError("must be { inbound = true|false, outbound = true|false, unnamed = true|false }", path=path, key=f"{where}.rpc")
    dynamic = row.get("dynamic", [])
    if not isinstance(dynamic, list):
        raise RulesError("must be an array of tables", path=path, key=f"{where}.dynamic")
    for j, entry in enumerate(dynamic):
        key = f"{where}.dynamic[{j}]"
        if not isinstance(entry, dict) or set(entry) - _DYNAMIC_KEYS:
            raise RulesError(f"must be a table with keys {', '.join(sorted(_DYNAMIC_KEYS))}", path=path, key=key)
        if entry.get("direction") not in SIDES or entry.get("transport") not in TRANSPORTS:
            raise RulesError("needs direction = inbound|outbound and transport = tcp|udp", path=path, key=key)
    return Service(
        id=sid,
        name=name,
        depends_on=tuple(depends),
        inbound=_ports(row.get("inbound", []), path, f"{where}.inbound"),
        outbound=_ports(row.get("outbound", []), path, f"{where}.outbound"),
        rpc_inbound=bool(rpc.get("inbound", False)),
        rpc_outbound=bool(rpc.get("outbound", False)),
        rpc_unnamed=bool(rpc.get("unnamed", False)),
        dynamic=tuple(dict(d) for d in dynamic),
        notes=notes,
        source=path,
    )


def _ports(entries: Any, path: str, where: str) -> tuple[PortRule, ...]:
    if not isinstance(entries, list):
        raise RulesError("must be an array of { transport, port } tables", path=path, key=where)
    rules = []
    for j, entry in enumerate(entries):
        key = f"{where}[{j}]"
        if not isinstance(entry, dict):
            raise RulesError("must be a table { transport = ..., port = ... }", path=path, key=key)
        no_unknown_keys(entry, _PORT_KEYS, path, key)
        transport = entry.get("transport")
        if transport not in TRANSPORTS:
            raise RulesError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}", path=path, key=f"{key}.transport")
        if ("port" in entry) == ("ports" in entry):
            raise RulesError("give exactly one of port = N or ports = [N, ...]", path=path, key=key)
        ports = [entry["port"]] if "port" in entry else entry["ports"]
        if not isinstance(ports, list) or not ports:
            raise RulesError("must be a non-empty list of port numbers", path=path, key=f"{key}.ports")
        note = _string(entry.get("note", ""), path, f"{key}.note")
        for port in ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise RulesError(f"port must be an integer from 1 to 65535, not {port!r}", path=path, key=f"{key}.port")
            rules.append(PortRule(transport, port, note))
    return tuple(rules)


def _string(value: Any, path: str, key: str) -> str:
    if not isinstance(value, str):
        raise RulesError("must be a string", path=path, key=key)
    return value


def check_conflicts(services: Sequence[Service]) -> None:
    """A (transport, port) may name one service per side, or the lookup would be ambiguous."""
    for side in SIDES:
        owner: dict[tuple[str, int], Service] = {}
        for service in services:
            for j, rule in enumerate(getattr(service, side)):
                other = owner.setdefault((rule.transport, rule.port), service)
                if other is not service:
                    raise RulesError(
                        f"{rule.transport}/{rule.port} {side} is already claimed by {other.id!r} ({other.source})",
                        path=service.source,
                        key=f"service({service.id}).{side}[{j}]",
                    )


#: the services the shipped tables may name: those of rules/exchange2003.toml and ``other``, one
#: place, so that a new service is added there alone
SERVICE_IDS: frozenset[str] = frozenset({OTHER, *(s.id for s in parse_services(read_toml(str(DEFAULT_RULES)), str(DEFAULT_RULES)))})
