"""The control channel's pure parts: the strict request parser, the handler, the ring."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvecert.auth.policy import Policy
from curvecert.serve.control import (
    MAX_REQUEST,
    ControlHandler,
    ControlRequestError,
    DecisionRing,
    control_endpoint_for,
    parse_request,
)

json_values = (st.none() | st.booleans() | st.integers() | st.text(max_size=12)
               | st.sampled_from(["status", "trusted", "decisions"])
               | st.lists(st.integers(), max_size=3))


@settings(max_examples=500)
@given(st.binary(max_size=MAX_REQUEST + 16))
def test_parser_never_raises_anything_but_its_error(data: bytes) -> None:
    try:
        req = parse_request(data)
    except ControlRequestError as exc:
        assert "\n" not in str(exc)
    else:
        assert req.command in ("status", "trusted", "decisions")


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["command", "domain", "last", "denied", "after", "x"]),
                       json_values, max_size=5))
def test_parser_on_json_objects(obj: dict[str, Any]) -> None:
    try:
        req = parse_request(json.dumps(obj).encode())
    except ControlRequestError:
        return
    assert obj["command"] in ("status", "trusted", "decisions")
    assert 1 <= req.last <= 100_000
    assert req.after is None or req.after >= 0


@pytest.mark.parametrize("data", [
    b"", b"[]", b"\xff", b'{"command": "stop"}', b'{"command": "status", "x": 1}',
    b'{"command": "decisions", "last": true}', b'{"command": "decisions", "last": 0}',
    b'{"command": "decisions", "after": -1}', b'{"command": "trusted", "domain": 5}',
    b" " * (MAX_REQUEST + 1),
])
def test_parser_refuses(data: bytes) -> None:
    with pytest.raises(ControlRequestError):
        parse_request(data)


def test_parser_accepts() -> None:
    req = parse_request(b'{"command": "decisions", "last": 5, "denied": true, "after": 3}')
    assert (req.command, req.last, req.denied, req.after) == ("decisions", 5, True, 3)


class _State:
    def __init__(self) -> None:
        self.ring = DecisionRing(4)

    def status(self) -> dict[str, Any]:
        return {"healthy": True}

    def live_policy(self) -> Policy:
        return Policy()


def test_handler_answers_errors_as_replies() -> None:
    handler = ControlHandler(_State())
    bad = json.loads(handler.respond([b"nope"])[0])
    assert bad["ok"] is False and "JSON" in bad["error"]
    two = json.loads(handler.respond([b"{}", b"{}"])[0])
    assert two["ok"] is False
    good = json.loads(handler.respond([b'{"command":"status"}'])[0])
    assert good == {"ok": True, "result": {"healthy": True}}
    assert handler.errors == 2


def test_ring_is_bounded_and_follows_a_cursor() -> None:
    state = _State()
    handler = ControlHandler(state)
    for i in range(6):
        state.ring.append({"time": 1.5, "status": "400" if i % 2 else "200",
                           "mechanism": "PLAIN", "domain": "", "address": "127.0.0.1",
                           "user_id": "", "subject": f"u{i}", "reason": "r"})
    res = json.loads(handler.respond([b'{"command":"decisions","last":10}'])[0])["result"]
    assert [d["seq"] for d in res["items"]] == [3, 4, 5, 6]  # capacity 4
    assert res["cursor"] == 6
    assert res["items"][0]["time"] == "1970-01-01T00:00:01.500Z"
    assert res["items"][0]["status"] == 200
    denied = state.ring.select(denied=True)[0]
    assert [seq for seq, _ in denied] == [4, 6]
    state.ring.append({"status": "200"})
    newer, cursor = state.ring.select(after=6)
    assert [seq for seq, _ in newer] == [7] and cursor == 7
    assert state.ring.select(after=7) == ([], 7)


def test_control_endpoint_next_to_zap() -> None:
    assert control_endpoint_for("ipc:///run/x/zap.sock", "ipc:///tmp/d/zap.sock") \
        == "ipc:///run/x/control.sock"
    assert control_endpoint_for("tcp://127.0.0.1:5", "ipc:///tmp/d/zap.sock") \
        == "ipc:///tmp/d/control.sock"
    assert control_endpoint_for("ipc:///run/x/app.sock", "ipc:///tmp/d/zap.sock") \
        == "ipc:///run/x/app.control.sock"
