"""Validity periods: ISO-8601 times and durations (property tests), metadata round trips,
the authenticator's refusal reasons, and the findings `verify` reports."""

from __future__ import annotations

import calendar
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from curvecert.auth.keylookup import StaticKeys
from curvecert.auth.policy import DomainPolicy, Policy, decide
from curvecert.certs import certfile, validity
from curvecert.certs.cert import Certificate
from curvecert.errors import CertificateError
from curvecert.formats import zap, zmtp

# Whole seconds from 1970 to 9999-12-31T23:59:59Z.
SECONDS = st.integers(min_value=0, max_value=253402300799)


@given(SECONDS)
def test_format_then_parse_is_identity(t: int) -> None:
    text = validity.format_time(t)
    assert text.endswith("Z") and len(text) == 20
    assert validity.parse_time(text) == t


@given(SECONDS, st.integers(min_value=-23 * 60, max_value=23 * 60))
def test_offsets_name_the_same_instant(t: int, offset_min: int) -> None:
    local = time.gmtime(t + offset_min * 60)
    sign = "+" if offset_min >= 0 else "-"
    hh, mm = divmod(abs(offset_min), 60)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", local) + f"{sign}{hh:02d}:{mm:02d}"
    if local.tm_year < 1970 or local.tm_year > 9999:
        with pytest.raises(CertificateError):
            validity.parse_time(text)
        return
    assert validity.parse_time(text) == t


@given(st.text(max_size=40))
def test_parse_time_never_raises_anything_else(text: str) -> None:
    try:
        value = validity.parse_time(text)
    except CertificateError as exc:
        assert "\n" not in str(exc) and "\x1b" not in str(exc)
    else:
        assert 0 <= value < 253402300800 + 86400


@pytest.mark.parametrize("text", [
    "2027-03-01T00:00:00", "2027-02-30", "2027-13-01", "27-03-01", "2027-03-01T24:00:00Z",
    "2027-03-01T00:00:00+25:00", "tomorrow", "", "1969-12-31T23:59:59Z",
])
def test_bad_times_are_refused(text: str) -> None:
    with pytest.raises(CertificateError):
        validity.parse_time(text)


def test_lenient_spellings() -> None:
    t = calendar.timegm((2027, 3, 1, 0, 0, 0))
    for text in ("2027-03-01", "2027-03-01T00:00Z", "2027-03-01 01:00:00+01:00",
                 "2027-03-01T00:00:00.000Z", "2027-02-28T19:00:00-0500"):
        assert validity.parse_time(text) == t, text


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from("wdhms")), min_size=1,
                max_size=4))
def test_durations_add_up(groups: list[tuple[int, str]]) -> None:
    units = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
    text = "".join(f"{n}{u}" for n, u in groups)
    assert validity.parse_duration(text) == sum(n * units[u] for n, u in groups)


@pytest.mark.parametrize("text", ["", "d", "3x", "-1d", "1d 2h", "1.5"])
def test_durations(text: str) -> None:
    if text == "1.5":
        assert validity.parse_duration(text) == 1.5
        return
    with pytest.raises(CertificateError, match="not a duration"):
        validity.parse_duration(text)


def test_metadata_round_trip_through_a_file(tmp_path: object) -> None:
    meta = validity.with_validity([("name", "a")], not_before=1_800_000_000,
                                  not_after=1_900_000_000)
    cert = Certificate.new(meta)
    again = Certificate.parse(certfile.dump(cert, secret=False))
    period = validity.from_meta(again.meta)
    assert period == validity.Validity(1_800_000_000, 1_900_000_000)
    blob, _ = zmtp.encode_lenient(again.meta)
    assert validity.from_zmtp(blob) == period
    assert validity.from_zmtp(zmtp.encode({"name": "x"})) is None


