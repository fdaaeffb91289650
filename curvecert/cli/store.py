"""`curvecert store ...`: add, remove, list and check the certificates of a store directory.

The store directory is `--store DIR` (on `store` or on the sub-command), else
`$CURVECERT_STORE`, else `$XDG_CONFIG_HOME/curvecert/store` (`~/.config/curvecert/store`);
see docs/store.md. Data goes to stdout (paths written or removed, the list, the
findings, or `--json`); status and the progress bar go to stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from curvecert import store as store_mod
from curvecert.certs.cert import Certificate
from curvecert.certs.fileio import read_bytes
from curvecert.certs.verify import Finding
from curvecert.cli import Verdict, render
from curvecert.errors import FileExists, StoreError
from curvecert.formats.sanitize import escape, field
from curvecert.store.etcdurl import is_etcd_url

__all__ = ["store"]

_STORE_HELP = ("Store directory, or etcd://HOST:PORT[,...]/PREFIX (docs/etcd.md). "
               "Default: $CURVECERT_STORE, else "
               "$XDG_CONFIG_HOME/curvecert/store (~/.config/curvecert/store).")


def _err_console() -> Console:
    return render.console(stderr=True)


def _store_dir(ctx: click.Context, local: str | None) -> str:
    """The sub-command's --store, else the group's (which includes $CURVECERT_STORE)."""
    obj = ctx.find_object(dict) or {}
    return str(local or obj.get("store_dir") or store_mod.default_directory())


@contextmanager
def _progress(directory: str) -> Iterator[Callable[[int], None] | None]:
    """A spinner with a file count on stderr, only when stderr is a terminal."""
    console = Console(stderr=True)  # auto-detects the terminal (render's may force "no")
    if not console.is_terminal:
        yield None
        return
    with Progress(SpinnerColumn(), TextColumn("scanning {task.fields[where]}"),
                  TextColumn("{task.completed} files"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("scan", total=None, where=directory)
        yield lambda n: bar.update(task, completed=n)


def _scan(directory: str, *, must_exist: bool = True) -> store_mod.Snapshot:
    if is_etcd_url(directory):  # an etcd prefix (issue 17): read once
        from curvecert.cli import storeetcd

        return storeetcd.snapshot(directory)
    if not must_exist and not os.path.lexists(directory):
        return store_mod.Snapshot.empty(directory)  # `add` creates it
    with _progress(directory) as progress:
        # findings are this command's output (or `check`'s), not log noise
        snap = store_mod.scan(directory, progress=progress, log_findings=False)
    if must_exist and not snap.healthy:
        raise StoreError(snap.problem or f"{directory}: cannot read the store")
    return snap


def _store_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--store", "store_dir", metavar="DIR", default=None,
                        type=click.Path(file_okay=False), help=_STORE_HELP)(f)


@click.group("store", epilog="""\b
Examples:
  export CURVECERT_STORE=/etc/app/clients
  curvecert store add alice bob.key
  curvecert store list --json | jq -r '.[].metadata.name'
  curvecert store remove Alice
  curvecert store check || echo "store has problems"
""")
@click.option("--store", "store_dir", metavar="DIR", envvar="CURVECERT_STORE", default=None,
              type=click.Path(file_okay=False), help=_STORE_HELP)
@click.option("--etcd-password-file", metavar="FILE", default=None,
              type=click.Path(dir_okay=False),
              help="File holding the etcd password (for etcd:// stores; docs/etcd.md).")
@click.pass_context
def store(ctx: click.Context, store_dir: str | None, etcd_password_file: str | None) -> None:
    """Manage a directory of trusted public certificates (CZMQ- and pyzmq-readable).

    Every readable certificate file in the directory (sub-directories too) is trusted,
    except dot-files, *_secret and editor temporaries. Files that do not parse, hold a
    secret key, or repeat a key are reported by `store check` and never trusted.
    """
    ctx.ensure_object(dict)
    ctx.obj["store_dir"] = store_dir
    ctx.obj["etcd_password_file"] = etcd_password_file


@store.command("add", epilog="""\b
Examples:
  curvecert store add alice                      # the public file of a pair
  curvecert store add client.key_secret          # a secret file: warns, stores the public part
  ssh host cat .curve/client | curvecert store add -
