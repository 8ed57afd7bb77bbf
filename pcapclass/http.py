"""HTTP request lines and the Exchange paths they name (OWA, ActiveSync, OMA, RPC over HTTP).

Pure functions over a flow's first client payload. Any method token is accepted (WebDAV's
PROPFIND/SEARCH/X-MS-ENUMATTS, RPC over HTTP's RPC_IN_DATA/RPC_OUT_DATA), because what Exchange
serves is told by the path, not the method. The path table is data: rules/http_paths.toml.

Example::

    req = parse_request_line(b"RPC_IN_DATA /rpc/rpcproxy.dll?mail.example.com:6001 HTTP/1.1\\r\\n")
    classify_request(req)   # HttpVerdict(service='information-store', detail='rpc-http:6001',
                            #             evidence='rpc-http')
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

from pcapclass.dcerpc import SERVICE_IDS
from pcapclass.errors import RulesError
from pcapclass.rules import RULES_DIR, read_toml
from pcapclass.servers import KINDS, RPC_OVER_HTTP

__all__ = [
    "DEFAULT_HTTP_PATHS_PATH",
    "HttpPathTable",
    "HttpRequest",
    "HttpVerdict",
    "PathRule",
    "QueryRule",
    "RpcHttpRule",
    "classify_request",
    "load_http_paths",
    "parse_request_line",
    "parse_rpc_proxy_target",
]

#: rules/http_paths.toml of a source checkout
DEFAULT_HTTP_PATHS_PATH = RULES_DIR / "http_paths.toml"

# RFC 9112 3 (request-line = method SP request-target SP HTTP-version) and RFC 9110 5.6.2
# (method = token; tchar). Lines longer than this are not looked at.
MAX_REQUEST_LINE = 8192
MAX_METHOD_LEN = 32
_METHOD_RE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VERSION_RE = re.compile(rb"^HTTP/[0-9]\.[0-9]$")
_TARGET_RE = re.compile(rb"^[\x21-\x7e]+$")

EVIDENCE_HTTP = "http"
EVIDENCE_RPC_HTTP = "rpc-http"
#: the detail of an RPC over HTTP request whose target port cannot be read
RPC_HTTP_UNKNOWN_PORT = "rpc-http:unknown-port"


class HttpRequest(NamedTuple):
    """A request line: method, request-target and version, as sent."""

    method: str
    target: str
    version: str

    @property
    def path(self) -> str:
        """The target's path: scheme and authority of an absolute-form target removed, no query."""
        target = self.target
        if "://" in target[:16]:
            rest = target.split("://", 1)[1]
            slash = rest.find("/")
            target = rest[slash:] if slash >= 0 else "/"
        return target.split("?", 1)[0].split("#", 1)[0]

    @property
    def query(self) -> str:
        """The target's query string without '?', or ''."""
        return self.target.split("?", 1)[1].split("#", 1)[0] if "?" in self.target else ""


class HttpVerdict(NamedTuple):
    """What a request line says about a flow: service id ("" for the port's), sub-label, evidence kind."""

    service: str
    detail: str
    evidence: str  # 'http' or 'rpc-http'
    #: the kind of Exchange server evidence the request is (servers.KINDS), "" for none
    proof: str = ""


@dataclass(frozen=True, slots=True)
class QueryRule:
    """A query parameter value that refines a path's detail (ActiveSync ``Cmd=Ping``)."""

    param: str  # lower-case
    value: str  # lower-case
    detail: str


@dataclass(frozen=True, slots=True)
class PathRule:
    """A ``[[path]]`` row: a path prefix and the service/detail it names."""

    prefix: str  # lower-case, no trailing '/'
    service: str
    detail: str
    queries: tuple[QueryRule, ...] = ()
    note: str = ""
    proves: str = ""


@dataclass(frozen=True, slots=True)
class RpcHttpRule:
    """The ``[rpc_http]`` table: the proxy's file name, its methods and the port → service map."""

    proxy: str  # lower-case file name, the last segment of the path under any virtual directory
    methods: frozenset[str]
    ports: dict[int, str]
    default_service: str
    #: the ports only Exchange serves behind the proxy: a request naming one proves an Exchange server
    exchange_ports: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class HttpPathTable:
    """rules/http_paths.toml, validated; ``paths`` are sorted longest prefix first."""

    rpc_http: RpcHttpRule
    paths: tuple[PathRule, ...]


def parse_request_line(payload: bytes) -> HttpRequest | None:
    """The request line at the start of ``payload``, or None if it does not start with one.

    The line ends at LF (CRLF tolerated) or at the end of the payload; it must be three
    space-separated parts: a token method (any, up to 32 chars), a printable target and
    ``HTTP/d.d``.

    >>> parse_request_line(b"PROPFIND /exchange/jo/Inbox/ HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    HttpRequest(method='PROPFIND', target='/exchange/jo/Inbox/', version='HTTP/1.1')
    """
    head = payload[:MAX_REQUEST_LINE]
    nl = head.find(b"\n")
    if nl >= 0:
        line = head[:nl]
    elif len(payload) <= MAX_REQUEST_LINE:
        line = head
    else:
        return None
    if line.endswith(b"\r"):
        line = line[:-1]
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if (
        len(method) > MAX_METHOD_LEN
        or not _METHOD_RE.match(method)
        or not _TARGET_RE.match(target)
        or not _VERSION_RE.match(version)
    ):
        return None
    return HttpRequest(method.decode("ascii"), target.decode("ascii"), version.decode("ascii"))


