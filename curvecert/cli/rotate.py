"""`curvecert rotate PATH`: server-key rotation with an overlap period (docs/rotation.md).

A rotation keeps up to three certificate pairs side by side, named after the current one:

| files | role |
| --- | --- |
| `PATH`, `PATH_secret` | the current key (what clients pin today) |
| `PATH.next`, `PATH.next_secret` | the next key, made by `rotate PATH` |
| `PATH.prev`, `PATH.prev_secret` | the old key after `rotate PATH --promote`, until `--retire` |

Steps: `rotate PATH` makes the next pair (the current metadata is copied, validity
dates are not; `--expires` sets new ones) → serve both keys (`serve-auth` with two
`--front`/`--server-cert` pairs) → distribute `PATH.next` → clients switch →
`rotate PATH --promote` (the next pair becomes `PATH`, the old one `PATH.prev`) → serve
only `PATH` → `rotate PATH --retire` deletes `PATH.prev` and its secret.
`rotate PATH --status` shows which of the three pairs exist.

Every file is written or moved atomically (`curvecert.certs.fileio`), secrets 0600, and
an existing file is never replaced unless `--force` is given.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import click

from curvecert.certs import certfile, validity
from curvecert.certs.cert import Certificate
from curvecert.certs.fileio import fsync_dir
from curvecert.cli import render
from curvecert.cli.certs import validity_options
from curvecert.errors import CertificateError, FileExists, OperationalError

__all__ = ["rotate", "rotation_paths"]

_CONTEXT = {"help_option_names": ["-h", "--help"]}
NEXT_SUFFIX = ".next"
PREV_SUFFIX = ".prev"


def rotation_paths(path: str) -> dict[str, str]:
    """The public files of the three roles: `{"current": PATH, "next": ..., "prev": ...}`."""
    return {"current": path, "next": path + NEXT_SUFFIX, "prev": path + PREV_SUFFIX}


def _describe(role: str, path: str) -> dict[str, Any]:
    spath = certfile.secret_path(path)
    out: dict[str, Any] = {"role": role, "path": path, "secret_path": spath,
                           "exists": os.path.exists(path),
                           "has_secret_file": os.path.exists(spath)}
    if out["exists"]:
        cert = Certificate.load(path)
        out["public_key"] = cert.public_txt
        out["public_key_hex"] = cert.public_key.hex()
        out["fingerprint"] = cert.fingerprint
        out.update(validity.to_json(validity.from_meta(cert.meta)))
    return out


def _move_pair(src: str, dst: str, *, force: bool) -> None:
    """Move the pair `src`/`src_secret` to `dst`/`dst_secret` (secret first, no clobber
    unless `force`); the source pair must be complete."""
    pairs = [(certfile.secret_path(src), certfile.secret_path(dst)), (src, dst)]
    for s, _ in pairs:
        if not os.path.exists(s):
            raise OperationalError(f"{s}: missing; cannot move an incomplete pair")
    if not force:
        for _, d in pairs:
            if os.path.lexists(d):
                raise FileExists(d)
    for s, d in pairs:
        try:
            if force:
                os.replace(s, d)
            else:
                os.link(s, d)
                os.unlink(s)
        except OSError as exc:
            raise OperationalError(f"{s} -> {d}: cannot move: {exc.strerror or exc}") from exc
    fsync_dir(os.path.dirname(os.path.abspath(dst)))


def _prepare(path: str, metadata: list[tuple[str, str]], force: bool) -> dict[str, Any]:
    paths = rotation_paths(path)
    if not os.path.exists(path):
        raise OperationalError(f"{path}: no current certificate to rotate (create it with "
                               "`curvecert new`)")
    current = Certificate.load(path)
    if not metadata:
        metadata = [(n, v) for n, v in current.meta.items()
                    if n not in (validity.NOT_BEFORE, validity.NOT_AFTER)]
    cert = Certificate.new(metadata)
    certfile.save(cert, paths["next"], force=force)
    return _describe("next", paths["next"])


def _promote(path: str, force: bool) -> list[dict[str, Any]]:
    paths = rotation_paths(path)
    if not os.path.exists(paths["next"]):
        raise OperationalError(f"{paths['next']}: no next key to promote (run "
                               f"`curvecert rotate {path}` first)")
    _move_pair(path, paths["prev"], force=force)
    try:
        _move_pair(paths["next"], path, force=False)
    except Exception:
        with contextlib.suppress(Exception):  # put the current pair back
            _move_pair(paths["prev"], path, force=False)
        raise
    return [_describe("current", path), _describe("prev", paths["prev"])]


def _retire(path: str) -> list[str]:
    prev = rotation_paths(path)["prev"]
    removed = []
    for p in (certfile.secret_path(prev), prev):
        try:
            os.unlink(p)
            removed.append(p)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OperationalError(f"{p}: cannot remove: {exc.strerror or exc}") from exc
    if not removed:
        raise OperationalError(f"{prev}: nothing to retire (no previous key)")
    fsync_dir(os.path.dirname(os.path.abspath(prev)))
    return removed


@click.command(context_settings=_CONTEXT, epilog="""\b
Files: PATH (current), PATH.next (made by this command), PATH.prev (the old
key after --promote, until --retire); each with its _secret file.

