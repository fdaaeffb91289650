"""`curvecert store ...`: add, remove, list and check the certificates of a store directory.

The store directory is `--store DIR` (on `store` or on the sub-command), else
`$CURVECERT_STORE`, else `$XDG_CONFIG_HOME/curvecert/store` (`~/.config/curvecert/store`);
see docs/store.md. Data goes to stdout (paths written or removed, the list, the
findings, or `--json`); status and the progress bar go to stderr.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from curvecert import store as store_mod
from curvecert.certs import validity
from curvecert.certs.cert import Certificate
from curvecert.certs.fileio import PUBLIC_MODE, atomic_write
from curvecert.certs.verify import Finding
from curvecert.cli import Verdict, render
from curvecert.errors import CertificateError, OperationalError, StoreError
from curvecert.formats.sanitize import escape, field
from curvecert.store import bulk
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


def _scan(directory: str, *, must_exist: bool = True,
          strict: bool = False) -> store_mod.Snapshot:
    if is_etcd_url(directory):  # an etcd prefix (issue 17): read once
        from curvecert.cli import storeetcd

        return storeetcd.snapshot(directory)
    if not must_exist and not os.path.lexists(directory):
        return store_mod.Snapshot.empty(directory)  # `add` creates it
    with _progress(directory) as progress:
        # findings are this command's output (or `check`'s), not log noise
        snap = store_mod.scan(directory, progress=progress, log_findings=False,
                              strict=strict)
    if must_exist and not snap.healthy:
        raise StoreError(snap.problem or f"{directory}: cannot read the store")
    return snap


def _findings(snap: store_mod.Snapshot) -> list[Finding]:
    problem = ([Finding(path=snap.directory, line=None, severity="error", code="unreadable",
                        message=snap.problem)] if snap.problem else [])
    return problem + [Finding(path=f.path, line=f.line, severity=f.severity, code=f.code,
                              message=f.message) for f in snap.findings]


def store_findings(directory: str, *, strict: bool = False) -> list[Finding]:
    """What `store check` reports about `directory` (`verify DIR` uses it)."""
    return _findings(store_mod.scan(directory, log_findings=False, strict=strict))


def _store_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--store", "store_dir", metavar="DIR", default=None,
                        type=click.Path(file_okay=False), help=_STORE_HELP)(f)


@click.group("store", epilog="""\b
Examples:
  export CURVECERT_STORE=/etc/app/clients
  curvecert store add alice bob.key
  curvecert store list --json | jq -r '.items[].metadata.name'
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


def _bar(total_hint: str) -> Any:
    """A rich progress bar on stderr for a bulk write, or None when stderr is no terminal."""
    console = Console(stderr=True)
    if not console.is_terminal:
        return None
    return Progress(SpinnerColumn(), TextColumn(total_hint), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                    transient=True)


def _item_json(item: bulk.ImportItem) -> dict[str, Any]:
    out: dict[str, Any] = {"path": item.path, "public_key": item.public_key,
                           "fingerprint": item.fingerprint, "state": item.state,
                           "source": item.label}
    if item.note:
        out["note"] = item.note
    return out


@store.command("add", epilog="""\b
Examples:
  curvecert store add alice                      # the public file of a pair
  curvecert store add client.key_secret          # a secret file: warns, stores the public part
  curvecert store add ./exported-clients/        # every certificate in a directory
  curvecert store add clients.tar.gz keys.jsonl  # archives and JSON lines, in bulk
  ssh host cat .curve/client | curvecert store add -
""")
@click.argument("files", nargs=-1, required=True, metavar="FILE|DIR|TAR|JSONL...|-",
                type=click.Path(allow_dash=True, path_type=str))
@click.option("-f", "--force", is_flag=True,
              help="Replace a stored file for the same key whose metadata differs.")
@click.option("--format", "fmt", type=click.Choice(["auto", "cert", "tar", "jsonl"]),
              default="auto", show_default=True,
              help="How to read FILE and stdin (auto: tar, JSON lines or a certificate).")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"store": DIR, "items": [...], "findings": [...]}.')
