"""The ZAP (ZeroMQ RFC 27) codec: request frames in, reply frames out, no sockets.

Everything a ZAP handler reads comes from libzmq or from code running in the same process,
but a handler must still never crash or wedge on it: CZMQ's zauth `assert`s on a bad version
or a short CURVE key, and pyzmq's handler leaves its REP socket stuck in "must send" when a
request has fewer than two frames. So this module:

- parses a request into a validated, immutable `ZapRequest`, or raises `ZapError` whose
  message names the problem but never quotes a credential (a PLAIN password must not reach
  a log through an error message);
- encodes replies with every RFC 27 length rule checked (`encode_reply`);
- builds the fallback reply for a request that cannot be parsed (`fallback_reply`): it is
  ALWAYS a well-formed six-frame reply, with the request id echoed when there is a usable
  one and `b""` otherwise, so a REP socket always leaves its must-send state;
- splits a ROUTER envelope (`split_envelope`), the only place where a message is dropped:
  without an envelope there is nobody to route a reply to.

Limits (`MAX_*` below) follow the RFC and ZMTP: text fields and the identity are at most
255 octets, PLAIN user names and passwords at most 255 (ZMTP PLAIN uses one length octet),
a CURVE key exactly 32 octets.
"""

from __future__ import annotations

import logging
import re
from typing import NamedTuple

from curvecert.errors import ZapError

__all__ = [
    "MAX_CREDENTIAL",
    "MAX_CREDENTIAL_FRAMES",
    "MAX_TEXT",
    "REPLY_FRAMES",
    "STATUS_CODES",
    "VERSION",
    "ZAP_ENDPOINT",
    "ZapRequest",
    "encode_reply",
    "fallback_reply",
    "mechanism_hint",
    "parse_request",
    "split_envelope",
]

_logger = logging.getLogger(__name__)

#: RFC 27: the handler binds here, in the server sockets' own context.
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: RFC 27: the only protocol version.
VERSION = b"1.0"
#: RFC 27: "All string fields: ASCII, at most 255 characters"; identity is at most 255 octets.
MAX_TEXT = 255
#: Largest credential frame accepted for mechanisms other than PLAIN and CURVE (GSSAPI
#: principals, future mechanisms). Bigger frames are refused as malformed.
MAX_CREDENTIAL = 4096
#: Most credential frames accepted for any mechanism.
MAX_CREDENTIAL_FRAMES = 8
#: A reply always has six frames (a REP socket adds the envelope itself).
REPLY_FRAMES = 6
#: RFC 27: 200 success, 300 temporary error, 400 authentication failure, 500 internal error.
STATUS_CODES = frozenset({"200", "300", "400", "500"})

_KEY_LEN = 32  # RFC 26: a CURVE long-term public key is 32 octets
# ZMTP 3.x: the mechanism is at most 20 octets of upper-case letters, digits, "-_.+".
_MECHANISM = re.compile(rb"[A-Z0-9\-_.+]{1,20}\Z")
# credential frame count per known mechanism (RFC 27 and libzmq's GSSAPI principal)
_CREDENTIAL_COUNT = {"NULL": 0, "PLAIN": 2, "CURVE": 1, "GSSAPI": 1}
_STATUS_BYTES = {code: code.encode("ascii") for code in STATUS_CODES}
_KNOWN = {name.encode("ascii"): name for name in _CREDENTIAL_COUNT}


class ZapRequest(NamedTuple):
    """One validated ZAP request (RFC 27 §"Request"); credentials are raw bytes.

    `domain` and `address` are text (UTF-8, at most 255 octets); `identity` is the server
    socket's own routing id as libzmq sends it; `credentials` are the mechanism's frames:
    none for NULL, `(username, password)` for PLAIN, `(public_key_32,)` for CURVE.
    The repr never shows credentials. (An immutable named tuple: as safe as a frozen
    dataclass and four times cheaper to build, which matters once per handshake.)
    """

    version: bytes
    request_id: bytes
    domain: str
    address: str
    identity: bytes
    mechanism: str
    credentials: tuple[bytes, ...]

    def __repr__(self) -> str:
        return (f"ZapRequest(request_id={self.request_id!r}, domain={self.domain!r}, "
                f"address={self.address!r}, mechanism={self.mechanism!r}, "
                f"credentials=<{len(self.credentials)} frames>)")


def _as_bytes(frames: list[bytes]) -> list[bytes]:
    """Frames as `bytes`: bytes-like frames (bytearray, memoryview, zmq.Frame) parse alike."""
    try:
        return [bytes(memoryview(f)) for f in frames]  # never bytes(int): zero-filled
    except (TypeError, ValueError):
        raise ZapError("ZAP frames must be bytes") from None


def _text(frame: bytes, what: str) -> str:
    if len(frame) > MAX_TEXT:
        raise ZapError(f"{what} frame is {len(frame)} octets (at most {MAX_TEXT})")
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError:
        raise ZapError(f"{what} frame is not UTF-8 text") from None


