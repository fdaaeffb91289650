"""RFC 27 codec: request parsing, reply encoding, fallback replies, ROUTER envelopes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvecert.auth.keylookup import StaticKeys
from curvecert.auth.policy import DomainPolicy, Policy, answer, respond
from curvecert.auth.pwtable import StaticPasswords
from curvecert.errors import ZapError
from curvecert.formats import zap

KEY = bytes(range(32))
CURVE = [b"1.0", b"1", b"", b"127.0.0.1", b"", b"CURVE", KEY]
PLAIN = [b"1.0", b"1", b"d", b"127.0.0.1", b"", b"PLAIN", b"admin", b"secret"]
NULL = [b"1.0", b"0001", b"global", b"::1", b"BOB", b"NULL"]


def test_parse_verified_curve_request() -> None:
    req = zap.parse_request(CURVE)
    assert (req.version, req.request_id, req.domain, req.address, req.identity) == \
        (b"1.0", b"1", "", "127.0.0.1", b"")
    assert req.mechanism == "CURVE" and req.credentials == (KEY,)


def test_parse_plain_and_null() -> None:
    req = zap.parse_request(PLAIN)
    assert req.domain == "d" and req.credentials == (b"admin", b"secret")
    req = zap.parse_request(NULL)
    assert req.identity == b"BOB" and req.credentials == () and req.request_id == b"0001"


def test_repr_hides_credentials() -> None:
    assert "secret" not in repr(zap.parse_request(PLAIN))


@pytest.mark.parametrize("frames, message", [
    ([], "at least 6"),
    (CURVE[:5], "at least 6"),
    ([b"1.1", *CURVE[1:]], "version"),
    ([b"", *CURVE[1:]], "version"),
    (CURVE[:6], "CURVE needs 1"),
    ([*CURVE, b"extra"], "CURVE needs 1"),
    ([*CURVE[:6], KEY[:31]], "not 32"),
    ([*CURVE[:6], KEY + b"x"], "not 32"),
    ([*CURVE[:6], b"x" * 40], "not 32"),
    (PLAIN[:7], "PLAIN needs 2"),
    ([*PLAIN[:6], b"u" * 256, b"p"], "user name is 256"),
    ([*PLAIN[:7], b"p" * 256], "password is 256"),
    ([*NULL, b"cred"], "NULL needs 0"),
    ([b"1.0", b"1", b"x" * 256, b"a", b"", b"NULL"], "domain frame is 256"),
    ([b"1.0", b"1", b"\xff\xfe", b"a", b"", b"NULL"], "domain frame is not UTF-8"),
    ([b"1.0", b"1", b"", b"\xff", b"", b"NULL"], "address frame is not UTF-8"),
    ([b"1.0", b"1" * 256, b"", b"a", b"", b"NULL"], "request id"),
    ([b"1.0", b"1", b"", b"a", b"i" * 256, b"NULL"], "identity"),
    ([b"1.0", b"1", b"", b"a", b"", b""], "mechanism"),
    ([b"1.0", b"1", b"", b"a", b"", b"null"], "mechanism"),
    ([b"1.0", b"1", b"", b"a", b"", b"X" * 21], "mechanism"),
    ([b"1.0", b"1", b"", b"a", b"", b"GSSAPI", b"p" * 4097], "at most 4096"),
    ([b"1.0", b"1", b"", b"a", b"", b"FOO", *[b"c"] * 9], "credential frames"),
])
def test_malformed_requests_raise(frames: list[bytes], message: str) -> None:
    with pytest.raises(ZapError, match=message):
        zap.parse_request(frames)


def test_error_messages_never_quote_a_password() -> None:
    with pytest.raises(ZapError) as info:
        zap.parse_request([*PLAIN[:7], b"hunter2" * 40])
    assert "hunter2" not in str(info.value)


def test_unknown_mechanism_parses() -> None:
    req = zap.parse_request([b"1.0", b"1", b"", b"a", b"", b"X-NEW", b"a", b"b"])
    assert req.mechanism == "X-NEW" and req.credentials == (b"a", b"b")


def test_encode_reply_rfc_example() -> None:
    assert zap.encode_reply(b"0001", "200", "OK", b"joe") == \
        [b"1.0", b"0001", b"200", b"OK", b"joe", b""]
    assert zap.encode_reply(b"1", 400, "No access") == \
        [b"1.0", b"1", b"400", b"No access", b"", b""]
    assert zap.encode_reply(b"1", b"500", b"x")[2] == b"500"


@pytest.mark.parametrize("kwargs, message", [
    ({"status": "201"}, "status"),
    ({"status": "abc"}, "status"),
    ({"text": "t" * 256}, "status text"),
    ({"user_id": b"u" * 256}, "user id"),
    ({"status": "400", "user_id": b"joe"}, "must be empty"),
    ({"status": "500", "metadata": b"\x01a\x00\x00\x00\x00"}, "must be empty"),
    ({"request_id": b"r" * 256}, "request id"),
])
def test_encode_reply_checks_lengths(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"request_id": b"1", "status": "200", "text": "OK"}
    args.update(kwargs)
    with pytest.raises(ZapError, match=message):
        zap.encode_reply(**args)  # type: ignore[arg-type]


def test_fallback_reply_echoes_usable_request_id() -> None:
    assert zap.fallback_reply([b"2.0", b"42", b""]) == \
        [b"1.0", b"42", b"500", b"Malformed request", b"", b""]
    assert zap.fallback_reply([b"only"])[1] == b""
    assert zap.fallback_reply([])[1] == b""
    assert zap.fallback_reply([b"1.0", b"r" * 256])[1] == b""
    assert zap.fallback_reply([b"1.0", b"1"], "200")[2] == b"500"  # never a fallback 200
    assert zap.fallback_reply([b"1.0", b"1"], "400", "x" * 300)[3] == b"x" * 255


def test_split_envelope() -> None:
    assert zap.split_envelope([b"id", b"", *NULL]) == ([b"id", b""], NULL)
    assert zap.split_envelope([b"a", b"b", b"", *NULL]) == ([b"a", b"b", b""], NULL)
    assert zap.split_envelope([b"id", b""]) == ([b"id", b""], [])
    assert zap.split_envelope(NULL[:1]) is None          # no delimiter: drop
    assert zap.split_envelope([b"", *NULL]) is None      # no routing id: drop
    assert zap.split_envelope([]) is None


def _well_formed(reply: list[bytes], frames: list[bytes]) -> None:
    assert len(reply) == zap.REPLY_FRAMES
    assert all(isinstance(f, bytes) for f in reply)
    assert reply[0] == b"1.0"
    assert reply[2] in (b"200", b"400", b"500")
    assert len(reply[3]) <= 255 and len(reply[4]) <= 255
    if reply[2] != b"200":
        assert reply[4] == b"" and reply[5] == b""
    if len(frames) >= 2 and len(frames[1]) <= 255:
        assert reply[1] == frames[1]
    else:
        assert reply[1] == b""


_frame = st.one_of(st.binary(max_size=40), st.sampled_from(
    [b"1.0", b"1", b"", b"127.0.0.1", b"NULL", b"PLAIN", b"CURVE", b"GSSAPI", KEY,
     b"x" * 300]))
_frames = st.one_of(
    st.lists(_frame, max_size=12),
    st.tuples(st.sampled_from([CURVE, PLAIN, NULL]), st.integers(0, 8), _frame).map(
        lambda t: [*t[0][:t[1]], t[2], *t[0][t[1] + 1:]]),  # one frame of a valid request replaced
)
_POLICY = Policy({"*": DomainPolicy(null=True, plain=StaticPasswords({"admin": "secret"}),
                                    curve=StaticKeys.from_keys([KEY]))})


@settings(max_examples=300, deadline=None)
@given(_frames)
def test_any_frames_get_a_well_formed_reply(frames: list[bytes]) -> None:
    reply = answer(_POLICY, frames)
    _well_formed(reply, frames)
    request, _decision, reply2 = respond(_POLICY, frames)
    assert reply2 == reply
    if request is None:
        assert reply[2] == b"500"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=8))
def test_router_messages_are_answered_or_dropped(frames: list[bytes]) -> None:
    parts = zap.split_envelope(frames)
    if parts is None:  # documented drop: no routing id + delimiter to send a reply to
        assert b"" not in frames or frames[0] == b""
        return
    envelope, body = parts
    assert envelope[-1] == b"" and all(envelope[:-1]) and envelope + body == frames
    _well_formed(answer(_POLICY, body), body)


def test_valid_requests_are_answered_from_policy() -> None:
    assert answer(_POLICY, CURVE) == [b"1.0", b"1", b"200", b"OK",
                                      zap_z85(KEY), b""]
    assert answer(_POLICY, PLAIN)[2:5] == [b"200", b"OK", b"admin"]
    assert answer(_POLICY, NULL)[:3] == [b"1.0", b"0001", b"200"]


def zap_z85(key: bytes) -> bytes:
    from curvecert.formats import z85

    return z85.encode(key).encode("ascii")


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_bytes_like_frames_parse_like_bytes(kind: type) -> None:
    frames = [kind(f) for f in PLAIN]
    req = zap.parse_request(frames)
    assert req == zap.parse_request(PLAIN)
    assert all(type(c) is bytes for c in (req.request_id, req.identity, *req.credentials))


def test_non_bytes_frames_are_malformed() -> None:
    with pytest.raises(ZapError, match="must be bytes"):
        zap.parse_request([b"1.0", b"1", "text", b"a", b"", b"NULL"])  # type: ignore[list-item]
    assert answer(_POLICY, [b"1.0", b"1", 42, b"a", b"", b"NULL"])[2] == b"500"  # type: ignore[list-item]
