"""The kinds of Exchange server evidence a payload can be (the ``proof`` of a verdict).

A host is an Exchange server when its traffic shows it doing what only Exchange does (a bind
to the store, an EHLO with Exchange's keywords, an OWA request ...). The parsers name the kind
a payload proves; rules/server_evidence.toml weighs each kind (``pcapclass.tables.server_evidence``).
"""

from __future__ import annotations

RPC_INTERFACE = "rpc-interface"
EPM_ANSWER = "epm-answer"
RPC_OVER_HTTP = "rpc-over-http"
EXCHANGE_SMTP = "exchange-smtp"
EXCHANGE_GREETING = "exchange-greeting"
EXCHANGE_HTTP = "exchange-http"
PUBLIC_FOLDERS_HTTP = "public-folders-http"
MICROSOFT_SMTP_GREETING = "microsoft-smtp-greeting"
#: every kind (each needs a weight in rules/server_evidence.toml)
KINDS = frozenset({RPC_INTERFACE, EPM_ANSWER, RPC_OVER_HTTP, EXCHANGE_SMTP, EXCHANGE_GREETING, EXCHANGE_HTTP,
                   PUBLIC_FOLDERS_HTTP, MICROSOFT_SMTP_GREETING})  # fmt: skip
