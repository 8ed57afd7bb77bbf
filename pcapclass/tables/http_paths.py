"""The HTTP path table: which request paths are Exchange's, and RPC over HTTP's proxy and ports.

rules/http_paths.toml (and any ``--rules`` file's ``[[path]]`` rows) is loaded here into the
records ``pcapclass.protocols.http.classify_request`` matches request lines against.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import RulesError
from ..protocols.http import (
    METHOD_TOKEN,
    HttpPathTable,
    PathRule,
    QueryRule,
    RpcHttpRule,
)
from ..protocols.proofs import KINDS
from .services import SERVICE_IDS
from .toml_files import RULES_DIR, no_unknown_keys, read_toml

#: rules/http_paths.toml of a source checkout
DEFAULT_HTTP_PATHS_PATH = RULES_DIR / "http_paths.toml"

_PATH_KEYS = frozenset({"prefix", "service", "detail", "note", "query", "proves"})
_QUERY_KEYS = frozenset({"param", "value", "detail"})
_RPC_KEYS = frozenset({"proxy", "methods", "default_service", "ports", "exchange_ports"})


def _string(row: dict[str, Any], name: str, where: str, key: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RulesError(f"missing or empty string {name!r}", path=where, key=f"{key}.{name}")
    return value.strip()


def _service(value: str, services: frozenset[str], where: str, key: str) -> str:
    if value not in services:
        raise RulesError(f"unknown service {value!r}", path=where, key=key)
    return value


def load_http_paths(
    path: str | os.PathLike[str] = DEFAULT_HTTP_PATHS_PATH,
    *,
    services: frozenset[str] = SERVICE_IDS,
) -> HttpPathTable:
    """Load and validate rules/http_paths.toml.

    Raises RulesError (with the file and a key path such as ``path[2].service``) for an
    unreadable file, bad TOML, unknown or missing keys, a prefix not starting with '/', an
    unknown service, a bad port, or a duplicate prefix.
    """
    where = os.fspath(path)
    doc = read_toml(where)
    no_unknown_keys(doc, frozenset({"rpc_http", "path"}), where, "")
    if not isinstance(doc.get("rpc_http"), dict):
        raise RulesError("missing [rpc_http] table", path=where, key="rpc_http")
    return HttpPathTable(parse_rpc_http(doc["rpc_http"], where, services), longest_first(parse_paths(doc.get("path", []), where, services)))


def parse_rpc_http(rpc: dict[str, Any], where: str, services: frozenset[str]) -> RpcHttpRule:
    """The ``[rpc_http]`` table of the rules file ``where``, validated."""
    no_unknown_keys(rpc, _RPC_KEYS, where, "rpc_http")
    proxy = _string(rpc, "proxy", where, "rpc_http").lower()
    if "/" in proxy or " " in proxy:
        raise RulesError(f"proxy must be a file name, not {proxy!r}", path=where, key="rpc_http.proxy")
    methods = rpc.get("methods")
    if (
        not isinstance(methods, list)
        or not methods
        or not all(isinstance(m, str) and METHOD_TOKEN.match(m.encode("ascii", "replace")) for m in methods)
    ):
        raise RulesError(
            f"methods must be a list of method tokens, not {methods!r}", path=where, key="rpc_http.methods"
        )
    default_service = _service(
        _string(rpc, "default_service", where, "rpc_http"), services, where, "rpc_http.default_service"
    )
    raw_ports = rpc.get("ports", {})
    if not isinstance(raw_ports, dict):
        raise RulesError("ports must be a table of port = service", path=where, key="rpc_http.ports")
    ports: dict[int, str] = {}
    for port_text, service in raw_ports.items():
        key = f"rpc_http.ports.{port_text}"
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise RulesError(f"invalid port {port_text!r}", path=where, key=key)
        if not isinstance(service, str):
            raise RulesError(f"service must be a string, not {service!r}", path=where, key=key)
        ports[int(port_text)] = _service(service, services, where, key)
    exchange_ports = rpc.get("exchange_ports", [])
    if not isinstance(exchange_ports, list) or not all(isinstance(p, int) and p in ports for p in exchange_ports):
        raise RulesError(f"exchange_ports must list ports of rpc_http.ports, not {exchange_ports!r}", path=where,
                         key="rpc_http.exchange_ports")  # fmt: skip
    return RpcHttpRule(proxy, frozenset(m.upper() for m in methods), ports, default_service, frozenset(exchange_ports))


def parse_paths(rows: Any, where: str, services: frozenset[str]) -> list[PathRule]:
    """The ``[[path]]`` rows of the rules file ``where``, validated, in file order."""
    if not isinstance(rows, list):
        raise RulesError("expected [[path]] tables", path=where, key="path")
    rules: list[PathRule] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        key = f"path[{i}]"
        if not isinstance(row, dict):
            raise RulesError("expected a table", path=where, key=key)
        no_unknown_keys(row, _PATH_KEYS, where, key)
        prefix = _string(row, "prefix", where, key).lower().rstrip("/")
        if not prefix.startswith("/") or " " in prefix or "?" in prefix:
            raise RulesError(f"invalid prefix {row['prefix']!r}", path=where, key=f"{key}.prefix")
        if prefix in seen:
            raise RulesError(f"duplicate prefix {row['prefix']!r}", path=where, key=f"{key}.prefix")
        seen.add(prefix)
        service = _service(_string(row, "service", where, key), services, where, f"{key}.service")
        detail = _string(row, "detail", where, key)
        note = row.get("note", "")
        if not isinstance(note, str):
            raise RulesError(f"note must be a string, not {note!r}", path=where, key=f"{key}.note")
        queries: list[QueryRule] = []
        raw_queries = row.get("query", [])
        if not isinstance(raw_queries, list):
            raise RulesError("expected [[path.query]] tables", path=where, key=f"{key}.query")
        for j, q in enumerate(raw_queries):
            qkey = f"{key}.query[{j}]"
            if not isinstance(q, dict):
                raise RulesError("expected a table", path=where, key=qkey)
            no_unknown_keys(q, _QUERY_KEYS, where, qkey)
            queries.append(
                QueryRule(
                    _string(q, "param", where, qkey).lower(),
                    _string(q, "value", where, qkey).lower(),
                    _string(q, "detail", where, qkey),
                )
            )
        proves = row.get("proves", "")
        if proves and proves not in KINDS:
            raise RulesError(f"unknown server evidence kind {proves!r} (known: {', '.join(sorted(KINDS))})", path=where,
                             key=f"{key}.proves")  # fmt: skip
        rules.append(PathRule(prefix, service, detail, tuple(queries), note, proves))
    return rules


def longest_first(rules: list[PathRule]) -> tuple[PathRule, ...]:
    """The path rules in the order a request is matched against them: longest prefix first."""
    return tuple(sorted(rules, key=lambda r: len(r.prefix), reverse=True))
