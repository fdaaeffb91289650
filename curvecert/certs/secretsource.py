"""Secret keys from where deployments keep them: a file, the environment, an inherited
file descriptor, or a systemd credential.

A *secret reference* is one of

| reference | where the secret comes from |
| --- | --- |
| `PATH` or `file:PATH` | a file (a secret certificate, or a bare Z85 secret key) |
| `env:NAME` | the environment variable NAME |
| `fd:N` | file descriptor N, read to its end and closed (a pipe, `3<secret`) |
| `cred:NAME` | `$CREDENTIALS_DIRECTORY/NAME` (systemd `LoadCredential=`/`SetCredential=`) |

The value is either a bare Z85 secret key (40 characters, surrounding white space
ignored) or the whole text of a secret certificate (CZMQ or pyzmq layout); the public key
is derived or checked either way. A path that really starts with `env:` (and so on) is
written `./env:...` or `file:env:...`.

The secret never appears in an error: a damaged value is reported by its reference, what
kind of damage (length, character class, line number), never by its characters. Nothing
here logs. Only the reference (a variable name, a descriptor number) is ever on argv.

An `fd:` read is bounded: the data must end (the writer closes its end) within
`FD_TIMEOUT` seconds in total and hold at most `MAX_SECRET` bytes, or the reference is
refused with a one-line `OperationalError`; a pipe that is never closed cannot hang the
process. The wait is a `poll`, so a signal handler that raises (SIGINT's default,
`serve-auth` during start-up) ends it at once. `file:` and `cred:` paths are opened
non-blocking and must be regular files (`fileio.read_bytes`), so a FIFO there is refused.
"""

from __future__ import annotations

import math
import os
import select
import time

from curvecert.certs.cert import Certificate
from curvecert.certs.fileio import read_bytes
from curvecert.errors import CertificateError, InvalidKey, OperationalError, ZplSyntaxError
from curvecert.formats import z85

__all__ = ["SCHEMES", "describe", "is_reference", "load_secret", "parse_secret", "split"]

#: Reference schemes besides a plain path.
SCHEMES = ("env", "file", "fd", "cred")
#: The most a secret value may hold (a secret certificate is a few hundred bytes).
MAX_SECRET = 64 * 1024
# fd: references already read in this process: a descriptor can be read only once, and
# a configuration reload asks again.
_FD_CACHE: dict[int, Certificate] = {}
#: The longest an `fd:` read waits, in total, for the end of the data (seconds).
FD_TIMEOUT = 5.0


def split(ref: str) -> tuple[str, str]:
    """`(scheme, rest)` of a reference; a plain path is `("file", path)`.

    Raises `CertificateError` for an empty reference or an empty `rest`.
    """
    scheme, sep, rest = ref.partition(":")
    if not sep or scheme not in SCHEMES:
        scheme, rest = "file", ref
    if not rest:
        raise CertificateError(f"{ref!r}: empty secret reference (use env:NAME, file:PATH, "
                               "fd:N or cred:NAME)")
    return scheme, rest


def is_reference(ref: str) -> bool:
    """True when `ref` names a non-file source (`env:`, `fd:`, `cred:`)."""
    return split(ref)[0] != "file" if ref else False


def describe(ref: str) -> str:
    """The reference as shown in messages (it holds names, never the secret)."""
    scheme, rest = split(ref)
    return rest if scheme == "file" and not ref.startswith("file:") else f"{scheme}:{rest}"


def _read(ref: str) -> bytes:
    scheme, rest = split(ref)
    label = describe(ref)
    if scheme == "file":
        return read_bytes(rest, limit=MAX_SECRET)
    if scheme == "cred":
        base = os.environ.get("CREDENTIALS_DIRECTORY")
        if not base:
            raise OperationalError(f"{label}: $CREDENTIALS_DIRECTORY is not set (systemd sets "
                                   "it for units with LoadCredential= or SetCredential=)")
        if "/" in rest or rest in (".", ".."):
            raise OperationalError(f"{label}: a credential name cannot contain '/'")
        return read_bytes(os.path.join(base, rest), limit=MAX_SECRET)
    if scheme == "env":
        value = os.environb.get(os.fsencode(rest))
        if value is None:
            raise OperationalError(f"{label}: the environment variable {rest} is not set")
        return value
    try:
        fd = int(rest)
        if fd < 0:
            raise ValueError
    except ValueError:
        raise OperationalError(f"{label}: not a file descriptor number") from None
    return _read_fd(fd, label)


def _read_fd(fd: int, label: str) -> bytes:
    """Descriptor `fd` read to its end and closed: at most `MAX_SECRET` bytes, and the end
    must come within `FD_TIMEOUT` seconds (a pipe nobody closes is refused, not waited on).
    No message carries any of the bytes read."""
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + FD_TIMEOUT
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)  # HUP, ERR, NVAL: always
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(math.ceil(remaining * 1000)):
                raise OperationalError(f"{label}: no end of data within {FD_TIMEOUT:g} s; a "
                                       "secret source must be a file or a pipe that is "
                                       "closed after the secret")
            try:
                chunk = os.read(fd, min(8192, MAX_SECRET + 1 - size))
            except BlockingIOError:  # an O_NONBLOCK pipe polled ready, then drained
                continue
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_SECRET:
                raise OperationalError(f"{label}: more than {MAX_SECRET} bytes; not a secret "
                                       "key or certificate")
    except OSError as exc:
        raise OperationalError(f"{label}: cannot read: {exc.strerror or exc}") from None
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return b"".join(chunks)


def parse_secret(data: bytes, label: str) -> Certificate:
    """A secret certificate from a bare Z85 secret key or a secret certificate's text.

    Raises `CertificateError` naming `label` and the kind of damage only.
    """
    stripped = data.strip()
    if not stripped:
        raise CertificateError("empty: expected a Z85 secret key or a secret certificate",
                               path=label)
    if b"\n" not in stripped and not stripped.startswith(b"#"):
        if len(stripped) != z85.KEY_TEXT_LEN:
            raise CertificateError(f"a Z85 secret key has {z85.KEY_TEXT_LEN} characters, this "
                                   f"value has {len(stripped)}", path=label)
        try:
            return Certificate.from_secret(stripped)
        except InvalidKey:
            raise CertificateError("not a Z85 secret key (a character outside the Z85 "
                                   "alphabet, or a group that overflows)", path=label) from None
    hint = f"; `curvecert verify {label}` says more" if os.path.exists(label) else ""
    try:
        cert = Certificate.parse(data, path=label)
    except ZplSyntaxError as exc:
        raise CertificateError(f"not a secret certificate (ZPL syntax error){hint}",
                               path=label, line=exc.line) from None
    except CertificateError as exc:
        raise CertificateError(f"not a usable secret certificate (a key is damaged or the "
                               f"keys do not match){hint}", path=label, line=exc.line) from None
    if not cert.has_secret:
        raise CertificateError("holds no secret key (a public certificate; give the "
                               "NAME_secret file)", path=label)
    return cert


def load_secret(ref: str) -> Certificate:
    """The secret certificate a reference points at (see the module docstring).

    Raises `OperationalError` when the source cannot be read (missing variable, file or
    credential, a closed descriptor) and `CertificateError` when its value is not a
    secret key; neither message contains the value.
    """
    scheme, rest = split(ref)
    if scheme == "fd":
        try:
            cached = _FD_CACHE.get(int(rest))
        except ValueError:
            cached = None
        if cached is not None:
            return cached
    cert = parse_secret(_read(ref), describe(ref))
    if scheme == "fd":
        _FD_CACHE[int(rest)] = cert
    return cert
