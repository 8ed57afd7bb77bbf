"""The payload stage: what the first bytes of each flow say about its Exchange service.

Decoded batches in (with their flow keys), ``Evidence`` out: small tables keyed by the flow key
(``hash``, ``check``) and a timestamp, so that ``classify`` attaches each piece to the right
flow at the end, whichever read chunk and whichever order the pieces came in. The parts, each
owning its state:

* ``collector``: the per-batch driver (which payloads go to which part, in which order);
* ``first_payloads``: first payloads and their verdicts (``inspection`` for the few looked at
  in Python, ``verdict_sets`` for what distinct payloads said);
* ``following``: followed DCE/RPC flows (``binds`` names their contexts);
* ``epm``: the endpoint-mapper table; ``registrations``: push-notification registrations;
* ``rows``: the evidence rows, handed over with their flows; ``verdicts``: the distinct verdicts
  they point into; ``learned``: the ``Evidence`` tables;
* ``anomalies``: what the parts dropped or could not do, counted where it happens and taken per
  capture into its ``capture.csv`` row.

Learned tables are bounded: followed flows expire after the idle timeout and are capped,
endpoint-mapper entries are merged per (server, transport, port, interface), registrations and
remembered payloads are capped. What a bound lets go, and what does not parse, is counted
(``EvidenceAnomalies``), not dropped silently.
"""

from .anomalies import EvidenceAnomalies
from .collector import EvidenceCollector
from .learned import DEFAULT_EPM_EXPIRY, Evidence
from .verdicts import (
    CERT_SUBJECT,
    DCERPC,
    DECISIVE,
    EVIDENCE_VALUES,
    INTERFACE_ONLY,
    MISMATCH,
    NOTIFICATION,
    ONE_CALL,
    RANK,
    SERVER_NAME,
    SIGNATURE_SERVICES,
    TIMED_NOTIFICATION,
)

__all__ = ["CERT_SUBJECT", "DCERPC", "DECISIVE", "DEFAULT_EPM_EXPIRY", "EVIDENCE_VALUES", "INTERFACE_ONLY", "MISMATCH", "NOTIFICATION",
           "ONE_CALL", "RANK", "SERVER_NAME", "SIGNATURE_SERVICES", "TIMED_NOTIFICATION", "Evidence", "EvidenceAnomalies",
           "EvidenceCollector"]  # fmt: skip
