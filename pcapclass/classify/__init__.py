"""The decision on finished flows: orientation, the Exchange servers, the evidence decision and
the flows frame (``frame.classify``), one part per module."""

from .blocks import BlockFacts, Shared, block_facts
from .frame import DIRECTION_NAMES, FLAG_TEXT, TRANSPORT_NAMES, classify, empty_flows
from .inference import Servers, epm_evidence, infer_servers, rpc_sessions_among
from .rpc_ports import Answers
from .verdicts import VerdictArrays, flow_rows

__all__ = ["DIRECTION_NAMES", "FLAG_TEXT", "TRANSPORT_NAMES", "Answers", "BlockFacts", "Servers", "Shared", "VerdictArrays", "block_facts", "classify",
           "empty_flows", "epm_evidence", "flow_rows", "infer_servers", "rpc_sessions_among"]  # fmt: skip
