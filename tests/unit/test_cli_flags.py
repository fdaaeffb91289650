"""One meaning per short option across the whole tool (issue 13).

`-f` once meant `--force` in `new` and `--file` in `passwd`, so
`printf pw | curvecert passwd add admin -f --plaintext` created a password file named
`--plaintext`. This walks every click command, collects every short option with the long
option it stands for, and fails when one letter stands for two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import click

from curvecert.cli import cli


def _commands() -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(cli)
    todo: list[tuple[str, click.Command]] = [("curvecert", cli)]
    while todo:
        path, cmd = todo.pop()
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                todo.append((f"{path} {name}", sub))


def _meanings() -> dict[str, set[str]]:
    seen: dict[str, set[str]] = defaultdict(set)
    for path, cmd in _commands():
        for param in cmd.params:
            if not isinstance(param, click.Option):
                continue
            names = [*param.opts, *param.secondary_opts]
            longs = sorted(n for n in names if n.startswith("--"))
            for short in (n for n in names if len(n) == 2 and n[0] == "-"):
                seen[short].add(f"{longs[0] if longs else param.name} ({path})")
    return seen


def test_every_command_is_visited() -> None:
    paths = {p for p, _ in _commands()}
    for name in ("curvecert new", "curvecert store add", "curvecert passwd add",
                 "curvecert probe", "curvecert export", "curvecert fingerprint"):
        assert name in paths


def test_one_meaning_per_short_option() -> None:
    clashes = {}
    for short, uses in _meanings().items():
        longs = {u.split(" (")[0] for u in uses}
        if len(longs) > 1:
            clashes[short] = sorted(uses)
    assert not clashes, clashes


def test_force_is_f_where_a_command_replaces_things() -> None:
    meanings = _meanings()
    assert {u.split(" (")[0] for u in meanings["-f"]} == {"--force"}
    assert {u.split(" (")[0] for u in meanings["-v"]} == {"--verbose"}
    assert {u.split(" (")[0] for u in meanings["-o"]} == {"--output"}