def parse_rpc_proxy_target(req: HttpRequest) -> tuple[str, int] | None:
    """The ``(server, port)`` an RPC over HTTP request asks the proxy for (``?server:port``)."""
    query = unquote_plus(req.query)
    host, sep, port = query.partition("&")[0].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def _segment_prefix(path: str, prefix: str) -> bool:
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] in "/;")


def classify_request(req: HttpRequest, *, table: HttpPathTable | None = None) -> HttpVerdict | None:
    """The Exchange service a request line names, or None when its path is not an Exchange one.

    RPC_IN_DATA / RPC_OUT_DATA to the proxy path give evidence ``rpc-http``, the service of the
    ``?server:port`` port and detail ``rpc-http:<port>``; the path table gives evidence ``http``
    (longest whole-segment prefix, case-insensitive). ``table`` defaults to
    rules/http_paths.toml.

    >>> classify_request(parse_request_line(b"POST /Microsoft-Server-ActiveSync?User=jo&Cmd=Ping HTTP/1.1"))
    HttpVerdict(service='activesync', detail='direct-push', evidence='http', proof='exchange-http')
    >>> classify_request(parse_request_line(b"RPC_IN_DATA /rpcwithcert/rpcproxy.dll?ex1:6001 HTTP/1.1")).detail
    'rpc-http:6001'

    """
    if table is None:
        table = _default_table()
    path = req.path.lower()
    rpc = table.rpc_http
    if req.method.upper() in rpc.methods:
        # RPC over HTTP whatever the path; the proxy's file under any virtual directory (/rpc,
        # /rpcwithcert, a reverse proxy's own) takes ?server:port, which names the service
        at_proxy = path.rsplit("/", 1)[-1] == rpc.proxy
        target = parse_rpc_proxy_target(req) if at_proxy else None
        if target is None:  # the service behind the proxy is unknown: the port's stands
            return HttpVerdict("", RPC_HTTP_UNKNOWN_PORT, EVIDENCE_RPC_HTTP)
        port = target[1]
        proof = RPC_OVER_HTTP if port in rpc.exchange_ports else ""
        return HttpVerdict(rpc.ports.get(port, rpc.default_service), f"rpc-http:{port}", EVIDENCE_RPC_HTTP, proof)
    for rule in table.paths:
        if _segment_prefix(path, rule.prefix):
            detail = rule.detail
            if rule.queries:
                params = _query_params(req.query)
                for q in rule.queries:
                    if params.get(q.param) == q.value:
                        detail = q.detail
                        break
            return HttpVerdict(rule.service, detail, EVIDENCE_HTTP, rule.proves)
    return None


def _query_params(query: str) -> dict[str, str]:
    """Lower-cased ``name -> value`` of a query string (first occurrence wins)."""
    params: dict[str, str] = {}
    for item in query.split("&"):
        name, _, value = item.partition("=")
        params.setdefault(unquote_plus(name).lower(), unquote_plus(value).lower())
    return params


@functools.lru_cache(maxsize=1)
def _default_table() -> HttpPathTable:
    return load_http_paths(DEFAULT_HTTP_PATHS_PATH)


# --- Loading rules/http_paths.toml ------------------------------------------------------------

_PATH_KEYS = frozenset({"prefix", "service", "detail", "note", "query", "proves"})
_QUERY_KEYS = frozenset({"param", "value", "detail"})
_RPC_KEYS = frozenset({"proxy", "methods", "default_service", "ports", "exchange_ports"})


def _string(row: dict[str, Any], name: str, where: str, key: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RulesError(f"missing or empty string {name!r}", path=where, key=f"{key}.{name}")
    return value.strip()


def _no_unknown(row: dict[str, Any], allowed: frozenset[str], where: str, key: str) -> None:
    unknown = sorted(set(row) - allowed)
    if unknown:
        full = f"{key}.{unknown[0]}" if key else unknown[0]
        raise RulesError(f"unknown key {unknown[0]!r}", path=where, key=full)


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
    _no_unknown(doc, frozenset({"rpc_http", "path"}), where, "")

    rpc = doc.get("rpc_http")
    if not isinstance(rpc, dict):
        raise RulesError("missing [rpc_http] table", path=where, key="rpc_http")
    _no_unknown(rpc, _RPC_KEYS, where, "rpc_http")
    proxy = _string(rpc, "proxy", where, "rpc_http").lower()
    if "/" in proxy or " " in proxy:
        raise RulesError(f"proxy must be a file name, not {proxy!r}", path=where, key="rpc_http.proxy")
    methods = rpc.get("methods")
    if (
        not isinstance(methods, list)
        or not methods
        or not all(isinstance(m, str) and _METHOD_RE.match(m.encode("ascii", "replace")) for m in methods)
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
    rpc_rule = RpcHttpRule(proxy, frozenset(m.upper() for m in methods), ports, default_service, frozenset(exchange_ports))

    rows = doc.get("path", [])
    if not isinstance(rows, list):
        raise RulesError("expected [[path]] tables", path=where, key="path")
    rules: list[PathRule] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        key = f"path[{i}]"
        if not isinstance(row, dict):
            raise RulesError("expected a table", path=where, key=key)
        _no_unknown(row, _PATH_KEYS, where, key)
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
            _no_unknown(q, _QUERY_KEYS, where, qkey)
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
    rules.sort(key=lambda r: len(r.prefix), reverse=True)
    return HttpPathTable(rpc_rule, tuple(rules))