@_store_option
@click.pass_context
def add(ctx: click.Context, files: tuple[str, ...], force: bool, fmt: str, as_json: bool,
        store_dir: str | None) -> None:
    """Trust certificates: store the PUBLIC part of each one given (stdin for -).

    A FILE is a certificate, a tar archive or JSON lines ({"public_key": Z85, "metadata":
    {...}} per line); a DIR is read with the store's rules (a file in it that does not
    parse or is not a regular file is an error, as is a DIR with none). Each goes to
    <store>/<hex public key>.key, a name CZMQ and pyzmq both read; a secret certificate is
    accepted with a warning and only its public part is written. All are written as one
    batch with one disk barrier, never a partial file. Nothing is written if any input
    does not parse or holds an unusable key (exit 3) or would replace a different stored
    file without --force (exit 3).
    """
    directory = _store_dir(ctx, store_dir)
    if files.count("-") > 1:
        raise click.UsageError("'-' (stdin) may be given only once")
    warnings: list[Finding] = []
    certs: list[tuple[str, Certificate]] = []
    for label, cert in bulk.read_sources(files, fmt=fmt,  # type: ignore[arg-type]
                                         stdin=sys.stdin.buffer):
        if cert.has_secret:
            warnings.append(Finding(label, None, "warning", "secret-key-input",
                                    "holds a SECRET key; only its public part is stored "
                                    "(keep the secret file out of the store)"))
            if not as_json:
                render.status("WARNING", f"{label} holds a SECRET key; only its public part "
                              "is stored (keep the secret file out of the store)")
        certs.append((label, cert))
    etcd = is_etcd_url(directory)  # issue 17: an etcd prefix, one transaction per key
    snap = None if etcd else _scan(directory, must_exist=False)
    bar = _bar("writing") if len(certs) > 1000 else None
    if etcd:
        from curvecert.cli import storeetcd

        items = storeetcd.add(directory, certs, force=force)
    elif bar is None:
        items = bulk.import_certificates(directory, certs, force=force, snapshot=snap)
    else:
        with bar:
            task = bar.add_task("write", total=len(certs))
            items = bulk.import_certificates(
                directory, certs, force=force, snapshot=snap,
                progress=lambda n, total: bar.update(task, completed=n, total=total))
    if as_json:
        render.print_json({"store": directory if etcd else os.path.abspath(directory),
                           "items": [_item_json(i) for i in items],
                           "findings": render.findings_to_json(warnings)})
        return
    many = len(items) > 20
    for item in items:
        if item.state == "skipped":
            render.status("WARNING", f"{item.label}: {item.public_key} skipped: {item.note}")
            continue
        if not many:
            render.status("INFO", f"{item.label}: {item.state} {item.public_key} "
                                  f"({item.fingerprint})")
        click.echo(escape(item.path))
    if many:
        counts = {s: sum(1 for i in items if i.state == s)
                  for s in ("added", "replaced", "unchanged", "skipped")}
        render.status("INFO", ", ".join(f"{n} {s}" for s, n in counts.items() if n)
                      + f" in {directory}")


@store.command("remove", epilog="""\b
Examples:
  curvecert store remove Alice                   # by metadata name
  curvecert store remove SHA256:0jpEC4ST6V8CVXveaS4eHPNrir51uJFDcerubB6hgUU
  curvecert store remove -- '-@o0WQ-7@y%c!wG>hmm2(TdKyWcfm}OlOSUGom{G'
                                   # a Z85 key: quote it, and put -- before it
  curvecert store remove ./old-client            # every stored file with that file's key
""")
@click.argument("selectors", nargs=-1, required=True, metavar="KEY|FINGERPRINT|NAME|FILE...")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"store": DIR, "items": [{"path": ...}, ...]}.')
@_store_option
@click.pass_context
def remove(ctx: click.Context, selectors: tuple[str, ...], as_json: bool,
           store_dir: str | None) -> None:
    """Stop trusting certificates: delete their files from the store.

    Each selector is a Z85 public key, a fingerprint (SHA256:...), a file in the store, a
    certificate file elsewhere (its key), or a metadata name. A key removes every file
    carrying it (duplicates too). If any selector matches several certificates (exit 2,
    the candidates are listed) or none (exit 3), nothing is removed.
    """
    directory = _store_dir(ctx, store_dir)
    etcd = is_etcd_url(directory)
    if etcd:  # issue 17: the keys, deleted in one transaction
        from curvecert.cli import storeetcd

        removed = storeetcd.remove(directory, list(selectors))
    else:
        snap = _scan(directory)
        removed = store_mod.remove(directory, list(selectors), snapshot=snap)
    if as_json:
        render.print_json({"store": directory if etcd else os.path.abspath(directory),
                           "items": [{"path": p} for p in removed]})
        return
    for path in removed:
        click.echo(escape(path))
    noun = "etcd key" if etcd else "file"
    count = f"{len(removed)} {noun}{'' if len(removed) == 1 else 's'}"
    render.status("INFO", f"removed {count} from {directory}")


def _entry_json(entry: store_mod.Entry) -> dict[str, Any]:
    return {"path": entry.file, "public_key": entry.public_txt,
            "public_key_hex": entry.public_key.hex(), "fingerprint": entry.fingerprint,
            "metadata": entry.meta, **validity.to_json(entry.validity)}


def _finding_json(f: Any) -> dict[str, Any]:
    return {"severity": f.severity, "code": f.code, "message": f.message, "path": f.path,
            "line": f.line}


def _until(entry: store_mod.Entry) -> str:
    """`until T`, `EXPIRED T`, or "" for a certificate without dates (store list)."""
    period = entry.validity
    return "" if period is None else validity.describe(period, time.time())


