"""One ZAP decision and its reply: `Decision`, the helpers that build one, and `encode`.

Statuses (RFC 27): 200 with a User-Id (CURVE: the client's Z85 key; PLAIN: the user name)
and, for a key found in a store, the certificate's metadata; 400 for every denial; 500
when the request is malformed or a lookup, password source or provider raises. Never 300:
libzmq answers it by closing silently and the client reconnects (and asks again) forever.
Pure: no I/O, no sockets.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple

from curvecert.errors import ZapError
from curvecert.formats import z85, zap, zmtp

__all__ = [
    "Decision",
    "allow",
    "check_metadata",
    "check_user_id",
    "deny",
    "encode",
    "error",
    "key_text",
    "malformed",
    "subject_of",
]


class Decision(NamedTuple):
    """The outcome for one request: what to reply, and a loggable `reason`.

    `subject` names who asked (PLAIN user name, CURVE Z85 key, GSSAPI principal) and is
    safe to log; no field ever holds a password or a secret key. `send_user_id` False
    (a domain with `DomainPolicy.user_id=False`) keeps `user_id` for logs and hooks but
    sends an empty User-Id frame. (An immutable named
    tuple: one is built per handshake, and it is four times cheaper than a frozen
    dataclass.)
    """

    status: str
    text: str
    user_id: bytes = b""
    metadata: bytes = b""
    reason: str = ""
    mechanism: str = "?"
    domain: str = ""
    address: str = ""
    subject: str = ""
    send_user_id: bool = True

    @property
    def allowed(self) -> bool:
        """True for a 200."""
        return self.status == "200"

    def reply(self, request_id: bytes) -> list[bytes]:
        """The RFC 27 reply frames for this decision."""
        return zap.encode_reply(request_id, self.status, self.text,
                                self.user_id if self.send_user_id else b"", self.metadata)


def deny(request: zap.ZapRequest, reason: str, subject: str = "") -> Decision:
    """A 400 for `request`; the status text is `reason` capitalised (at most 255 octets)."""
    text = (reason[:1].upper() + reason[1:])[:zap.MAX_TEXT]
    return Decision("400", text, b"", b"", reason,
                    request.mechanism, request.domain, request.address, subject)


def error(request: zap.ZapRequest, reason: str, subject: str = "") -> Decision:
    """A 500 for `request`; the status text stays "Internal error", `reason` is for logs."""
    return Decision("500", "Internal error", b"", b"", reason, request.mechanism,
                    request.domain, request.address, subject)


def allow(request: zap.ZapRequest, user_id: bytes, metadata: bytes, reason: str,
          subject: str, *, send_user_id: bool = True) -> Decision:
    """A 200 for `request` with `user_id` and ZMTP `metadata` (both already checked)."""
    return Decision("200", "OK", user_id, metadata, reason, request.mechanism,
                    request.domain, request.address, subject, send_user_id)


# Z85 of client keys: the same clients reconnect, so a bounded cache saves ~3 us a time.
key_text = functools.lru_cache(maxsize=4096)(z85.encode)
# Metadata blobs already checked to parse (a store returns the same blobs again and again).
_META_OK: dict[bytes, None] = {}
_META_CACHE = 4096


def subject_of(request: zap.ZapRequest) -> str:
    """Who asked, safe to log: the CURVE Z85 key, the PLAIN user name or the GSSAPI
    principal (undecodable bytes replaced); empty for NULL and other mechanisms."""
    mech = request.mechanism
    if mech == "CURVE":
        return key_text(request.credentials[0])
    if mech == "PLAIN":
        return request.credentials[0].decode("utf-8", "replace")
    if mech == "GSSAPI":
        return request.credentials[0].decode("utf-8", "replace")[:zap.MAX_TEXT]
    return ""


def check_metadata(blob: object) -> bytes:
    """`blob` if it is a valid ZMTP metadata blob of sane size, else raise `ZapError`."""
    if type(blob) is bytes and (not blob or blob in _META_OK):
        return blob  # the common case: empty, or a blob seen before
    if isinstance(blob, Mapping):
        return zmtp.encode(blob)
    if not isinstance(blob, (bytes, bytearray)):
        raise ZapError("metadata must be bytes")
    blob = bytes(blob)
    if not blob or blob in _META_OK:
        return blob
    if len(blob) > zmtp.MAX_METADATA:
        raise ZapError(f"metadata is {len(blob)} bytes (at most {zmtp.MAX_METADATA})")
    zmtp.decode(blob)  # libzmq fails the handshake on metadata that does not parse
    if len(_META_OK) >= _META_CACHE:
        _META_OK.clear()
    _META_OK[blob] = None
    return blob


def check_user_id(value: str | bytes) -> bytes:
    """`value` as User-Id octets; `ZapError` past 255 octets (RFC 27 field size)."""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > zap.MAX_TEXT:
        raise ZapError(f"user id is {len(raw)} bytes (at most {zap.MAX_TEXT})")
    return raw


_STATUS = {"200": b"200", "400": b"400", "500": b"500"}  # never 300 (module docstring)
_TEXT = {"OK": b"OK", "Internal error": b"Internal error"}


def malformed(frames: list[bytes], exc: Exception) -> Decision:
    """The 500 for frames that do not parse as an RFC 27 request."""
    return Decision("500", "Malformed request", b"", b"", f"malformed request: {exc}",
                    zap.mechanism_hint(frames), "", "", "")


def encode(request: zap.ZapRequest | None, decision: Decision, frames: list[bytes]
           ) -> tuple[Decision, list[bytes]]:
    """The reply frames for `decision` (and the decision actually sent); never raises.

    `frames` is the request as received: a malformed one (`request` None) is answered with
    `curvecert.formats.zap.fallback_reply`, echoing its request id when usable. A decision whose
    reply cannot be encoded (an over-long user id from a hook) becomes a 500.
    """
    if request is None:
        return decision, zap.fallback_reply(frames, "500", decision.text)
    status = _STATUS.get(decision.status)
    user_id = decision.user_id if decision.send_user_id else b""
    if status is not None and len(user_id) <= zap.MAX_TEXT and type(user_id) is bytes:
        # Decisions built here already satisfy RFC 27's rules (texts and user ids are
        # bounded where they are made); skip `encode_reply`'s re-checks on the hot path.
        text = _TEXT.get(decision.text)
        if text is None:
            text = decision.text.encode("utf-8")[:zap.MAX_TEXT]
        return decision, [zap.VERSION, request.request_id, status, text, user_id,
                          decision.metadata]
    try:
        return decision, decision.reply(request.request_id)
    except Exception as exc:
        decision = error(request, f"cannot encode reply: {exc}", decision.subject)
        return decision, zap.fallback_reply(frames, "500", decision.text)
