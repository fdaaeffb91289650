"""The view behind `curvecert top`: polls `status` and recent denials, renders with rich.

On a terminal a `rich.live.Live` view redraws in place; otherwise (or with `--once`) one
plain block of text per refresh, so `curvecert top | tee` makes a readable log. Every
value that came from the daemon is escaped (`curvecert.formats.sanitize`).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from curvecert.cli.replytext import dicts, etcd_line, etcd_short, number
from curvecert.formats.sanitize import escape
from curvecert.serve.control import ControlClient

__all__ = ["Rates", "run"]

_STATUSES = ("200", "300", "400", "500")
_STYLE = {"200": "green", "300": "yellow", "400": "red", "500": "bold red"}


class Rates:
    """Decisions per second by status, from the difference between two `status` replies."""

    def __init__(self) -> None:
        """No previous sample yet."""
        self._last: tuple[float, dict[str, int]] | None = None

    @staticmethod
    def totals(st: dict[str, Any]) -> dict[str, int]:
        """Decisions since start by status, summed over mechanisms."""
        out = dict.fromkeys(_STATUSES, 0)
        decisions = st.get("decisions", {})
        for by_status in (decisions.values() if isinstance(decisions, dict) else ()):
            for status, n in (by_status.items() if isinstance(by_status, dict) else ()):
                if isinstance(n, int) and not isinstance(n, bool):
                    out[str(status)] = out.get(str(status), 0) + n
        return out

    def update(self, st: dict[str, Any], now: float) -> dict[str, float]:
        """Per-second rates since the previous call (zeros on the first)."""
        totals = self.totals(st)
        rates = dict.fromkeys(totals, 0.0)
        if self._last is not None:
            then, before = self._last
            dt = max(now - then, 1e-6)
            rates = {s: max(0, n - before.get(s, 0)) / dt for s, n in totals.items()}
        self._last = (now, totals)
        return rates


def _plain(st: dict[str, Any], totals: dict[str, int], rates: dict[str, float],
           denials: list[dict[str, Any]]) -> str:
    head = "healthy" if st.get("healthy") is True else "UNHEALTHY"
    lines = [f"serve-auth pid {number(st.get('pid'))} {head} "
             f"up {number(st.get('uptime', 0), '.0f')}s "
             f"generation {number(st.get('generation'))}",
             "decisions " + " ".join(f"{s}={totals.get(s, 0)} ({rates.get(s, 0.0):.1f}/s)"
                                     for s in _STATUSES)]
    for dom in dicts(st.get("domains", [])):
        for store in dicts(dom.get("stores", [])):
            ok = "healthy" if store.get("healthy") is True else "UNHEALTHY"
            lines.append(f"store {escape(str(store.get('path')))} "
                         f"{number(store.get('certificates'))} certs {ok}")
            if store.get("backend") == "etcd":
                lines.append(f"  {etcd_line(store)}")
    for d in dicts(denials):
        lines.append(f"denied {number(d.get('status'))} {escape(str(d.get('mechanism')))} "
                     f"{escape(str(d.get('address') or '?'))} "
                     f"{escape(str(d.get('reason') or ''))}")
    return "\n".join(lines)


def _rich(st: dict[str, Any], totals: dict[str, int], rates: dict[str, float],
          denials: list[dict[str, Any]]) -> Group:
    head = Text()
    head.append("serve-auth ", style="bold")
    healthy = st.get("healthy") is True
    head.append(f"pid {number(st.get('pid'))}  ")
    head.append("healthy" if healthy else "UNHEALTHY", style="green" if healthy else "bold red")
    head.append(f"  up {number(st.get('uptime', 0), '.0f')}s  "
                f"generation {number(st.get('generation'))}")
    counts = Table(title="decisions", title_justify="left", expand=False)
    counts.add_column("status")
    counts.add_column("total", justify="right")
    counts.add_column("per s", justify="right")
    for s in _STATUSES:
        counts.add_row(Text(s, style=_STYLE[s]), str(totals.get(s, 0)),
                       f"{rates.get(s, 0.0):.1f}")
    stores = Table(title="stores", title_justify="left")
    columns = ["domain", "path", "certs", "health"]
    etcd = any(store.get("backend") == "etcd" for dom in dicts(st.get("domains", []))
               for store in dicts(dom.get("stores", [])))
    for col in [*columns, "etcd"] if etcd else columns:
        stores.add_column(col)
    for dom in dicts(st.get("domains", [])):
        for store in dicts(dom.get("stores", [])):
            ok = store.get("healthy") is True
            # Text, never a markup string: "[link=...]" from a reply must stay text
            cells = [Text(escape(str(dom.get("name")))), Text(escape(str(store.get("path")))),
                     Text(number(store.get("certificates"))),
                     Text("healthy" if ok else "UNHEALTHY",
                          style="green" if ok else "bold red")]
            if etcd:
                cells.append(Text(etcd_short(store),
                                  style="" if store.get("connected") else "bold red"))
            stores.add_row(*cells)
    last = Table(title="last denials", title_justify="left")
    for col in ("time", "status", "mech", "address", "reason"):
        last.add_column(col)
    for d in dicts(denials):
        last.add_row(Text(escape(str(d.get("time", "?")))[11:23]),
                     Text(number(d.get("status")), style=_STYLE.get(str(d.get("status")), "")),
                     Text(escape(str(d.get("mechanism")))),
                     Text(escape(str(d.get("address") or "?"))),
                     Text(escape(str(d.get("reason") or ""))))
    return Group(head, counts, stores, last)


def _sample(client: ControlClient, rates: Rates) -> tuple[Any, ...]:
    st = client.request({"command": "status"})
    denials = client.request({"command": "decisions", "denied": True, "last": 8})
    return st, Rates.totals(st), rates.update(st, time.monotonic()), denials.get("items", [])


def run(client: ControlClient, *, interval: float, once: bool, live: bool) -> None:
    """Refresh every `interval` seconds until KeyboardInterrupt (or once)."""
    rates = Rates()
    if not live:
        while True:
            print(_plain(*_sample(client, rates)), flush=True)
            if once:
                return
            time.sleep(interval)
            print(flush=True)
    from rich.live import Live

    from curvecert.cli import render

    console = render.console()
    with Live(_rich(*_sample(client, rates)), console=console, auto_refresh=False,
              screen=False, transient=False) as view:
        while True:
            time.sleep(interval)
            view.update(_rich(*_sample(client, rates)), refresh=True)
