"""`Rechecker`: what "still allowed" means per mechanism, arming, caching, fail closed."""

from __future__ import annotations

import pytest

from curvecert.auth import recheck
from curvecert.auth.keylookup import StaticKeys, UnsafeAllowAny
from curvecert.auth.policy import DomainPolicy, Policy
from curvecert.auth.pwtable import StaticPasswords
from curvecert.auth.recheck import Rechecker
from curvecert.certs.cert import Certificate


def keys_policy(*certs: Certificate) -> Policy:
    return Policy({"*": DomainPolicy(curve=StaticKeys.from_keys(c.public_key for c in certs))})


def test_curve_keys_follow_the_policy() -> None:
    alice, bob = Certificate.new(), Certificate.new()
    checker = Rechecker(keys_policy(alice, bob))
    assert checker.allowed(alice.public_txt) and checker.allowed(bob.public_txt)
    checker.admit(alice.public_txt)
    checker.admit(bob.public_txt)
    assert not checker.armed
    checker.set_policy(keys_policy(bob))  # alice revoked while (maybe) connected
    assert checker.armed
    assert not checker.allowed(alice.public_txt) and checker.allowed(bob.public_txt)
    checker.set_policy(keys_policy(alice, bob))
    assert not checker.armed and checker.allowed(alice.public_txt)


def test_admitting_an_already_revoked_key_arms() -> None:
    alice = Certificate.new()
    checker = Rechecker(keys_policy())
    checker.admit(alice.public_txt)  # a handshake that raced with the removal
    assert checker.armed


def test_other_mechanisms_and_domains() -> None:
    policy = Policy({"*": DomainPolicy(null=True, plain=StaticPasswords({"ann": "pw"})),
                     "open": DomainPolicy(curve=UnsafeAllowAny())})
    checker = Rechecker(policy)
    assert checker.allowed("")            # NULL still allowed
    assert checker.allowed("ann")         # PLAIN user still listed
    assert not checker.allowed("zed")     # not listed
    anyone = Rechecker(policy, "open")
    assert anyone.allowed(Certificate.new().public_txt)
    assert not anyone.allowed("")         # NULL not allowed in "open"
    assert not Rechecker(Policy(), "x").allowed("")  # no policy for the domain: no


def test_a_failing_lookup_is_not_allowed() -> None:
    class Broken:
        def lookup(self, key: bytes, /) -> None:
            raise OSError("disk on fire")

    checker = Rechecker(Policy({"*": DomainPolicy(curve=Broken())}))
    assert not checker.allowed(Certificate.new().public_txt)


def test_too_many_admissions_check_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recheck, "MAX_ADMITTED", 3)
    certs = [Certificate.new() for _ in range(5)]
    checker = Rechecker(keys_policy(*certs))
    for c in certs:
        checker.admit(c.public_txt)
    assert checker.armed
    checker.invalidate()
    assert checker.armed  # stays armed: the admitted set is no longer tracked