""")
@click.argument("files", nargs=-1, required=True, metavar="FILE...|-")
@click.option("-f", "--force", is_flag=True,
              help="Replace a stored file for the same key whose metadata differs.")
@_store_option
@click.pass_context
def add(ctx: click.Context, files: tuple[str, ...], force: bool, store_dir: str | None) -> None:
    """Trust certificates: store the PUBLIC part of each FILE (or stdin for -).

    Each certificate goes to <store>/<hex public key>.key, a name CZMQ and pyzmq both
    read. A secret certificate is accepted with a warning and only its public part is
    written. Nothing is written if any FILE does not parse (exit 3) or would replace a
    different stored file without --force (exit 3).
    """
    directory = _store_dir(ctx, store_dir)
    err = _err_console()
    certs: list[tuple[str, Certificate]] = []
    stdin_used = False
    for name in files:
        if name == "-":
            if stdin_used:
                raise click.UsageError("'-' (stdin) may be given only once")
            stdin_used = True
            data = sys.stdin.buffer.read(store_mod.MAX_FILE_SIZE + 1)
            label = "<stdin>"
        else:
            data = read_bytes(name, limit=store_mod.MAX_FILE_SIZE)
            label = name
        cert = Certificate.parse(data, path=label)
        if cert.has_secret:
            err.print(Text.assemble(("warning: ", "yellow"), f"{escape(label)} holds a SECRET key; "
                                    "only its public part is stored (keep the secret file "
                                    "out of the store)"))
        certs.append((label, cert.public_only()))
    if is_etcd_url(directory):  # one transaction per key (issue 17)
        from curvecert.cli import storeetcd

        storeetcd.add(directory, certs, force=force)
        return
    # check every target before writing anything
    snap = _scan(directory, must_exist=False)
    plan: list[tuple[str, Certificate, str]] = []
    for label, cert in certs:
        path = os.path.join(directory, store_mod.store_filename(cert.public_key))
        rel = os.path.basename(path)
        present = snap.lookup(cert.public_key)
        if present is not None and present.relpath != rel:
            err.print(f"{escape(label)}: {cert.public_txt} is already trusted from "
                      f"{escape(present.file)}; nothing written")
            continue
        if os.path.lexists(path) and not force:
            try:
                existing = Certificate.load(path)
                same = (existing.public_key == cert.public_key and not existing.has_secret
                        and list(existing.meta.items()) == list(cert.meta.items()))
            except Exception:
                same = False
            if not same:
                raise FileExists(path)
        plan.append((label, cert, path))
    for label, cert, path in plan:
        existed = os.path.lexists(path)
        store_mod.add_certificate(directory, cert, force=force)
        state = "replaced" if existed and force else ("unchanged" if existed else "added")
        err.print(f"{escape(label)}: {state} {cert.public_txt} ({cert.fingerprint})")
        click.echo(escape(path))


@store.command("remove", epilog="""\b
Examples:
  curvecert store remove Alice                   # by metadata name
  curvecert store remove SHA256:0jpEC4ST6V8CVXveaS4eHPNrir51uJFDcerubB6hgUU
  curvecert store remove -- '-@o0WQ-7@y%c!wG>hmm2(TdKyWcfm}OlOSUGom{G'
                                   # a Z85 key: quote it, and put -- before it
  curvecert store remove ./old-client            # every stored file with that file's key
