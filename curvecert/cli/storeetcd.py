"""`curvecert store ...` on an etcd prefix, and `curvecert store sync SRC DST`.

`curvecert.cli.store` hands a `--store etcd://HOST:PORT[,...]/PREFIX` to the functions
here: `add` and `remove` are etcd transactions (`curvecert.store.etcdops`), `list` and
`check` read the prefix once into the same `Snapshot` a directory gives. `sync` copies
the trusted certificates of one store (a directory or an etcd prefix) into another.
Connection options come from `CURVECERT_ETCD_*` and `--etcd-password-file` (docs/etcd.md);
no secret is ever taken from the command line.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from curvecert import store as store_mod
from curvecert.certs.cert import Certificate
from curvecert.certs.fileio import PUBLIC_MODE, atomic_write, read_bytes
from curvecert.cli import render
from curvecert.errors import FileExists, StoreError
from curvecert.formats import z85
from curvecert.store import bulk
from curvecert.store.etcdurl import EtcdOptions, is_etcd_url, parse_url

if TYPE_CHECKING:  # etcd3gw (via etcdops) is imported only when an etcd store is used
    from curvecert.store.etcdops import EtcdWriter

__all__ = ["add", "options", "remove", "snapshot", "sync"]


def options(ctx: click.Context | None = None) -> EtcdOptions:
    """etcd options: the environment, then the `store` group's `--etcd-password-file`."""
    ctx = ctx or click.get_current_context(silent=True)
    obj = (ctx.find_object(dict) if ctx is not None else None) or {}
    return EtcdOptions.from_env().with_password_file(obj.get("etcd_password_file"))


def _writer(url: str) -> EtcdWriter:
    from curvecert.store.etcdops import EtcdWriter

    return EtcdWriter(parse_url(url), options())


def snapshot(url: str) -> store_mod.Snapshot:
    """The prefix read once (`EtcdUnavailable`, exit 3, when etcd cannot be reached)."""
    _rev, snap, _trusted = _writer(url).read()
    return snap


def add(url: str, certs: list[tuple[str, Certificate]], *, force: bool
        ) -> list[bulk.ImportItem]:
    """Store each certificate; checked first, so nothing is written if one would be
    refused (a different certificate under the key, without `force`)."""
    writer = _writer(url)
    if not force:
        for _label, cert in certs:
            if writer.would_replace(cert):
                raise FileExists(f"{writer.url}/{cert.public_key.hex()}")
    items = []
    for label, cert in certs:
        state = writer.add(cert.public_only(), force=force)
        items.append(bulk.ImportItem(label, f"{writer.url}/{cert.public_key.hex()}",
                                     cert.public_txt, cert.fingerprint, state))
    return items


def remove(url: str, selectors: list[str]) -> list[str]:
    """Delete the keys the selectors designate (resolved like files: key, fingerprint,
    metadata name, or a certificate file's key), all in one transaction; their names."""
    writer = _writer(url)
    _rev, snap, _trusted = writer.read()
    targets: list[bytes] = []
    for sel in selectors:
        for rel in store_mod.resolve(snap, sel):
            key = bytes.fromhex(os.path.basename(rel))
            if key not in targets:
                targets.append(key)
    return writer.remove(targets)


# --- sync -----------------------------------------------------------------------------------

# key -> (certificate, the exact bytes stored, the file it came from or None for etcd)
_Certs = dict[bytes, tuple[Certificate, bytes, str | None]]
_Plan = list[tuple[str, bytes, Certificate, bytes]]


def _read(spec: str) -> tuple[str, _Certs]:
    """`(display name, trusted certificates)` of a store directory or an etcd prefix."""
    if is_etcd_url(spec):
        writer = _writer(spec)
        return str(writer.url), {k: (c, v, None) for k, (c, v) in writer.certificates().items()}
    directory = os.path.abspath(spec)
    if not os.path.lexists(directory):
        return directory, {}
    snap = store_mod.scan(directory, log_findings=False)
    if not snap.healthy:
        raise StoreError(snap.problem or f"{directory}: cannot read the store")
    out: _Certs = {}
    for e in snap:
        raw = read_bytes(e.file, limit=store_mod.MAX_FILE_SIZE)
        out[e.public_key] = (Certificate.parse(raw, path=e.file), raw, e.file)
    return directory, out


