"""Verdict sets: what distinct first payloads said, stored flat for spreading over packets.

A first payload is found again by its bytes and context (``PayloadMemo``); payloads that say
the same (the same verdicts, follow or not, preset binds) share a set, so that a batch's
verdicts are spread over its packets with a few numpy calls whatever the mix.
"""

from __future__ import annotations

import numpy as np

from ..payload_memo import PayloadMemo
from .anomalies import EvidenceAnomalies


class VerdictSets:
    """What distinct first payloads said.

    A first payload is found again by its bytes and context (``PayloadMemo``); payloads that
    say the same (the same rows, follow or not, preset binds) share a set. Every set is
    stored flat (its verdict ids one after the other), so that spreading a batch's verdicts over
    its packets is a few numpy calls whatever the mix, with no Python per payload or per
    verdict. Sets are kept for the run (a waiting flow names its preset by set number; they
    grow only with distinct verdicts, as the verdict table does); the payloads that lead to
    them are capped.
    """

    def __init__(self, counts: EvidenceAnomalies) -> None:
        self._counts = counts
        #: per set, the contexts a flow that follows from it starts with (None: parse its payload)
        self.presets: list[list[tuple[int, str]] | None] = []
        self._ids: dict[tuple[tuple[int, ...], bool, tuple[tuple[int, str], ...] | None, int], int] = {}
        self.payloads = PayloadMemo()
        self._vids: list[tuple[int, ...]] = []
        self._follow: list[bool] = []
        self._unparsed: list[int] = []
        #: the sets as arrays, extended by the sets added since (never rebuilt from the start)
        self._built = 0
        self.n, self.start = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.flat = np.zeros(0, np.int32)
        self.follow, self.preset = np.zeros(0, bool), np.zeros(0, bool)
        #: per set, the binds of its payload that did not parse (``Inspector.inspect``)
        self.unparsed = np.zeros(0, np.int64)

    def add(self, digest: int, context: int, payload: bytes, vids: list[int], follow: bool,
            preset: list[tuple[int, str]] | None, unparsed: int = 0) -> int:  # fmt: skip
        """The set of what ``payload`` says, which is remembered for it (in ``context``)."""
        sid = self.set_of(vids, follow, preset, unparsed)
        self._counts.payloads_forgotten += self.payloads.remember(digest, context, payload, sid)
        return sid

    def set_of(self, vids: list[int], follow: bool, preset: list[tuple[int, str]] | None, unparsed: int = 0) -> int:
        """The set of these verdicts (added if new); ``unparsed``: binds of the payload that did not parse."""
        key = (tuple(vids), follow, tuple(preset) if preset is not None else None, unparsed)
        sid = self._ids.get(key)
        if sid is None:
            sid = self._ids[key] = len(self._vids)
            self._vids.append(key[0])
            self._follow.append(follow)
            self._unparsed.append(unparsed)
            self.presets.append(preset)
        return sid

    def build(self) -> None:
        """Extend the set arrays by the sets added since the last call."""
        if self._built < len(self._vids):
            b, new = self._built, self._vids[self._built :]
            n = np.array([len(v) for v in new], dtype=np.int64)
            self.start = np.concatenate([self.start, self.flat.size + np.cumsum(n) - n])
            self.n = np.concatenate([self.n, n])
            self.flat = np.concatenate([self.flat, np.fromiter((v for vs in new for v in vs), dtype=np.int32, count=int(n.sum()))])
            self.follow = np.concatenate([self.follow, np.array(self._follow[b:], dtype=bool)])
            self.preset = np.concatenate([self.preset, np.array([p is not None for p in self.presets[b:]], dtype=bool)])
            self.unparsed = np.concatenate([self.unparsed, np.array(self._unparsed[b:], dtype=np.int64)])
            self._built = len(self._vids)