def parse_request(frames: list[bytes]) -> ZapRequest:
    """Validate the frames of one request (no envelope) and return a `ZapRequest`.

    Raises `ZapError` for anything malformed: fewer than six frames, a version other than
    `1.0`, an oversized or non-UTF-8 text frame, a bad mechanism name, the wrong number of
    credential frames for the mechanism, a CURVE key that is not 32 octets, an over-long
    PLAIN user name or password. Error messages give sizes and names, never content.
    """
    if list(map(type, frames)).count(bytes) != len(frames):  # bytearray, memoryview, Frame
        frames = _as_bytes(frames)
    n = len(frames)
    if n < 6:
        raise ZapError(f"a ZAP request has at least 6 frames, got {n}")
    version, request_id, domain, address, identity, mechanism = frames[:6]
    if version != VERSION:
        raise ZapError("unsupported ZAP version (expected 1.0)")
    if len(request_id) > MAX_TEXT:
        raise ZapError(f"request id is {len(request_id)} octets (at most {MAX_TEXT})")
    if len(identity) > MAX_TEXT:
        raise ZapError(f"identity frame is {len(identity)} octets (at most {MAX_TEXT})")
    mech = _KNOWN.get(mechanism)
    if mech is None:
        if not _MECHANISM.match(mechanism):
            raise ZapError("mechanism frame is not a ZMTP mechanism name")
        mech = mechanism.decode("ascii")
    credentials = tuple(frames[6:])
    want = _CREDENTIAL_COUNT.get(mech)
    if want is not None and len(credentials) != want:
        raise ZapError(f"{mech} needs {want} credential frame(s), got {len(credentials)}")
    if len(credentials) > MAX_CREDENTIAL_FRAMES:
        raise ZapError(f"{len(credentials)} credential frames (at most {MAX_CREDENTIAL_FRAMES})")
    if mech == "CURVE":
        if len(credentials[0]) != _KEY_LEN:
            raise ZapError(f"CURVE key frame is {len(credentials[0])} octets, not 32")
    elif mech == "PLAIN":
        for what, frame in zip(("user name", "password"), credentials, strict=True):
            if len(frame) > MAX_TEXT:
                raise ZapError(f"PLAIN {what} is {len(frame)} octets (at most {MAX_TEXT})")
    else:
        for frame in credentials:
            if len(frame) > MAX_CREDENTIAL:
                raise ZapError(f"{mech} credential frame is {len(frame)} octets "
                               f"(at most {MAX_CREDENTIAL})")
    return ZapRequest(version, request_id, _text(domain, "domain"),
                      _text(address, "address"), identity, mech, credentials)


def _bytes_field(value: str | bytes, what: str) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > MAX_TEXT:
        raise ZapError(f"{what} is {len(raw)} octets (at most {MAX_TEXT})")
    return raw


def encode_reply(request_id: bytes, status: str | bytes | int, text: str | bytes,
                 user_id: str | bytes = b"", metadata: bytes = b"") -> list[bytes]:
    """The six reply frames `[1.0, request_id, status, text, user_id, metadata]`.

    Checks RFC 27's rules: status is one of 200/300/400/500; the request id, status text
    and user id are at most 255 octets; the user id and metadata are empty unless the
    status is 200. The metadata blob itself is not re-validated here (see `curvecert.formats.zmtp`).
    Raises `ZapError` when a rule is broken.
    """
    code = str(status) if isinstance(status, int) else (
        status.decode("ascii", "replace") if isinstance(status, bytes) else status)
    status_bytes = _STATUS_BYTES.get(code)
    if status_bytes is None:
        raise ZapError(f"ZAP status must be one of 200, 300, 400, 500, not {code!r}")
    if len(request_id) > MAX_TEXT:
        raise ZapError(f"request id is {len(request_id)} octets (at most {MAX_TEXT})")
    text_bytes = _bytes_field(text, "status text")
    uid = _bytes_field(user_id, "user id")
    meta = bytes(metadata)
    if code != "200" and (uid or meta):
        raise ZapError("user id and metadata must be empty unless the status is 200")
    return [VERSION, bytes(request_id), status_bytes, text_bytes, uid, meta]


def fallback_reply(frames: list[bytes], status: str = "500",
                   text: str = "Malformed request") -> list[bytes]:
    """A well-formed reply to frames that could not be handled; never raises.

    The request id (frame 2) is echoed when it exists and is at most 255 octets, otherwise
    the reply carries `b""`. libzmq always sends request id `1`, so only a broken in-process
    client ever sees the empty id; what matters is that a REP handler always answers and
    never gets stuck in its must-send state. `status` must be 400 or 500 (text shortened
    to 255 octets); anything else becomes 500.
    """
    request_id = b""
    if len(frames) >= 2:
        candidate = frames[1]
        if isinstance(candidate, (bytes, bytearray, memoryview)) and len(candidate) <= MAX_TEXT:
            request_id = bytes(candidate)
    code = status if status in ("400", "500") else "500"
    raw_text = text.encode("ascii", "replace")[:MAX_TEXT]
    return [VERSION, request_id, _STATUS_BYTES[code], raw_text, b"", b""]


def mechanism_hint(frames: list[bytes]) -> str:
    """The mechanism named by frame 6 when it looks like one, else `"?"` (for logs only)."""
    if len(frames) >= 6:
        mech = frames[5]
        if isinstance(mech, (bytes, bytearray)) and _MECHANISM.match(bytes(mech)):
            return bytes(mech).decode("ascii")
    return "?"


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]] | None:
    """Split a message read from a ROUTER into `(envelope, body)`; None means "drop it".

    The envelope is every frame up to and including the first empty delimiter frame (one
    routing id per hop, RFC 27 "proxy handlers"); it must be sent back unchanged, followed
    by the reply. A message with no delimiter, or with nothing before it, cannot be routed
    back to a REQ-style ZAP client and is dropped (libzmq's ZAP client always sends the
    delimiter). The body may still be malformed: answer it with `fallback_reply`.
    """
    for i, frame in enumerate(frames):
        if not frame:
            if i == 0:
                return None
            return list(frames[:i + 1]), list(frames[i + 1:])
    return None