""")
@click.argument("selectors", nargs=-1, required=True, metavar="KEY|FINGERPRINT|NAME|FILE...")
@_store_option
@click.pass_context
def remove(ctx: click.Context, selectors: tuple[str, ...], store_dir: str | None) -> None:
    """Stop trusting certificates: delete their files from the store.

    Each selector is a Z85 public key, a fingerprint (SHA256:...), a file in the store, a
    certificate file elsewhere (its key), or a metadata name. A key removes every file
    carrying it (duplicates too). If any selector matches several certificates (exit 2,
    the candidates are listed) or none (exit 3), nothing is removed.
    """
    directory = _store_dir(ctx, store_dir)
    if is_etcd_url(directory):  # one transaction (issue 17)
        from curvecert.cli import storeetcd

        storeetcd.remove(directory, list(selectors))
        return
    snap = _scan(directory)
    removed = store_mod.remove(directory, list(selectors), snapshot=snap)
    err = _err_console()
    for path in removed:
        click.echo(escape(path))
    err.print(f"removed {len(removed)} file(s) from {escape(directory)}")


def _entry_json(entry: store_mod.Entry) -> dict[str, Any]:
    return {"public_key": entry.public_txt, "fingerprint": entry.fingerprint,
            "file": entry.file, "metadata": entry.meta}


@store.command("list", epilog="""\b
Examples:
  curvecert store list
  curvecert store list --json | jq -r '.[] | [.fingerprint, .metadata.name] | @tsv'
""")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@_store_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool, store_dir: str | None) -> None:
    """List the trusted certificates (key, fingerprint, file, metadata)."""
    directory = _store_dir(ctx, store_dir)
    snap = _scan(directory)
    if as_json:
        render.print_json([_entry_json(e) for e in snap])
        return
    out = render.console()
    if out.is_terminal:
        table = Table("public key (Z85)", "fingerprint", "name", "file", box=None)
        for e in snap:
            table.add_row(Text(e.public_txt, style="cyan"), Text(e.fingerprint),
                          Text(escape(e.meta.get("name", ""))), Text(escape(e.relpath)))
        out.print(table)
    else:
        for e in snap:
            name = e.meta.get("name")
            click.echo(f"{e.public_txt}  {e.fingerprint}  {escape(e.relpath)}"
                       + (f"  name={field(name)}" if name is not None else ""))
    _err_console().print(f"{len(snap)} trusted certificate(s) in {escape(directory)}"
                         + (f", {len(snap.findings)} finding(s): run `curvecert store check`"
                            if snap.findings else ""))


@store.command("check", epilog="""\b
Exit status: 0 clean, 1 findings, 3 the store cannot be read.

\b
Examples:
  curvecert store check
  curvecert store check --json | jq -r '.[] | "\\(.path): \\(.message)"'
""")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as a JSON array.")
@_store_option
@click.pass_context
def check(ctx: click.Context, as_json: bool, store_dir: str | None) -> None:
    """Report every problem in the store; exit 1 if there is any.

    Problems: files that do not parse, hold a secret key, repeat a key (the file that
    sorts first wins), cannot be read; warnings for metadata that ZAP cannot carry.
    """
    directory = _store_dir(ctx, store_dir)
    snap = _scan(directory)
    findings = [Finding(path=f.path, line=f.line, severity=f.severity, code=f.code,
                        message=f.message) for f in snap.findings]
    if as_json:
        render.print_json(render.findings_to_json(findings))
    elif findings:
        render.console().print(render.render_findings(findings))
    err = _err_console()
    if findings:
        err.print(Text(f"{len(findings)} finding(s) in {escape(directory)}; {len(snap)} "
                       "certificate(s) trusted", style="bold red"))
        raise Verdict()
    err.print(Text(f"ok: {len(snap)} certificate(s) trusted in {escape(directory)}, no findings",
                   style="green"))


def _register_sync() -> None:
    from curvecert.cli.storeetcd import sync

    store.add_command(sync)


_register_sync()  # `store sync SRC DST` (issue 17)