\b
Examples:
  curvecert rotate server                  # make server.next + server.next_secret
  curvecert rotate server --expires 365d   # ... valid for a year
  curvecert rotate server --status --json
  curvecert rotate server --promote        # server.next -> server, server -> server.prev
  curvecert rotate server --retire         # delete server.prev and server.prev_secret
\b
The procedure, with what to watch at each step: docs/rotation.md""")
@click.argument("path", type=click.Path(dir_okay=False, path_type=str))
@click.option("--promote", "action", flag_value="promote",
              help="Make the next key current; keep the old one as PATH.prev.")
@click.option("--retire", "action", flag_value="retire",
              help="Delete PATH.prev and PATH.prev_secret (the old key).")
@click.option("--status", "action", flag_value="status",
              help="Show the current, next and previous keys.")
@click.option("-n", "--name", help="Metadata name of the next key (default: copy current).")
@click.option("-m", "--meta", multiple=True, metavar="KEY=VALUE",
              help="Metadata of the next key, replacing the copied metadata (repeatable).")
@click.option("--expires", metavar="DURATION", help="Next key valid for DURATION (90d).")
@click.option("--not-after", metavar="TIME", help="Next key's expiry, ISO-8601 UTC.")
@click.option("--not-before", metavar="TIME", help="Next key's start of validity.")
@click.option("-f", "--force", is_flag=True,
              help="Replace an existing PATH.next (or PATH.prev with --promote).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (items).")
def rotate(path: str, action: str | None, name: str | None, meta: tuple[str, ...],
           expires: str | None, not_after: str | None, not_before: str | None,
           force: bool, as_json: bool) -> None:
    """Rotate a server key with an overlap: make PATH.next, promote it, retire the old."""
    from curvecert.cli.certs import _parse_meta

    if path.endswith(certfile.SECRET_SUFFIX):
        raise click.BadParameter(f"PATH names the public file (drop {certfile.SECRET_SUFFIX!r})",
                                 param_hint="PATH")
    dated = expires or not_after or not_before
    if action is not None and (name or meta or dated):
        raise click.UsageError("--name/--meta/--expires/--not-after/--not-before only apply "
                               "when making the next key")
    items: list[dict[str, Any]]
    message: str
    if action == "status":
        items = [_describe(role, p) for role, p in rotation_paths(path).items()]
        message = ""
    elif action == "promote":
        items = _promote(path, force)
        message = (f"promoted {path}{NEXT_SUFFIX} to {path}; the old key is now "
                   f"{path}{PREV_SUFFIX}. Serve only {path}_secret once clients switched, "
                   f"then `curvecert rotate {path} --retire`.")
    elif action == "retire":
        removed = _retire(path)
        items = [{"role": "prev", "path": p, "removed": True} for p in removed]
        message = f"removed {', '.join(removed)}"
    else:
        fixed = [("name", name)] if name is not None else []
        metadata = _parse_meta(fixed, meta) if (fixed or meta) else []
        try:
            metadata = validity_options(metadata, expires=expires, not_after=not_after,
                                        not_before=not_before)
        except CertificateError as exc:  # pragma: no cover - validity_options maps these
            raise click.UsageError(str(exc)) from None
        if dated and not (fixed or meta):
            current = Certificate.load(path)
            keep = [(n, v) for n, v in current.meta.items()
                    if n not in (validity.NOT_BEFORE, validity.NOT_AFTER)]
            metadata = keep + metadata
        items = [_prepare(path, metadata, force)]
        message = (f"wrote {path}{NEXT_SUFFIX} and {path}{NEXT_SUFFIX}_secret; serve both "
                   f"keys, then give clients {path}{NEXT_SUFFIX} (docs/rotation.md)")
    if as_json:
        render.print_json({"path": path, "items": items})
        return
    if message:
        render.status("INFO", message)
    for item in items:
        if "public_key" in item:
            until = f"  until {item['not_after']}" if item.get("not_after") else ""
            click.echo(f"{item['role']:<8} {item['path']}  {item['public_key']}  "
                       f"{item['fingerprint']}{until}")
        elif action == "status":
            click.echo(f"{item['role']:<8} {item['path']}  (none)")
