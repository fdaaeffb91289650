"""Decision tables for `curvecert.auth.policy.decide`: plain data in, decisions out, no sockets."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from curvecert.auth.addresses import AddressFilter
from curvecert.auth.decision import Decision
from curvecert.auth.keylookup import KeyChain, KeyEntry, StaticKeys, UnsafeAllowAny
from curvecert.auth.pending import Grant, Pending, Provider
from curvecert.auth.policy import DomainPolicy, Policy, decide, resolve, respond
from curvecert.auth.pwtable import CheckResult, StaticPasswords
from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError
from curvecert.formats import z85, zmtp
from curvecert.formats.zap import ZapRequest
from curvecert.store.watch import CertStore

ALICE = bytes(range(32))
MALLORY = bytes(range(1, 33))


def req(mechanism: str = "NULL", *creds: bytes, domain: str = "",
        address: str = "127.0.0.1") -> ZapRequest:
    return ZapRequest(b"1.0", b"1", domain, address, b"", mechanism, tuple(creds))


def curve(key: bytes = ALICE, **kw: str) -> ZapRequest:
    return req("CURVE", key, **kw)


def plain(user: bytes = b"admin", pw: bytes = b"secret", **kw: str) -> ZapRequest:
    return req("PLAIN", user, pw, **kw)


def one(dp: DomainPolicy, domain: str = "*", **kw: AddressFilter) -> Policy:
    return Policy({domain: dp}, **kw)


# --- addresses ------------------------------------------------------------------------------

@pytest.mark.parametrize("allow, deny, address, expected", [
    ((), (), "10.1.2.3", None),
    (("127.0.0.1",), (), "127.0.0.1", None),
    (("127.0.0.1",), (), "127.0.0.2", "address not allowed"),
    (("10.0.0.0/8",), (), "10.200.3.4", None),
    (("10.0.0.0/8",), (), "11.0.0.1", "address not allowed"),
    ((), ("10.0.0.0/8",), "10.0.0.1", "address denied"),
    ((), ("10.0.0.0/8",), "192.168.1.1", None),
    (("10.0.0.0/8",), ("10.0.0.66",), "10.0.0.66", "address denied"),  # deny beats allow
    (("10.0.0.0/8",), ("10.0.0.66",), "10.0.0.67", None),
    # IPv6, exact and CIDR, compressed or not
    (("::1",), (), "::1", None),
    (("0:0:0:0:0:0:0:1",), (), "::1", None),
    (("2001:db8::/32",), (), "2001:db8:1::5", None),
    (("2001:db8::/32",), (), "2001:db9::5", "address not allowed"),
    (("fe80::/10",), (), "fe80::1%eth0", None),
    # IPv4-mapped: a dual-stack listener reports ::ffff:a.b.c.d for IPv4 clients
    (("127.0.0.1",), (), "::ffff:127.0.0.1", None),
    (("10.0.0.0/8",), (), "::ffff:10.9.8.7", None),
    ((), ("127.0.0.1",), "::ffff:127.0.0.1", "address denied"),
    (("::ffff:127.0.0.1",), (), "127.0.0.1", None),
    (("::ffff:10.0.0.0/104",), (), "10.1.1.1", None),
    (("127.0.0.1",), (), "::1", "address not allowed"),
    # ipc peers: localhost:UID:GID:PID
    (("localhost:1000:*:*",), (), "localhost:1000:1000:4242", None),
    (("localhost:1000:*:*",), (), "localhost:1001:1000:4242", "address not allowed"),
    (("localhost:*:*:*",), (), "localhost:0:0:1", None),
    ((), ("localhost:*:50:*",), "localhost:7:50:9", "address denied"),
    (("127.0.0.1",), (), "localhost:1000:1000:1", "address not allowed"),
    # garbage addresses never match an entry
    (("127.0.0.1",), (), "", "address not allowed"),
    (("127.0.0.1",), (), "not-an-ip", "address not allowed"),
    ((), ("127.0.0.1",), "not-an-ip", None),
])
def test_address_filter(allow: tuple[str, ...], deny: tuple[str, ...], address: str,
                        expected: str | None) -> None:
    assert AddressFilter.of(allow, deny).check(address) == expected


@pytest.mark.parametrize("entry", ["host.example", "10.0.0.0/33", "1.2.3", "localhost:a:b:c",
                                   "localhost:1:2", ""])
def test_bad_address_entries_are_refused(entry: str) -> None:
    with pytest.raises(ConfigError):
        AddressFilter.of([entry])


def test_address_filter_applies_to_every_mechanism() -> None:
    policy = Policy({"*": DomainPolicy(null=True, curve=UnsafeAllowAny(),
                                       plain=StaticPasswords({"admin": "secret"}))},
                    AddressFilter.of(["10.0.0.0/8"]))
    for request in (req(), curve(), plain()):
        assert decide(request, policy).status == "400"
        ok = ZapRequest(b"1.0", b"1", "", "10.0.0.1", b"", request.mechanism,
                        request.credentials)
        assert decide(ok, policy).status == "200"


def test_domain_address_filter_adds_to_global() -> None:
    policy = Policy({"x": DomainPolicy(null=True, addresses=AddressFilter.of(deny=["10.0.0.2"]))},
                    AddressFilter.of(["10.0.0.0/24"]))
    assert decide(req(domain="x", address="10.0.0.1"), policy).allowed
    assert decide(req(domain="x", address="10.0.0.2"), policy).reason == "address denied"
    assert decide(req(domain="x", address="10.0.1.1"), policy).reason == "address not allowed"


# --- domains --------------------------------------------------------------------------------

@pytest.mark.parametrize("domains, domain, expected", [
    ({"*": True}, "", "200"),
    ({"*": True}, "global", "200"),              # '*' really matches any domain (pyzmq: no)
    ({"*": True}, "anything-else", "200"),
    ({"global": True}, "global", "200"),
    ({"global": True}, "", "400"),
    ({"global": True}, "other", "400"),
    ({"global": False, "*": True}, "global", "400"),  # a named domain replaces the fallback
    ({"global": True, "*": False}, "x", "400"),
    ({}, "", "400"),
])
def test_domains_and_fallback(domains: Mapping[str, bool], domain: str, expected: str) -> None:
    policy = Policy({name: DomainPolicy(null=flag) for name, flag in domains.items()})
    assert decide(req(domain=domain), policy).status == expected


def test_no_policy_for_domain_reason() -> None:
    decision = decide(req(domain="nowhere"), Policy({"a": DomainPolicy(null=True)}))
    assert (decision.status, decision.reason) == ("400", "no policy for domain")
    assert decision.domain == "nowhere" and decision.user_id == b""


# --- NULL -----------------------------------------------------------------------------------

def test_null_needs_to_be_enabled() -> None:
    assert decide(req(), one(DomainPolicy())).reason == "NULL not allowed for domain"
    decision = decide(req(), one(DomainPolicy(null=True)))
    assert (decision.status, decision.user_id, decision.metadata) == ("200", b"", b"")


# --- PLAIN ----------------------------------------------------------------------------------

@pytest.mark.parametrize("user, pw, status, reason", [
    (b"admin", b"secret", "200", "password ok"),
    (b"admin", b"Secret", "400", "wrong password"),
    (b"admin", b"", "400", "wrong password"),
    (b"root", b"secret", "400", "unknown user"),
    (b"\xff", b"secret", "400", "user name is not UTF-8"),
])
def test_plain(user: bytes, pw: bytes, status: str, reason: str) -> None:
    decision = decide(plain(user, pw),
                      one(DomainPolicy(plain=StaticPasswords({"admin": "secret"}))))
    assert (decision.status, decision.reason) == (status, reason)
    assert decision.user_id == (b"admin" if status == "200" else b"")
    assert "secret" not in repr(decision).replace("admin", "")


def test_plain_not_configured() -> None:
    decision = decide(plain(), one(DomainPolicy(null=True)))
    assert (decision.status, decision.subject) == ("400", "admin")


class _Broken:
    def check(self, user: str, password: bytes) -> CheckResult:
        raise RuntimeError("database is down")

    def lookup(self, key: bytes) -> KeyEntry | None:
        raise RuntimeError("database is down")


class _Unavailable:
    def check(self, user: str, password: bytes) -> CheckResult:
        return CheckResult.UNAVAILABLE


def test_plain_source_failures_are_500() -> None:
    assert decide(plain(), one(DomainPolicy(plain=_Broken()))).status == "500"
    decision = decide(plain(), one(DomainPolicy(plain=_Unavailable())))
    assert (decision.status, decision.reason) == ("500", "password file unusable")


def test_plain_with_hashed_static_passwords() -> None:
    from curvecert.auth.hashing import hash_password

    source = StaticPasswords({"admin": hash_password("secret", n=16)})
    assert decide(plain(), one(DomainPolicy(plain=source))).allowed
    assert not decide(plain(pw=b"nope"), one(DomainPolicy(plain=source))).allowed


# --- CURVE ----------------------------------------------------------------------------------

def test_curve_known_key_gets_user_id_and_metadata() -> None:
    cert = Certificate(ALICE, meta={"name": "Alice", "email/work": "a@x"})
    decision = decide(curve(), one(DomainPolicy(curve=StaticKeys.from_certificates([cert]))))
    assert decision.status == "200"
    assert decision.user_id == z85.encode(ALICE).encode()
    assert zmtp.decode(decision.metadata) == [("name", b"Alice"), ("email_work", b"a@x")]


def test_curve_unknown_key() -> None:
    decision = decide(curve(MALLORY), one(DomainPolicy(curve=StaticKeys.from_keys([ALICE]))))
    assert (decision.status, decision.reason, decision.user_id) == ("400", "unknown key", b"")
    assert decision.subject == z85.encode(MALLORY)


def test_an_unreadable_store_says_so(tmp_path: Path) -> None:
    """Fail closed, and say why: a store that cannot be read trusts nothing, and the
    reason names it rather than leaving an operator to hunt for a missing key."""
    good = StaticKeys.from_keys([MALLORY])
    gone = CertStore(tmp_path / "missing", watch=False).start()
    decision = decide(curve(ALICE), one(DomainPolicy(curve=KeyChain([gone, good]))))
    assert decision.status == "400"
    assert decision.reason.startswith("unknown key (store unavailable: ")
    assert decision.reason.endswith(")") and len(decision.reason) > 40
    assert decide(curve(MALLORY), one(DomainPolicy(curve=KeyChain([gone, good])))
                  ).status == "200"
    healthy = CertStore(tmp_path, watch=False).start()
    assert decide(curve(ALICE), one(DomainPolicy(curve=healthy))).reason == "unknown key"


def test_curve_not_configured_and_unsafe_allow_any() -> None:
    assert decide(curve(), one(DomainPolicy(null=True))).status == "400"
    decision = decide(curve(MALLORY), one(DomainPolicy(curve=UnsafeAllowAny())))
    assert (decision.status, decision.reason) == ("200", "unsafe allow-any")
    assert decision.user_id == z85.encode(MALLORY).encode() and decision.metadata == b""


def test_unsafe_allow_any_is_per_domain() -> None:
    policy = Policy({"open": DomainPolicy(curve=UnsafeAllowAny()),
                     "*": DomainPolicy(curve=StaticKeys.from_keys([ALICE]))})
    assert decide(curve(MALLORY, domain="open"), policy).allowed
    assert not decide(curve(MALLORY, domain="closed"), policy).allowed
    assert not decide(curve(MALLORY), policy).allowed
    assert policy.unsafe_domains == ["open"]


def test_raising_lookup_is_500() -> None:
    decision = decide(curve(), one(DomainPolicy(curve=_Broken())))
    assert (decision.status, decision.user_id) == ("500", b"")
    assert decision.reason == "key lookup failed: RuntimeError"


@pytest.mark.parametrize("metadata", [b"\x05Hello", "not bytes", b"\x00"])
def test_bad_metadata_from_a_lookup_is_500(metadata: object) -> None:
    class Entry:
        pass

    entry = Entry()
    entry.metadata = metadata  # type: ignore[attr-defined]

    class Lookup:
        def lookup(self, key: bytes) -> object:
            return entry

    assert decide(curve(), one(DomainPolicy(curve=Lookup()))).status == "500"  # type: ignore[arg-type]


def test_key_chain_and_list_of_lookups() -> None:
    first = StaticKeys.from_certificates([Certificate(ALICE, meta={"n": "1"})])
    second = StaticKeys.from_certificates([Certificate(MALLORY, meta={"n": "2"})])
    dp = DomainPolicy(curve=[first, second])  # type: ignore[arg-type]
    assert isinstance(dp.curve, KeyChain)
    assert zmtp.decode(decide(curve(MALLORY), one(dp)).metadata) == [("n", b"2")]
    assert DomainPolicy(curve=[]).curve is None  # type: ignore[arg-type]


# --- providers and other mechanisms ---------------------------------------------------------

@pytest.mark.parametrize("result, status, user_id", [
    (True, "200", z85.encode(ALICE).encode()),
    (Grant("alice"), "200", b"alice"),
    (Grant(), "200", z85.encode(ALICE).encode()),
    (False, "400", b""),
    (None, "400", b""),
    ("yes", "500", b""),
    (Grant("u" * 256), "500", b""),
    (Grant("a", b"\x05Hello"), "500", b""),
])
def test_curve_provider_results(result: object, status: str, user_id: bytes) -> None:
    policy = one(DomainPolicy(curve=Provider(lambda r: result, "db")))  # type: ignore[arg-type,return-value]
    decision = decide(curve(), policy)
    assert (decision.status, decision.user_id) == (status, user_id)


def test_provider_grant_metadata_mapping() -> None:
    policy = one(DomainPolicy(plain=Provider(lambda r: Grant("boss", {"Role": "admin"}))))
    decision = decide(plain(), policy)
    assert decision.user_id == b"boss" and zmtp.decode(decision.metadata) == [("Role", b"admin")]


def test_raising_provider_is_500_and_names_no_secret() -> None:
    def provider(request: ZapRequest) -> bool:
        raise ValueError(request.credentials[1].decode())  # a careless provider

    decision = decide(plain(), one(DomainPolicy(plain=Provider(provider, "ldap"))))
    assert (decision.status, decision.reason) == ("500", "ldap failed: ValueError")
    assert "secret" not in decision.reason


def test_pending_lets_a_caller_run_the_provider() -> None:
    policy = one(DomainPolicy(curve=Provider(lambda r: True, "async-db")))
    pending = resolve(curve(), policy)
    assert isinstance(pending, Pending) and pending.provider.name == "async-db"
    assert pending.finish(True).allowed
    assert pending.fail(TimeoutError()).status == "500"
    assert isinstance(resolve(req(), one(DomainPolicy(null=True))), Decision)


@pytest.mark.parametrize("others, status", [({}, "400"),
                                            ({"GSSAPI": Provider(lambda r: True)}, "200")])
def test_other_mechanisms_only_when_configured(others: dict[str, Provider], status: str) -> None:
    decision = decide(req("GSSAPI", b"alice@REALM"), one(DomainPolicy(others=others)))
    assert decision.status == status
    if status == "200":
        assert decision.user_id == b"alice@REALM"


def test_never_300() -> None:
    policies = [one(DomainPolicy()), one(DomainPolicy(null=True, curve=_Broken(),
                                                      plain=_Broken())), Policy()]
    requests = [req(), curve(), plain(), req("GSSAPI", b"p")]
    assert {decide(r, p).status for r in requests for p in policies} <= {"200", "400", "500"}


# --- construction ---------------------------------------------------------------------------

def test_bad_sources_are_refused() -> None:
    with pytest.raises(ConfigError):
        DomainPolicy(curve="keys/")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        DomainPolicy(plain=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Policy({"x" * 256: DomainPolicy()})
    with pytest.raises(ConfigError):
        StaticKeys({b"short": None})  # type: ignore[dict-item]


def test_policy_is_immutable_and_updates_copy() -> None:
    base = Policy({"*": DomainPolicy(null=True)})
    changed = base.update_domain("*", null=False).update_domain("x", curve=UnsafeAllowAny())
    assert base.domains["*"].null and "x" not in base.domains
    assert not changed.domains["*"].null and changed.domains["x"].unsafe
    with pytest.raises(TypeError):
        base.domains["y"] = DomainPolicy()  # type: ignore[index]


def test_respond_builds_reply_from_decision() -> None:
    frames = [b"1.0", b"7", b"", b"127.0.0.1", b"", b"CURVE", ALICE]
    request, decision, reply = respond(one(DomainPolicy(curve=UnsafeAllowAny())), frames)
    assert request is not None and decision.allowed
    assert reply == [b"1.0", b"7", b"200", b"OK", z85.encode(ALICE).encode(), b""]


def test_a_plain_mapping_becomes_static_passwords() -> None:
    dp = DomainPolicy(plain={"admin": "secret"})  # type: ignore[arg-type]
    assert isinstance(dp.plain, StaticPasswords)
    assert decide(plain(), one(dp)).allowed
