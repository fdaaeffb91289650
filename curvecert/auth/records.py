"""Decision records: the same fields, by the same names, in every log that reports decisions.

The audit logger (`curvecert.audit`), `serve-auth`'s text log and its JSON log all describe
a decision with these fields, whatever the outcome (docs/serve-auth.md, "Decision records"):

- `outcome`: `allowed`, `denied` or `error`;
- `status`: the ZAP status code as a number: 200, 300, 400, 500 (RFC 27);
- `mechanism`: `NULL`, `PLAIN`, `CURVE`, `GSSAPI`, or `?` for a request that did not parse;
- `domain`, `address`: the ZAP domain and the peer's IP address, as the request gave them;
- `user_id`: who the client is. An admitted client's User-Id (by default its Z85 key or
  PLAIN user name); for a refusal, the identity it presented (the same values), else empty;
- `cert_name`: the `name` metadata of the client's certificate when the store knows it;
- `fingerprint`: `SHA256:...` of a CURVE client's key (what `store list` shows);
- `reason`: why, in words.

No field ever holds a password or a secret key. Values come from the wire, so every
renderer here goes through `curvecert.formats.sanitize`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from curvecert.auth.decision import Decision
from curvecert.certs import keys
from curvecert.errors import CurvecertError
from curvecert.formats import z85, zmtp
from curvecert.formats.sanitize import escape, field

__all__ = ["FIELDS", "decision_fields", "format_fields"]

#: Field order of every record (the JSON log adds `event` and `time` in front).
FIELDS = ("outcome", "status", "mechanism", "domain", "address", "user_id", "cert_name",
          "fingerprint", "reason")
_OUTCOME = {"200": "allowed", "400": "denied"}
_LABEL = {"allowed": "ALLOWED", "denied": "DENIED", "error": "ERROR"}
#: A log line's fields are cut at this many (escaped) characters: a 10 MB user name
#: must not make a 10 MB log line.
_FIELD_LIMIT = 512


@functools.lru_cache(maxsize=4096)
def _fingerprint(key_text: str) -> str | None:
    try:
        return keys.fingerprint(z85.decode(key_text))
    except CurvecertError:
        return None


@functools.lru_cache(maxsize=4096)
def _cert_name(blob: bytes) -> str | None:
    try:
        props = zmtp.decode(blob)
    except CurvecertError:
        return None
    for name, value in props:
        if name.lower() == "name":
            return value.decode("utf-8", "replace")
    return None


def decision_fields(decision: Decision) -> dict[str, Any]:
    """The record of one decision, in `FIELDS` order (values raw: render them safely)."""
    status = decision.status
    subject = decision.subject
    user_id = decision.user_id.decode("utf-8", "replace") if decision.user_id else subject
    fingerprint = None
    if decision.mechanism == "CURVE" and len(subject) == z85.KEY_TEXT_LEN:
        fingerprint = _fingerprint(subject)
    return {
        "outcome": _OUTCOME.get(status, "error"),
        "status": int(status) if status.isdigit() else status,
        "mechanism": decision.mechanism,
        "domain": decision.domain,
        "address": decision.address,
        "user_id": user_id,
        "cert_name": _cert_name(decision.metadata) if decision.metadata else None,
        "fingerprint": fingerprint,
        "reason": decision.reason,
    }


def format_fields(fields: Mapping[str, Any]) -> str:
    """One safe log line: `ALLOWED (CURVE) status=200 domain=... ... reason=known key`.

    Every field of `FIELDS` appears, in order (`""` for an unknown value); each value is a
    `sanitize.field`, so a peer's text can neither end the line nor forge a `key=value`.
    `reason` comes last and is escaped, not quoted.
    """
    label = _LABEL.get(str(fields.get("outcome")), "ERROR")
    parts = [f"{label} ({escape(str(fields.get('mechanism', '?')))})"]
    for name in FIELDS[1:-1]:
        if name == "mechanism":
            continue
        value = fields.get(name)
        parts.append(f"{name}={field('' if value is None else str(value), limit=_FIELD_LIMIT)}")
    parts.append(f"reason={escape(str(fields.get('reason', '')), limit=_FIELD_LIMIT)}")
    return " ".join(parts)