def test_refusals_and_problems() -> None:
    p = validity.Validity(100.0, 200.0)
    assert p.refusal(99.9) == "certificate not valid before 1970-01-01T00:01:40Z"
    assert p.refusal(100.0) is None and p.refusal(199.99) is None
    assert p.refusal(200.0) == "certificate expired at 1970-01-01T00:03:20Z"
    assert [c for _, c, _ in p.problems(150.0, 100.0)] == ["expires-soon"]
    assert p.problems(150.0, 10.0) == []
    assert [c for _, c, _ in p.problems(250.0, 10.0)] == ["expired"]
    bad = validity.from_meta([("not-after", "soon")])
    assert bad is not None and bad.problem and bad.refusal(0.0)
    assert [c for _, c, _ in bad.problems(0.0, 0.0)] == ["validity-invalid"]
    inverted = validity.from_meta([("not-before", "2027-01-01"), ("not-after", "2026-01-01")])
    assert inverted is not None and inverted.problem
    with pytest.raises(CertificateError, match="later than"):
        validity.with_validity([], not_before=10, not_after=10)


def _curve_request(key: bytes) -> zap.ZapRequest:
    return zap.parse_request([b"1.0", b"1", b"", b"127.0.0.1", b"", b"CURVE", key])


def test_policy_refuses_outside_the_period_and_admits_inside() -> None:
    now = time.time()
    live = Certificate.new(validity.with_validity([], not_after=now + 3600))
    dead = Certificate.new(validity.with_validity([("name", "x")], not_after=now - 1))
    early = Certificate.new(validity.with_validity([], not_before=now + 3600))
    broken = Certificate.new([("not-after", "whenever")])
    plain = Certificate.new([("name", "no dates")])
    keys = StaticKeys.from_certificates([live, dead, early, broken, plain])
    policy = Policy({"*": DomainPolicy(curve=keys)})
    assert decide(_curve_request(live.public_key), policy).status == "200"
    assert decide(_curve_request(plain.public_key), policy).status == "200"
    d = decide(_curve_request(dead.public_key), policy)
    assert d.status == "400" and d.reason.startswith("certificate expired at ")
    assert d.text.startswith("Certificate expired at ")
    d = decide(_curve_request(early.public_key), policy)
    assert d.status == "400" and "not valid before" in d.reason
    d = decide(_curve_request(broken.public_key), policy)
    assert d.status == "400" and "unreadable" in d.reason


def test_snapshot_entries_carry_validity_and_next_expiry(tmp_path: object) -> None:
    from pathlib import Path

    from curvecert import store

    directory = Path(str(tmp_path))
    now = time.time()
    soon, later = float(int(now) + 600), float(int(now) + 7200)
    certs = [Certificate.new(validity.with_validity([("name", n)], not_after=t))
             for n, t in (("past", now - 60), ("soon", soon), ("later", later))]
    certs.append(Certificate.new([("name", "undated")]))
    for c in certs:
        store.add_certificate(directory, c)
    snap = store.scan(directory)
    periods = {e.meta["name"]: e.validity for e in snap}
    assert periods["undated"] is None
    assert periods["soon"] == validity.Validity(None, soon)
    assert snap.next_expiry == soon
    assert snap.next_expiry_after(soon) == later
    assert snap.next_expiry_after(later) is None
    assert store.scan(directory / "missing").next_expiry is None


_KEY = Certificate.new([("name", "svc")])


@given(st.integers(0, 39), st.characters(), st.sampled_from(["bare", "cert", "short"]))
def test_damaged_secrets_never_leak_into_errors(pos: int, ch: str, form: str) -> None:
    from curvecert.certs import secretsource

    secret = _KEY.secret_txt or ""
    damaged = secret[:pos] + ch + secret[pos + 1:]
    value = {"bare": damaged, "short": damaged[:pos],
             "cert": certfile.dump(_KEY, secret=True).replace(secret, damaged)}[form]
    try:
        secretsource.parse_secret(value.encode("utf-8", "surrogatepass"), "env:X")
    except CertificateError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("env:X")
        assert not any(secret[i:i + 5] in message for i in range(36))
