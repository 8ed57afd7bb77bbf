"""What the payload stage dropped or could not do, counted where it happens (``EvidenceAnomalies``).

Zeek's weird log is the model: a payload that does not parse, a followed flow let go early, an
entry pushed out of a capped table are counted, not dropped silently. The collector hands one
instance to each part, which adds to it per event (or a batch at a time, with numpy); the
session takes the counts per capture (``EvidenceCollector.take_anomalies``) into its
``capture.csv`` row, a column each (``schema.CAPTURE``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass
class EvidenceAnomalies:
    """Counters of the payload stage, each a ``capture.csv`` column of the same name."""

    #: DCE/RPC PDUs looked at whose content did not parse: a bind or alter_context whose
    #: context list is cut short, a request or response whose stub bounds do not fit, a PDU
    #: after which a first payload stops looking like DCE/RPC
    dcerpc_pdus_unparsed: int = 0
    #: endpoint-mapper replies to an ept_map or ept_lookup request whose stub did not parse to its end
    epm_replies_unparsed: int = 0
    #: EcRRegisterPushNotification requests whose stub did not parse
    registrations_unparsed: int = 0
    #: DCE/RPC streams of followed flows whose reassembly was given up (not a PDU header where
    #: one was due, or too many bytes waiting)
    rpc_reassembly_abandoned: int = 0
    #: followed flows let go by the cap on followed flows before they were done
    followed_flows_evicted: int = 0
    #: followed flows let go after the idle timeout passed without a packet of theirs
    followed_flows_expired: int = 0
    #: endpoint-mapper entries pushed out by the table's cap
    epm_entries_evicted: int = 0
    #: push-notification registrations pushed out by their cap
    registrations_evicted: int = 0
    #: remembered first payloads forgotten when their cap was reached (only looked at again)
    payloads_forgotten: int = 0
    #: parsed binds forgotten when their cache was full (only parsed again)
    binds_forgotten: int = 0
    #: short UDP datagrams that stopped waiting for a DCE/RPC request when too many waited
    datagrams_dropped: int = 0


def take(counts: EvidenceAnomalies) -> EvidenceAnomalies:
    """A copy of ``counts``, which start again from zero (the parts keep adding to that instance).

    >>> c = EvidenceAnomalies(payloads_forgotten=3)
    >>> take(c).payloads_forgotten, c.payloads_forgotten
    (3, 0)
    """
    got = replace(counts)
    for f in fields(counts):
        setattr(counts, f.name, 0)
    return got
