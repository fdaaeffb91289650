"""Fuzz target: the ZAP codec and the whole per-request core, with a real policy.

`policy.respond` is what the embedded authenticator, the asyncio one and `serve-auth` run
for every request; `zap.split_envelope` is the daemon's first step. For any list of
frames (random, or shaped like ZAP requests with known and unknown keys, users, domains,
addresses and mechanisms, oversized and non-UTF-8 fields, bytearray/memoryview frames):

- `respond` never raises and the reply is six `bytes` frames: version `1.0`, the request
  id echoed (parsed requests) or the fallback rule's id, a status of 200/400/500 (never
  300) matching the decision, a status text and User-Id of at most 255 octets, User-Id
  and metadata empty unless 200, metadata that decodes as ZMTP properties;
- nobody is admitted by accident: every 200 is checked against an independent oracle
  (address filters, the domain's mechanism, the trusted key or password);
- the decision's log line (`format_decision`) and the daemon's JSON record are one line
  and never contain a PLAIN password;
- `split_envelope` either drops a message (no routable envelope) or splits it so that the
  envelope ends with the empty delimiter and envelope + body is the message.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import tempfile

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from curvecert import store
from curvecert.auth.addresses import AddressFilter
from curvecert.auth.authenticator import format_decision
from curvecert.auth.keylookup import KeyChain, StaticKeys, UnsafeAllowAny
from curvecert.auth.pending import Grant, Provider
from curvecert.auth.policy import DomainPolicy, Policy, answer, respond
from curvecert.auth.pwtable import StaticPasswords
from curvecert.certs.cert import Certificate
from curvecert.errors import ZapError
from curvecert.formats import z85, zap, zmtp
from curvecert.serve.daemon import _decision_record
from tests.fuzz.conftest import FUZZ

# --- a real policy --------------------------------------------------------------------------

_TRUSTED = [Certificate.new([("name", f"client{i}"), ("x@y", "v")]) for i in range(3)]
_STORED = [Certificate.new([("name", f"stored{i}")]) for i in range(2)]
_STRANGER = Certificate.new()
_PASSWORDS = {"alice": "pw-ALICE-7f3a", "bob": "pw-BOB-91c2"}
_WRONG = ["pw-WRONG-0000", "", "x" * 255]

_store_dir = tempfile.mkdtemp(prefix="curvecert-fuzz-store-")
for _c in _STORED:
    store.add_certificate(_store_dir, _c)
_SNAPSHOT = store.scan(_store_dir, log_findings=False)
shutil.rmtree(_store_dir)  # the snapshot keeps everything in memory
assert len(_SNAPSHOT) == len(_STORED)


def _provider(request: zap.ZapRequest) -> object:
    """A provider whose answer (good and bad ones) is chosen by the identity frame."""
    choice = request.identity[:1]
    if choice == b"A":
        return True
    if choice == b"B":
        return Grant(user_id=request.identity[1:])  # may be > 255 octets or not UTF-8
    if choice == b"C":
        return Grant(metadata=request.identity[1:])  # an arbitrary, maybe broken, blob
    if choice == b"D":
        return Grant(metadata={"bad name": "x"})
    if choice == b"E":
        raise RuntimeError("provider crashed")
    if choice == b"F":
        return "yes"
    if choice == b"G":
        return Grant(user_id="u" * 300)
    if choice == b"H":
        return None
    return False


# deliberately returns wrong types too: the decision layer must turn them into 500s
_PROVIDER = Provider(_provider, name="fuzz-provider")  # type: ignore[arg-type]
POLICY = Policy({
    "*": DomainPolicy(curve=StaticKeys.from_certificates(_TRUSTED),
                      plain=StaticPasswords(_PASSWORDS)),
    "store": DomainPolicy(curve=_SNAPSHOT),
    "chain": DomainPolicy(curve=KeyChain([StaticKeys.from_keys([_TRUSTED[0].public_key]),
                                         _SNAPSHOT])),
    "null-ok": DomainPolicy(null=True, addresses=AddressFilter.of(
        allow=["127.0.0.0/8", "::1", "localhost:0:*:*"], deny=["127.0.0.66"])),
    "prov": DomainPolicy(curve=_PROVIDER, plain=_PROVIDER, others={"GSSAPI": _PROVIDER}),
    "unsafe": DomainPolicy(curve=UnsafeAllowAny()),
}, addresses=AddressFilter.of(deny=["10.66.0.0/16", "::ffff:192.0.2.1"]))

# --- the oracle: who may be admitted --------------------------------------------------------

def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _globally_denied(address: str) -> bool:
    """The policy-wide deny list: 10.66.0.0/16 and 192.0.2.1 (also as ::ffff:...)."""
    ip = _ip(address)
    if ip is None or ip.version != 4:
        return False
    return ip in ipaddress.ip_network("10.66.0.0/16") or ip == ipaddress.ip_address("192.0.2.1")


def _null_ok_address(address: str) -> bool:
    if address.startswith("localhost:"):
        parts = address.split(":")
        return len(parts) == 4 and parts[1] == "0" and all(p.isdigit() and p.isascii()
                                                           for p in parts[1:])
    ip = _ip(address)
    if ip is None:
        return False
    if ip.version == 4:
        return ip in ipaddress.ip_network("127.0.0.0/8") and str(ip) != "127.0.0.66"
    return ip == ipaddress.ip_address("::1")


def _check_admission(frames: list[bytes], reply: list[bytes]) -> None:
    """Every 200 must be justified by the policy, independently re-derived here."""
    request = zap.parse_request(frames)  # a 200 implies the request parsed
    assert not _globally_denied(request.address), "admitted from a denied address"
    domain = request.domain if request.domain in POLICY.domains else "*"
    mech, creds, user_id = request.mechanism, request.credentials, reply[4]
    if domain == "*":
        if mech == "CURVE":
            cert = next(c for c in _TRUSTED if c.public_key == creds[0])
            assert user_id == cert.public_txt.encode()
            assert reply[5] == zmtp.encode_lenient(cert.meta)[0]
        else:
            assert mech == "PLAIN", f"{mech} admitted in the default domain"
            assert creds[1] == _PASSWORDS[creds[0].decode()].encode()
            assert user_id == creds[0]
    elif domain == "store":
        assert mech == "CURVE" and any(c.public_key == creds[0] for c in _STORED)
    elif domain == "chain":
        assert mech == "CURVE" and any(c.public_key == creds[0]
                                       for c in (_TRUSTED[0], *_STORED))
    elif domain == "null-ok":
        assert mech == "NULL" and _null_ok_address(request.address)
        assert user_id == b""
    elif domain == "prov":
        assert mech in ("CURVE", "PLAIN", "GSSAPI") and request.identity[:1] in (b"A", b"B",
                                                                                 b"C")
    else:
        assert domain == "unsafe" and mech == "CURVE"
        assert user_id == z85.encode(creds[0]).encode()


# --- generators -----------------------------------------------------------------------------

_KEYS = [c.public_key for c in (*_TRUSTED, *_STORED, _STRANGER)]
_ADDRESSES = ["127.0.0.1", "127.0.0.66", "10.66.1.2", "10.67.0.1", "::1", "::ffff:127.0.0.1",
              "::ffff:10.66.0.9", "192.0.2.1", "::ffff:192.0.2.1", "localhost:0:0:42",
              "localhost:1:0:42", "localhost:0:x:1", "localhost::::", "fe80::1%eth0", "", "junk",
              "1.2.3.4/8", "٣.1.1.1"]
_DOMAINS = ["", "*", "store", "chain", "null-ok", "prov", "unsafe", "other", "STORE"]
_MECHS = [b"NULL", b"PLAIN", b"CURVE", b"GSSAPI", b"X-Y.1+_", b"curve", b"", b"A" * 21,
          b"\xff", b"CURVE\x00"]
_USERS = [b"alice", b"bob", b"mallory", b"", b"\xff\xfe", b"u" * 256, "ü".encode()]
_PWS = [p.encode() for p in (*_PASSWORDS.values(), *_WRONG)] + [b"\xff" * 3, b"p" * 256]
_text = st.one_of(st.sampled_from([s.encode() for s in _DOMAINS + _ADDRESSES]),
                  st.binary(max_size=8), st.binary(min_size=250, max_size=300),
                  st.text(max_size=6).map(lambda t: t.encode("utf-8", "surrogatepass")))


def _frame_type(frame: bytes, kind: int) -> bytes:
    if kind == 1:
        return bytearray(frame)  # type: ignore[return-value]
    if kind == 2:
        return memoryview(frame)  # type: ignore[return-value]
    return frame


@st.composite
def zap_requests(draw: st.DrawFn) -> list[bytes]:
    """Frames shaped like a ZAP request, each field sometimes broken."""
    mech = draw(st.sampled_from(_MECHS))
    if mech == b"CURVE":
        creds = [draw(st.one_of(st.sampled_from(_KEYS), st.binary(max_size=40)))]
    elif mech == b"PLAIN":
        creds = [draw(st.sampled_from(_USERS)), draw(st.sampled_from(_PWS))]
    elif mech == b"GSSAPI":
        creds = [draw(st.one_of(st.binary(max_size=20), st.binary(min_size=4090,
                                                                  max_size=4100)))]
    else:
        creds = []
    if draw(st.integers(0, 4)) == 0:  # the wrong number of credential frames
        creds = draw(st.lists(st.binary(max_size=40), max_size=10))
    identity = draw(st.one_of(st.sampled_from([b"", b"A", b"Bok", b"C", b"D", b"E", b"F",
                                               b"G", b"H", b"Bsvc\xff",
                                               b"C\x03abc\x00\x00\x00\x01x"]),
                              st.binary(max_size=300)))
    frames = [
        draw(st.sampled_from([b"1.0", b"1.0", b"1.0", b"1.1", b"", b"1.0\x00"])),
        draw(st.one_of(st.just(b"1"), st.binary(max_size=300))),
        draw(st.one_of(st.sampled_from([d.encode() for d in _DOMAINS]), _text)),
        draw(st.one_of(st.sampled_from([a.encode() for a in _ADDRESSES]), _text)),
        identity, mech, *creds]
    if draw(st.integers(0, 5)) == 0:
        del frames[draw(st.integers(0, len(frames) - 1))]
    kinds = draw(st.lists(st.integers(0, 6), min_size=len(frames), max_size=len(frames)))
    return [_frame_type(f, k) for f, k in zip(frames, kinds, strict=True)]


any_frames = st.one_of(zap_requests(), st.lists(st.binary(max_size=40), max_size=12))


# --- targets --------------------------------------------------------------------------------

def _reply_ok(frames: list[bytes], reply: list[bytes]) -> None:
    assert len(reply) == zap.REPLY_FRAMES
    assert all(type(f) is bytes for f in reply), [type(f) for f in reply]
    version, request_id, status, text, user_id, metadata = reply
    assert version == zap.VERSION
    assert status in (b"200", b"400", b"500")
    assert len(request_id) <= zap.MAX_TEXT and len(text) <= zap.MAX_TEXT
    assert len(user_id) <= zap.MAX_TEXT
    if status != b"200":
        assert user_id == b"" and metadata == b""
    elif metadata:
        zmtp.decode(metadata)


@FUZZ
@given(any_frames)
@example([b"1.0", b"1", b"", b"127.0.0.1", b"", b"CURVE", _TRUSTED[0].public_key])
@example([b"1.0", b"1", b"prov", b"127.0.0.1", b"G", b"CURVE", _STRANGER.public_key])
@example([b"1.0", b"1", b"prov", b"127.0.0.1", b"C\x05", b"GSSAPI", b"p"])
@example([b"1.0", b"1", b"null-ok", b"::ffff:127.0.0.66", b"", b"NULL"])
@example([b"1.0"])
@example([])
@example([bytearray(b"1.0"), memoryview(b"9"), b"", b"", b"", b"PLAIN", b"alice",
          bytearray(b"pw-ALICE-7f3a")])
def test_respond_always_answers_well_formed(frames: list[bytes]) -> None:
    request, decision, reply = respond(POLICY, frames)
    _reply_ok(frames, reply)
    assert answer(POLICY, frames) == reply  # the frames-only entry point agrees
    assert reply[2] == decision.status.encode()
    if request is not None:
        assert reply[1] == bytes(frames[1])
    else:
        assert decision.status == "500"
        ok_id = len(frames) >= 2 and len(frames[1]) <= zap.MAX_TEXT
        assert reply[1] == (bytes(frames[1]) if ok_id else b"")
    if reply[2] == b"200":
        _check_admission([bytes(f) for f in frames], reply)
    # what gets logged: one line, JSON-safe, never a password
    line = format_decision(decision)
    record = json.dumps(_decision_record(decision))
    assert "\n" not in line and "\r" not in line
    for secret in _PASSWORDS.values():
        if request is None or request.mechanism != "PLAIN" or \
                request.credentials[0].decode("utf-8", "replace") != secret:
            assert secret not in line and secret not in record


@FUZZ
@given(st.lists(st.one_of(st.just(b""), st.binary(max_size=6)), max_size=10))
def test_split_envelope_drops_or_splits(frames: list[bytes]) -> None:
    parts = zap.split_envelope(frames)
    if parts is None:
        assert b"" not in frames or frames[0] == b""
        return
    envelope, body = parts
    assert len(envelope) >= 2 and envelope[-1] == b"" and b"" not in envelope[:-1]
    assert envelope + body == frames


@FUZZ
@given(any_frames)
@example([b"1.0", b"1", b"", b"127.0.0.1", b"", bytearray(b"NULL")])
@example([b"1.0", b"1", memoryview(b""), b"127.0.0.1", b"", b"NULL"])
def test_parse_request_raises_only_zap_error(frames: list[bytes]) -> None:
    try:
        request = zap.parse_request(frames)
    except ZapError as exc:
        for pw in _PASSWORDS.values():
            assert pw not in str(exc)  # an error never quotes a credential
        return
    assert request.version == zap.VERSION
    assert len(request.domain.encode()) <= zap.MAX_TEXT
    assert all(type(c) is bytes for c in request.credentials)
    if request.mechanism == "CURVE":
        assert len(request.credentials[0]) == 32
    assert _PASSWORDS["alice"] not in repr(request)


# --- regressions found by the fuzzer ---------------------------------------------------------

@pytest.mark.parametrize("kind", [bytearray, memoryview])
@pytest.mark.parametrize("index", range(7))
def test_bytes_like_frames_parse_like_bytes(kind: type, index: int) -> None:
    """Found by `test_parse_request_raises_only_zap_error`: a bytearray mechanism frame
    raised TypeError (unhashable) and a memoryview domain/address AttributeError (no
    `.decode`), where the same bytes parse; `respond` then answered 500 to a good request."""
    frames: list[bytes] = [b"1.0", b"1", b"", b"127.0.0.1", b"", b"CURVE",
                           _TRUSTED[0].public_key]
    frames[index] = kind(frames[index])
    assert zap.parse_request(frames) == zap.parse_request([bytes(f) for f in frames])
    assert respond(POLICY, frames)[2][2] == b"200"
