"""Rules files: the shipped tables and a site's ``--rules`` files, loaded into one ``RuleSet``.

Every rules file may carry any of the tables: ``[[service]]`` rows (rules/exchange2003.toml's
format), ``[[interface]]`` rows (rules/rpc_interfaces.toml's), ``[[path]]`` rows and an
``[rpc_http]`` table (rules/http_paths.toml's). So a site adds a service, the interface that
names it and the HTTP path that reaches it in one file. Files are read in order; a later row
replaces an earlier one with the same service id, interface UUID or path prefix, and the
interfaces and paths may name any service of the set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RulesError
from ..protocols.http import HttpPathTable, PathRule, RpcHttpRule
from .http_paths import (
    DEFAULT_HTTP_PATHS_PATH,
    longest_first,
    parse_paths,
    parse_rpc_http,
)
from .interfaces import DEFAULT_INTERFACES_PATH, Interface, parse_interfaces
from .services import (
    DEFAULT_RULES,
    OTHER,
    PortLookup,
    Service,
    check_conflicts,
    parse_services,
    port_lookup,
)
from .toml_files import read_toml

#: the shipped rules files, read before any of a site's
SHIPPED_RULES = (DEFAULT_RULES, DEFAULT_INTERFACES_PATH, DEFAULT_HTTP_PATHS_PATH)
_TABLES = ("meta", "service", "interface", "rpc_http", "path")


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The validated tables: services in file order, interfaces by UUID, the HTTP path table."""

    services: tuple[Service, ...]
    sources: tuple[str, ...]
    interfaces: Mapping[str, Interface]
    http_paths: HttpPathTable

    @property
    def ids(self) -> tuple[str, ...]:
        """Every service id plus ``other``, in the order codes are assigned."""
        return (OTHER, *(s.id for s in self.services))

    def lookup(self) -> PortLookup:
        """Build the vectorized lookup: one 65536-entry array per transport and side."""
        return port_lookup(self.services)


def load_rules(extra: Iterable[str | os.PathLike[str]] = (), *, base: Sequence[str | os.PathLike[str]] = SHIPPED_RULES) -> RuleSet:
    """Load the shipped tables (``base``) then each ``extra`` file; a same-id service, same-UUID
    interface or same-prefix path replaces.

    Raises RulesError naming the file, the key and the reason.
    """
    services: dict[str, Service] = {}
    sources: list[str] = []
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in [*base, *extra]:
        name = os.fspath(path)
        doc = read_toml(name)
        unknown = set(doc) - set(_TABLES)
        if unknown:
            raise RulesError(f"unknown table (expected {', '.join(_TABLES)})", path=name, key=min(unknown))
        for service in parse_services(doc, name):
            services.pop(service.id, None)
            services[service.id] = service
        sources.append(name)
        docs.append((name, doc))
    check_conflicts(list(services.values()))
    ids = frozenset({OTHER, *services})
    interfaces: dict[str, Interface] = {}
    paths: dict[str, PathRule] = {}
    rpc_http: RpcHttpRule | None = None
    for name, doc in docs:
        if "interface" in doc:
            if not isinstance(doc["interface"], list):
                raise RulesError("must be an array of tables ([[interface]])", path=name, key="interface")
            interfaces.update(parse_interfaces(doc["interface"], name, ids))
        if "rpc_http" in doc:
            if not isinstance(doc["rpc_http"], dict):
                raise RulesError("must be a table ([rpc_http])", path=name, key="rpc_http")
            rpc_http = parse_rpc_http(doc["rpc_http"], name, ids)
        paths.update((rule.prefix, rule) for rule in parse_paths(doc.get("path", []), name, ids))
    if rpc_http is None:
        raise RulesError("no rules file has an [rpc_http] table", path=sources[-1] if sources else "", key="rpc_http")
    return RuleSet(services=tuple(services.values()), sources=tuple(sources), interfaces=interfaces,
                   http_paths=HttpPathTable(rpc_http, longest_first(list(paths.values()))))  # fmt: skip
