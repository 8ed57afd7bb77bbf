"""Names in first payloads: the server a client asked for (TLS SNI, else the HTTP ``Host``) and
the subject of the certificate a TLS 1.0–1.2 server showed, as evidence rows of their own kinds
(``SERVER_NAME``, ``CERT_SUBJECT``) that decide nothing else.

Compiled kernels find each name's bytes in a batch's first payloads and digest them, and find
the names met before (``NameMemo``, at most ``MAX_REMEMBERED`` per kind; past that the memory
starts afresh); only a name not found there is made into text, once per distinct digest of
its batch, so Python runs per new name, never per flow. Names whose digests agree are compared
byte for byte: a digest alone can collide (a name that shares a remembered name's digest, or
that differs from it in case only, is made into text again, which costs little as it is rare).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from .._certificate import certificate_subjects
from .._firstlook import same_payloads
from .._name_memo import NameMemo
from .._server_names import same_names, server_names
from ..certificate import subject_text
from ..decode import Packets
from ..flows import FlowKeys
from .rows import RowLog
from .verdicts import CERT_SUBJECT, SERVER_NAME, Verdict, VerdictTable

_Array = npt.NDArray[np.int64]
#: a kernel that finds names: (data, off, plen) -> (start, length, digest)
_Finder = Callable[[npt.NDArray[np.uint8], _Array, _Array], tuple[_Array, _Array, npt.NDArray[np.uint64]]]
#: a kernel that compares names: (data, start, length, other_start, other_length) -> same
_Comparer = Callable[[npt.NDArray[np.uint8], _Array, _Array, _Array, _Array], npt.NDArray[np.bool_]]


#: names remembered by their bytes (a site has a few thousand servers; a sweep more, and pays
#: for its text again)
MAX_REMEMBERED = 1 << 16


def _server_name_text(raw: bytes) -> str:
    return raw.decode("ascii").lower()


def _same_bytes(data: npt.NDArray[np.uint8], start: _Array, length: _Array, other_start: _Array, other_length: _Array) -> npt.NDArray[np.bool_]:
    """Whether each name's bytes are the other's, byte for byte (both in ``data``)."""
    return same_payloads(data, start, length, data, other_start, other_length)


class Names:
    """Rows naming the server of first payloads: ``server_names`` for client hellos and HTTP
    requests, ``certificate_subjects`` for server hellos."""

    def __init__(self, verdicts: VerdictTable, rows: RowLog) -> None:
        self._verdicts, self._rows = verdicts, rows
        #: per kind, the verdict id of each name met (-2: bytes that make no name), by its bytes
        self._memos = {SERVER_NAME: NameMemo(), CERT_SUBJECT: NameMemo()}

    def server_names(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, sel: npt.NDArray[np.intp],
                     off: _Array, plen: _Array) -> None:  # fmt: skip
        """A ``server-name`` row per payload ``sel`` (TLS client hellos, HTTP requests) that names one."""
        self._rows_of(server_names, same_names, SERVER_NAME, _server_name_text, data, pk, keys, sel, off, plen)

    def cert_subjects(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, sel: npt.NDArray[np.intp],
                      off: _Array, plen: _Array) -> None:  # fmt: skip
        """A ``cert-subject`` row per payload ``sel`` (TLS server hellos) whose certificate's subject it holds whole."""
        self._rows_of(certificate_subjects, _same_bytes, CERT_SUBJECT, subject_text, data, pk, keys, sel, off, plen)

    def _rows_of(self, find: _Finder, same: _Comparer, kind: str, text: Callable[[bytes], str | None],
                 data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, sel: npt.NDArray[np.intp],
                 off: _Array, plen: _Array) -> None:  # fmt: skip
        start, length, digest = find(data, off, plen)
        has = np.flatnonzero(length > 0)
        if not has.size:
            return
        start, length, digest = start[has], length[has], digest[has]
        # -1: not yet known; -2: bytes that make no name (a malformed subject)
        memo = self._memos[kind]
        vid = memo.find(data, start, length, digest)
        new = np.flatnonzero(vid == -1)
        while new.size:
            # one string per digest; the names with its bytes share its row, the others (a
            # digest collision) go round again
            _, first_of, which = np.unique(digest[new], return_index=True, return_inverse=True)
            looked = new[first_of]
            for i, s, n, d in zip(looked.tolist(), start[looked].tolist(), length[looked].tolist(), digest[looked].tolist()):
                raw = data[s : s + n].tobytes()
                name = text(raw)
                vid[i] = -2 if name is None else self._verdicts.vid(Verdict(kind, "", name))
                if len(memo) >= MAX_REMEMBERED:
                    memo.clear()
                memo.add(d, raw, int(vid[i]))
            rep = looked[which.reshape(-1)]
            alike = same(data, start[new], length[new], start[rep], length[rep])
            vid[new[alike]] = vid[rep[alike]]
            new = new[vid[new] == -1]
        named = vid >= 0
        self._rows.add_rows(keys, pk, sel[has[named]], vid[named])
