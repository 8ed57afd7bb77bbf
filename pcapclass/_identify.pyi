from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

_In: TypeAlias = npt.NDArray[Any]

LABEL_NAMES: tuple[str | None, ...]
SHARED_NAMES: tuple[str | None, ...]
AS_SERVER_SHIFT: int
AS_CLIENT_SHIFT: int
SHARED_SHIFT: int
LABEL_MASK: int
SHARED_MASK: int
LONG: int
EXCHANGE_GREETING: int
SMTP_BANNER: int
EHLO_MARKERS: int
REQUEST_LINE: int
DCERPC_PLAIN: int
NOTIFY: int

class SignatureTables:
    def __init__(self, *, smtp_prefixes: Sequence[bytes], smtp_words: Sequence[bytes], ftp_words: Sequence[bytes],
                 smtp_commands: Sequence[bytes], pop3_prefixes: Sequence[bytes], pop3_shared: Sequence[bytes],
                 imap_prefixes: Sequence[bytes], nntp_prefixes: Sequence[bytes], nntp_words: Sequence[bytes],
                 http_status: Sequence[bytes], ssh: Sequence[bytes], resp_array: Sequence[bytes],
                 exchange_greeting: Sequence[bytes], smtp_banner: Sequence[bytes], ncacn_http: Sequence[bytes],
                 ehlo_keywords: Sequence[bytes], smb_ids: Sequence[bytes], rdp_cookies: Sequence[bytes],
                 cotp_codes: Collection[int], rdp_neg_types: Mapping[int, int], rdp_neg_failure: int, ldap_ops: Collection[int],
                 ldap_primitive_ops: Collection[int], rpc_minors: Collection[int], ptype_max: int, bind_ptypes: Collection[int],
                 notify: Sequence[bytes], greeting_line: int, min_decisive: int, max_request_line: int, max_method: int) -> None: ...
    def facts(self, data: _In, off: _In, plen: _In) -> npt.NDArray[np.int32]: ...
