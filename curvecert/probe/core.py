"""Where `curvecert.probe` lived before issue 14's split; kept for one release.

The code now lives in `curvecert.probe.wire` (endpoints, greetings, monitor events),
`curvecert.probe.advice` (verdicts and their texts) and `curvecert.probe.client` (the
connection and `probe`). Import from those; this module only re-exports their names.
"""

from __future__ import annotations

from curvecert.probe.advice import ProbeVerdict, classify
from curvecert.probe.client import ProbeResult, peek_greeting, probe
from curvecert.probe.wire import (
    SERVER_TYPES,
    Endpoint,
    Greeting,
    Observation,
    ProbeEvent,
    describe_event,
    observe,
    parse_endpoint,
    parse_greeting,
)

__all__ = [
    "SERVER_TYPES",
    "Endpoint",
    "Greeting",
    "Observation",
    "ProbeEvent",
    "ProbeResult",
    "ProbeVerdict",
    "classify",
    "describe_event",
    "observe",
    "parse_endpoint",
    "parse_greeting",
    "peek_greeting",
    "probe",
]