def _plan(src: _Certs, dst: _Certs, delete: bool) -> _Plan:
    """What to do per key: add, update, unchanged (same key and metadata), delete."""
    plan: _Plan = []
    for key, (cert, raw, _file) in sorted(src.items()):
        have = dst.get(key)
        action = ("add" if have is None else
                  "unchanged" if _same(have[0], cert) else "update")
        plan.append((action, key, cert, raw))
    if delete:
        plan.extend(("delete", key, dst[key][0], b"") for key in sorted(set(dst) - set(src)))
    return plan


def _apply(dst_spec: str, plan: _Plan, dst: _Certs) -> None:
    """Carry out `plan` on the destination; values and files are copied byte for byte."""
    changes = [p for p in plan if p[0] != "unchanged"]
    if not changes:
        return
    if is_etcd_url(dst_spec):
        writer = _writer(dst_spec)
        for action, _key, cert, raw in changes:
            if action != "delete":
                writer.add(cert, force=action == "update", value=raw)
        writer.remove([key for action, key, _c, _r in changes if action == "delete"])
        return
    directory = os.path.abspath(dst_spec)
    os.makedirs(directory, exist_ok=True)
    for action, key, _cert, raw in changes:
        if action in ("add", "update"):
            have = dst.get(key)
            path = (have[2] if have is not None and have[2] else
                    os.path.join(directory, store_mod.store_filename(key)))
            atomic_write(path, raw, mode=PUBLIC_MODE, overwrite=action == "update")
    deletions = [z85.encode(key) for action, key, _c, _r in changes if action == "delete"]
    if deletions:
        store_mod.remove(directory, deletions)


@click.command("sync", epilog="""\b
Examples:
  curvecert store sync /etc/curvecert/clients etcd://10.0.0.1:2379,10.0.0.2:2379/curvecert
  curvecert store sync --dry-run --delete etcd://127.0.0.1:2379/curvecert ./exported
""")
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--delete", is_flag=True,
              help="Also remove from DST the certificates that SRC does not have.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the plan).")
def sync(source: str, destination: str, dry_run: bool, delete: bool, as_json: bool) -> None:
    """Make DST trust what SRC trusts: each a store directory or an etcd:// prefix.

    Certificates missing from DST are added and different ones updated (written as
    curvecert's public certificate files, CZMQ- and pyzmq-readable); with --delete, DST's
    certificates that SRC lacks are removed. Exit 3 if either store cannot be read.
    """
    src_name, src = _read(source)
    dst_name, dst = _read(destination)
    if src_name == dst_name:
        raise click.UsageError("SRC and DST are the same store")
    plan = _plan(src, dst, delete)
    if not dry_run:
        _apply(destination, plan, dst)
    counts = {a: sum(1 for p in plan if p[0] == a)
              for a in ("add", "update", "delete", "unchanged")}
    if as_json:
        render.print_json({"source": src_name, "destination": dst_name, "dry_run": dry_run,
                           "counts": counts, "items": [_item(a, k, c) for a, k, c, _r in plan]})
    else:
        for action, _key, cert, _raw in plan:
            if action != "unchanged":
                click.echo(f"{action:<7} {cert.public_txt}  {cert.fingerprint}")
    verb = "would change" if dry_run else "changed"
    render.console(stderr=True).print(
        f"{verb} {dst_name}: {counts['add']} added, {counts['update']} updated, "
        f"{counts['delete']} deleted, {counts['unchanged']} unchanged")


def _item(action: str, key: bytes, cert: Certificate) -> dict[str, Any]:
    return {"action": action, "public_key": cert.public_txt, "public_key_hex": key.hex(),
            "fingerprint": cert.fingerprint, "metadata": dict(cert.meta)}


def _same(a: Certificate, b: Certificate) -> bool:
    from curvecert.store.etcdops import same_certificate

    return same_certificate(a, b)
