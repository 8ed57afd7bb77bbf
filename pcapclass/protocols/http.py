"""HTTP request lines and the Exchange paths they name (OWA, ActiveSync, OMA, RPC over HTTP).

Pure functions over a flow's first client payload. Any method token is accepted (WebDAV's
PROPFIND/SEARCH/X-MS-ENUMATTS, RPC over HTTP's RPC_IN_DATA/RPC_OUT_DATA), because what Exchange
serves is told by the path, not the method. The path table is data (rules/http_paths.toml, which
``pcapclass.tables.http_paths`` loads into the records below).

Example::

    req = parse_request_line(b"RPC_IN_DATA /rpc/rpcproxy.dll?mail.example.com:6001 HTTP/1.1\\r\\n")
    classify_request(req, table=paths)  # HttpVerdict(service='information-store', detail='rpc-http:6001',
                                        #             evidence='rpc-http', proof='rpc-over-http')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import unquote_plus

from .proofs import RPC_OVER_HTTP

__all__ = [
    "HttpPathTable",
    "HttpRequest",
    "HttpVerdict",
    "PathRule",
    "QueryRule",
    "RpcHttpRule",
    "classify_request",
    "parse_request_line",
    "parse_rpc_proxy_target",
]

# RFC 9112 3 (request-line = method SP request-target SP HTTP-version) and RFC 9110 5.6.2
# (method = token; tchar). Lines longer than this are not looked at.
MAX_REQUEST_LINE = 8192
MAX_METHOD_LEN = 32
#: a method token (RFC 9110 5.6.2 tchar)
METHOD_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
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
    #: the kind of Exchange server evidence the request is (proofs.KINDS), "" for none
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
        or not METHOD_TOKEN.match(method)
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


def classify_request(req: HttpRequest, *, table: HttpPathTable) -> HttpVerdict | None:
    """The Exchange service a request line names, or None when its path is not an Exchange one.

    RPC_IN_DATA / RPC_OUT_DATA to the proxy path give evidence ``rpc-http``, the service of the
    ``?server:port`` port and detail ``rpc-http:<port>``; the path table gives evidence ``http``
    (longest whole-segment prefix, case-insensitive). ``table`` is rules/http_paths.toml as
    ``pcapclass.tables.http_paths`` loads it.

    >>> rpc = RpcHttpRule("rpcproxy.dll", frozenset({"RPC_IN_DATA"}), {6001: "information-store"}, "other", frozenset({6001}))
    >>> table = HttpPathTable(rpc, (PathRule("/microsoft-server-activesync", "activesync", "activesync",
    ...                                      (QueryRule("cmd", "ping", "direct-push"),), proves="exchange-http"),))
    >>> classify_request(parse_request_line(b"POST /Microsoft-Server-ActiveSync?User=jo&Cmd=Ping HTTP/1.1"), table=table)
    HttpVerdict(service='activesync', detail='direct-push', evidence='http', proof='exchange-http')
    >>> classify_request(parse_request_line(b"RPC_IN_DATA /rpcwithcert/rpcproxy.dll?ex1:6001 HTTP/1.1"), table=table).detail
    'rpc-http:6001'

    """
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