@store.command("list", epilog="""\b
Examples:
  curvecert store list
  curvecert store list --json | jq -r '.items[] | [.fingerprint, .metadata.name] | @tsv'
""")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"items": [{path, public_key, public_key_hex, fingerprint, '
                   'metadata}], "findings": [...]}.')
@_store_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool, store_dir: str | None) -> None:
    """List the trusted certificates (key, fingerprint, file, metadata)."""
    directory = _store_dir(ctx, store_dir)
    snap = _scan(directory)
    if as_json:
        render.print_json({"items": [_entry_json(e) for e in snap],
                           "findings": [_finding_json(f) for f in snap.findings]})
        return
    out = render.console()
    if out.is_terminal:  # whole keys and fingerprints at any width (cli/tables.py)
        from curvecert.cli.tables import certificate_listing

        out.print(certificate_listing(snap, out, valid=_until))
    else:
        for e in snap:
            name = e.meta.get("name")
            until = _until(e)
            click.echo(f"{e.public_txt}  {e.fingerprint}  {escape(e.relpath)}"
                       + (f"  name={field(name)}" if name is not None else "")
                       + (f"  valid={until.replace(' ', '_')}" if until else ""))
    soonest = snap.next_expiry
    _err_console().print(f"{len(snap)} trusted certificate(s) in {escape(directory)}"
                         + (f", next expiry {validity.format_time(soonest)}" if soonest else "")
                         + (f", {len(snap.findings)} finding(s): run `curvecert store check`"
                            if snap.findings else ""))


@store.command("check", epilog="""\b
Exit status: 0 clean, 1 findings, 3 the store cannot be read.

\b
Examples:
  curvecert store check
  curvecert store check --json | jq -r '.findings[] | "\\(.path): \\(.message)"'
""")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"ok": bool, "path": STORE, "findings": [...]}.')
@click.option("--strict-modes", is_flag=True,
              help="Count files and directories group/others can write as errors and "
                   "show what a store with strict modes would refuse.")
@click.option("--warn-within", metavar="DURATION", default="14d", show_default=True,
              help="Report certificates that expire within DURATION (expires-soon).")
@_store_option
@click.pass_context
def check(ctx: click.Context, as_json: bool, strict_modes: bool, warn_within: str,
          store_dir: str | None) -> None:
    """Report every problem in the store; exit 1 if there is any.

    Problems: files that do not parse, hold a secret key, repeat a key (the file that
    sorts first wins), cannot be read; warnings for metadata that ZAP cannot carry.
    """
    directory = _store_dir(ctx, store_dir)
    snap = _scan(directory, strict=strict_modes)
    findings = _findings(snap)
    try:
        warn = validity.parse_duration(warn_within, what="--warn-within")
    except CertificateError as exc:
        raise click.BadParameter(exc.reason, param_hint="--warn-within") from None
    now = time.time()
    for e in snap:  # expired, not yet valid, expiring soon (certs.validity)
        period = e.validity
        if period is not None:
            findings += [Finding(e.file, None, sev, code, msg)  # type: ignore[arg-type]
                         for sev, code, msg in period.problems(now, warn)]
    if as_json:
        render.print_json({"ok": not findings, "path": str(directory),
                           "findings": render.findings_to_json(findings)})
    elif findings:
        render.console().print(render.render_findings(findings))
    err = _err_console()
    if findings:
        err.print(Text(f"{len(findings)} finding(s) in {escape(directory)}; {len(snap)} "
                       "certificate(s) trusted", style="bold red"))
        raise Verdict()
    err.print(Text(f"ok: {len(snap)} certificate(s) trusted in {escape(directory)}, no findings",
                   style="green"))


@store.command("export", epilog="""\b
Examples:
  curvecert store export -o clients.tar           # the certificate files, as they are
  curvecert store export --format jsonl | gzip > clients.jsonl.gz
  curvecert store export --format jsonl | ssh other curvecert store add -
""")
@click.option("--format", "fmt", type=click.Choice(["tar", "jsonl"]), default="tar",
              show_default=True, help="tar: the files; jsonl: one JSON object per key.")
@click.option("-o", "--output", metavar="FILE", default=None,
              help="Write here (atomically) instead of stdout.")
@click.option("--json", "as_json", is_flag=True,
              help='With -o: print {"store", "output", "format", "count"}.')
@_store_option
@click.pass_context
def export(ctx: click.Context, fmt: str, output: str | None, as_json: bool,
           store_dir: str | None) -> None:
    """Write the trusted certificates as a tar archive or JSON lines (`store add` reads both)."""
    directory = _store_dir(ctx, store_dir)
    if as_json and output is None:
        raise click.UsageError("--json needs -o FILE (the export itself goes to stdout)")
    snap = _scan(directory)
    write = bulk.export_tar if fmt == "tar" else bulk.export_jsonl
    if output is None:
        try:
            count = write(snap, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # the export is the data: losing it is an error
            raise OperationalError("standard output: the reader went away before the "
                                   "export was complete") from None
    else:
        buf = io.BytesIO()
        count = write(snap, buf)
        atomic_write(output, buf.getvalue(), mode=PUBLIC_MODE, overwrite=True)
    if as_json:
        render.print_json({"store": os.path.abspath(directory), "output": output, "format": fmt,
                           "count": count})
    else:
        render.status("INFO", f"exported {count} certificate(s) from {directory}")


def _register_sync() -> None:
    from curvecert.cli.storeetcd import sync

    store.add_command(sync)


_register_sync()  # `store sync SRC DST` (issue 17)
