"""Providers in the pure decision layer: `Provider` checks, `ResultCache`, `Pending`, and the
`prepare`/`encode` split the transports use. No sockets, no threads."""

from __future__ import annotations

import functools
import gc
import warnings
from typing import Any

import pytest

from curvecert.auth.decision import Decision, encode
from curvecert.auth.pending import Grant, Pending, Provider, ResultCache, run_inline
from curvecert.auth.policy import DomainPolicy, Policy, decide, prepare, respond
from curvecert.errors import ConfigError
from curvecert.formats import z85
from curvecert.formats.zap import ZapRequest, parse_request

KEY = bytes(range(32))


def curve(key: bytes = KEY, rid: bytes = b"1", address: bytes = b"127.0.0.1") -> list[bytes]:
    return [b"1.0", rid, b"", address, b"", b"CURVE", key]


def plain(password: bytes, rid: bytes = b"1") -> list[bytes]:
    return [b"1.0", rid, b"", b"127.0.0.1", b"", b"PLAIN", b"alice", password]


def one(dp: DomainPolicy) -> Policy:
    return Policy({"*": dp})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- Provider ---------------------------------------------------------------------------

async def _async_cb(request: ZapRequest) -> bool:
    return True


class _Methods:
    async def check(self, request: ZapRequest) -> bool:
        return True

    async def __call__(self, request: ZapRequest) -> bool:
        return True


@pytest.mark.parametrize("callback, is_async", [
    (lambda r: True, False),
    (_async_cb, True),
    (_Methods().check, True),
    (_Methods(), True),
    (functools.partial(_async_cb), True),
])
def test_provider_knows_async_callbacks(callback: Any, is_async: bool) -> None:
    assert Provider(callback).is_async is is_async


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"timeout": -1}, {"timeout": "1"}])
def test_provider_refuses_bad_timeouts(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        Provider(lambda r: True, **kwargs)


def test_provider_refuses_non_callables_and_inline_async() -> None:
    with pytest.raises(ConfigError, match="not callable"):
        Provider("nope")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="inline"):
        Provider(_async_cb, inline=True)


def test_synchronous_core_cannot_run_async_providers() -> None:
    policy = one(DomainPolicy(curve=Provider(_async_cb, "db")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited"
        decision = decide(parse_request(curve()), policy)
        gc.collect()
    assert decision.status == "500" and "async" in decision.reason


def test_an_awaitable_result_in_a_sync_caller_is_a_500_and_is_closed() -> None:
    pending = Pending(Provider(lambda r: True, "db"), parse_request(curve()))
    coro = _async_cb(pending.request)
    decision = pending.finish(coro)
    assert decision.status == "500" and "awaitable" in decision.reason
    assert coro.cr_frame is None  # closed, so no warning later


def test_expire_and_fail_name_no_secret() -> None:
    pending = Pending(Provider(lambda r: True, "ldap", timeout=0.25),
                      parse_request(plain(b"hunter2")))
    assert pending.expire().reason == "ldap did not answer within 0.25s"
    failed = pending.fail(ValueError("hunter2"))
    assert failed.status == "500" and "hunter2" not in failed.reason


# --- ResultCache ------------------------------------------------------------------------

def test_cache_keeps_allows_only_for_ttl() -> None:
    clock = Clock()
    cache = ResultCache(10, clock=clock)
    calls: list[bytes] = []

    def lookup(request: ZapRequest) -> bool:
        calls.append(request.credentials[0])
        return request.credentials[0] == KEY

    provider = Provider(lookup, "db", cache=cache)
    policy = one(DomainPolicy(curve=provider))
    assert decide(parse_request(curve(rid=b"1")), policy).status == "200"
    hit = decide(parse_request(curve(rid=b"2")), policy)  # another request id: same request
    assert hit.status == "200" and hit.reason.endswith("(cached)")
    assert hit.user_id == z85.encode(KEY).encode()
    assert calls == [KEY]
    other = bytes(32)
    for _ in range(2):
        assert decide(parse_request(curve(other)), policy).status == "400"
    assert calls == [KEY, other, other]  # a denial is never remembered
    clock.now += 10
    assert decide(parse_request(curve()), policy).status == "200"
    assert calls == [KEY, other, other, KEY]  # expired


def test_cache_separates_addresses_and_credentials() -> None:
    cache = ResultCache(60)
    request = parse_request(plain(b"right"))
    cache.put(request, True)
    assert cache.get(parse_request(plain(b"right", rid=b"9"))) is True
    assert cache.get(parse_request(plain(b"wrong"))) is None
    assert cache.get(parse_request(curve(address=b"10.0.0.1"))) is None
    assert "right" not in repr(cache)


def test_cache_is_bounded_oldest_first_and_expired_first() -> None:
    clock = Clock()
    cache = ResultCache(10, max_entries=2, clock=clock)
    a, b, c = (parse_request(curve(bytes([i]) * 32)) for i in (1, 2, 3))
    cache.put(a, True)
    clock.now += 5
    cache.put(b, Grant("b"))
    cache.put(c, True)  # full: the oldest (a) goes
    assert cache.get(a) is None and cache.get(b) == Grant("b") and cache.get(c) is True
    clock.now += 6  # b expired, c still fresh
    cache.put(a, True)  # full: expired b goes first
    assert cache.get(c) is True and cache.get(a) is True and len(cache) == 2
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ConfigError):
        ResultCache(0)


def test_cache_ignores_non_allow_results() -> None:
    cache = ResultCache(60)
    request = parse_request(curve())
    for result in (False, None, "yes"):
        cache.put(request, result)  # type: ignore[arg-type]
    assert len(cache) == 0


# --- prepare / encode -------------------------------------------------------------------

def test_prepare_returns_pending_for_providers_only() -> None:
    policy = one(DomainPolicy(null=True, curve=Provider(lambda r: True, "db")))
    request, outcome = prepare(policy, curve())
    assert isinstance(outcome, Pending) and outcome.request == request
    request, outcome = prepare(policy, [b"1.0", b"7", b"", b"127.0.0.1", b"", b"NULL"])
    assert isinstance(outcome, Decision) and outcome.allowed
    _decision, reply = encode(request, outcome, [])
    assert reply == [b"1.0", b"7", b"200", b"OK", b"", b""]


def test_prepare_and_encode_a_malformed_request() -> None:
    frames = [b"1.0", b"42", b"", b"127.0.0.1", b"", b"CURVE", b"short"]
    request, outcome = prepare(Policy(), frames)
    assert request is None and isinstance(outcome, Decision) and outcome.status == "500"
    _decision, reply = encode(request, outcome, frames)
    assert reply[:3] == [b"1.0", b"42", b"500"]


def test_encode_turns_an_unencodable_decision_into_a_500() -> None:
    request = parse_request(curve())
    bad = Decision("200", "OK", b"u" * 300, b"", "hook", "CURVE")
    decision, reply = encode(request, bad, curve())
    assert decision.status == "500" and reply[2] == b"500" and reply[4] == b""


def test_respond_runs_providers_inline() -> None:
    policy = one(DomainPolicy(curve=Provider(lambda r: Grant("bob"), "db")))
    _request, decision, reply = respond(policy, curve())
    assert decision.user_id == b"bob" and reply[4] == b"bob"
    pending = prepare(policy, curve())[1]
    assert isinstance(pending, Pending)
    assert run_inline(pending).user_id == b"bob"
