"""Findings about certificate files: what is wrong, where, and why it matters.

`curvecert verify` and the store checks report problems instead of stopping at the first:
a file can be syntactically fine and still unusable (a secret that belongs to another key),
unsafe (a secret file others can read), or a trap for the other tools that read it (CZMQ
programs crash on more than 512 bytes of metadata, re-save values with `"` so that nobody
can read them back, and load a public file's `_secret` sibling instead of the file).

The checks on text, metadata and modes are pure functions of their inputs; only
`verify_file` touches the disk (one read, a few `stat` calls). Every finding carries the
path and, where it applies, the 1-based line, so editors and people can jump to it.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from curvecert.certs import keys
from curvecert.certs.certfile import SECRET_SUFFIX
from curvecert.certs.fileio import read_bytes
from curvecert.errors import InvalidKey, OperationalError, ZplError, ZplSyntaxError
from curvecert.formats import z85, zmtp, zpl
from curvecert.formats.sanitize import is_safe, unsafe_summary

__all__ = [
    "CZMQ_ZAUTH_METADATA_LIMIT",
    "ERROR",
    "WARNING",
    "Finding",
    "FileFacts",
    "check_metadata",
    "check_mode",
    "check_text",
    "has_errors",
    "metadata_wire_size",
    "verify_file",
    "verify_files",
]

_logger = logging.getLogger(__name__)

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"

#: CZMQ 4.2 zauth.c copies a certificate's metadata into `malloc(512)` without a bound
#: (CZMQ.md, "zauth"): more than this many encoded bytes corrupts its heap.
CZMQ_ZAUTH_METADATA_LIMIT = 512
# CZMQ zcert.c: the "no secret" value of a public-only certificate.
_CZMQ_NO_SECRET = "0" * 40
_ZERO_KEY = bytes(keys.KEY_LEN)
# For files that do not parse: does any line look like a secret key?
_SECRET_LINE = re.compile(rb"(?m)^[ \t]*secret-key[ \t]*=")


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one file: where (`path`, `line` or None), how bad, what, and why."""

    path: str
    line: int | None
    severity: Severity
    code: str
    message: str

    @property
    def location(self) -> str:
        """`path:line`, or just `path` when the finding is about the whole file."""
        return f"{self.path}:{self.line}" if self.line else self.path

    def to_dict(self) -> dict[str, object]:
        """The finding as a plain dict for JSON output."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message} [{self.code}]"


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What `check_text` learned about a file besides its findings."""

    #: The file parsed as ZPL.
    parsed: bool
    #: The file carries a secret key (a usable one or not), or looks as if it should.
    holds_secret: bool
    #: The public key, when it decoded.
    public_key: bytes | None


def has_errors(findings: Iterable[Finding]) -> bool:
    """True when any finding is an error (not only warnings)."""
    return any(f.severity == ERROR for f in findings)


def metadata_wire_size(meta: Iterable[tuple[str, str]]) -> int:
    """Bytes the metadata takes as ZMTP properties (what CZMQ's zauth copies per client).

    Each property costs 1 (name length) + name + 4 (value length) + value bytes.
    """
    return sum(5 + len(n.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
               for n, v in meta)


def check_metadata(meta: Sequence[tuple[str, str]], path: str,
                   lines: Sequence[int | None] | None = None) -> list[Finding]:
    """Findings about metadata `(name, value)` pairs, in order (duplicates included).

    `lines` gives the line of each pair (None when the metadata does not come from a file).
    Used by `verify` on files and by `new` on the metadata it is about to write.
    """
    out: list[Finding] = []
    where = list(lines) if lines is not None else [None] * len(meta)
    seen: dict[str, int | None] = {}
    for (name, value), line in zip(meta, where, strict=True):
        out += _unsafe_text_findings(name, value, path, line)
        if not zpl.is_valid_name(name):
            out.append(Finding(path, line, ERROR, "meta-name",
                               f"metadata name {name!r} is not a ZPL name (letters, digits and "
                               "$ - _ @ . & + /, not starting or ending with /); CZMQ writes it "
                               "but cannot read the file back"))
        elif len(name) > 255:
            out.append(Finding(path, line, ERROR, "meta-name-long",
                               f"metadata name {name[:20]!r}... is {len(name)} characters; a ZAP "
                               "metadata name holds at most 255"))
        elif zmtp.legal_name(name) != name and name.lower() not in zmtp.RESERVED:
            out.append(Finding(path, line, WARNING, "meta-name-zmtp",
                               f"metadata name {name!r} is not a legal ZMTP property name; "
                               "CZMQ's zauth sends it unchanged, curvecert's authenticator "
                               f"sends it as {zmtp.legal_name(name)!r}"))
        if name.lower() in zmtp.RESERVED:
            out.append(Finding(path, line, WARNING, "meta-reserved",
                               f"metadata name {name!r} is a property libzmq sets itself; "
                               "it never reaches the application"))
        if name.startswith(("public-key", "secret-key")):
            out.append(Finding(path, line, WARNING, "meta-pyzmq-key",
                               f"metadata name {name!r} starts like a key line; pyzmq's "
                               "load_certificate reads every line starting with public-key "
                               "or secret-key as a key, whatever its section"))
        if name in seen:
            first = seen[name]
            at = f" (line {first})" if first else ""
            out.append(Finding(path, line, WARNING, "meta-duplicate",
                               f"metadata name {name!r} appears again; the first value{at} "
                               "wins in CZMQ and curvecert, this one is ignored"))
        else:
            seen[name] = line
        try:
            zpl.quote_value(value)
        except ZplError:
            out.append(Finding(path, line, ERROR, "meta-unwritable",
                               f"metadata value of {name!r} contains both quote kinds or a "
                               "line break; no ZPL writer can save it so that it reads back"))
        else:
            if '"' in value:
                out.append(Finding(path, line, WARNING, "meta-quote",
                                   f"metadata value of {name!r} contains '\"'; CZMQ reads it, "
                                   "but a CZMQ program that saves the certificate again writes "
                                   "it in double quotes and nobody can read that file"))
    size = metadata_wire_size(meta)
    if size > CZMQ_ZAUTH_METADATA_LIMIT:
        first_line = next((ln for ln in where if ln), None)
        out.append(Finding(path, first_line, ERROR, "meta-overflow",
                           f"metadata is {size} bytes as ZAP metadata (5 + name + value per "
                           f"item); CZMQ's zauth copies it into a fixed "
                           f"{CZMQ_ZAUTH_METADATA_LIMIT}-byte buffer and crashes when a client "
                           "with this certificate connects"))
    return out


def _unsafe_text_findings(name: str, value: str, path: str,
                          line: int | None) -> list[Finding]:
    """Metadata that would control a terminal or split a log line (issue 12): reported,
    by code point and position, never printed raw (`curvecert.formats.sanitize`)."""
    out: list[Finding] = []
    label = repr(name) if is_safe(name) else "(a name holding such characters)"
    for what, text in (("name", name), ("value", value)):
        summary = unsafe_summary(text)
        if summary is not None:
            subject = "a metadata name" if what == "name" else f"the metadata value of {label}"
            out.append(Finding(path, line, ERROR, "meta-unsafe-text",
                               f"{subject} holds {summary}; curvecert shows them escaped, "
                               "but other tools print them raw (a name can rewrite a "
                               "terminal or forge a log line)"))
    return out


def _key_findings(node: zpl.Node, path: str, what: str) -> tuple[bytes | None, list[Finding]]:
    value = node.value  # never quoted in a finding: it may be a secret key
    where = f"{what} ({node.columns})" if node.columns else what
    if len(value) != z85.KEY_TEXT_LEN:
        return None, [Finding(path, node.line, ERROR, "key-length",
                              f"{where} is {len(value)} characters; it must be exactly 40 "
                              "Z85 characters (CZMQ refuses any other length)")]
    try:
        key = keys.decode_key(value, what=where)
    except InvalidKey as exc:
        return None, [Finding(path, node.line, ERROR, "key-invalid",
                              f"{exc} (CZMQ would silently load zero bytes instead)")]
    return key, []


def check_text(data: bytes, path: str) -> tuple[list[Finding], FileFacts]:
    """Findings about a certificate file's content (syntax, keys, metadata); no disk access."""
    named_secret = path.endswith(SECRET_SUFFIX)
    looks_secret = named_secret or bool(_SECRET_LINE.search(data))
    try:
        root = zpl.parse(data, path=path)
    except ZplSyntaxError as exc:
        return ([Finding(path, exc.line, ERROR, "syntax",
                         f"{exc.reason} (CZMQ and curvecert refuse the whole file)")],
                FileFacts(False, looks_secret, None))
    out: list[Finding] = []
    for section in ("curve", "metadata"):
        nodes = [c for c in root.children if c.name == section]
        for extra in nodes[1:]:
            out.append(Finding(path, extra.line, WARNING, "duplicate-section",
                               f"a second {section!r} section; readers use only the first "
                               f"(line {nodes[0].line})"))
    curve = root.child("curve")
    pub_node = curve.child("public-key") if curve is not None else None
    sec_node = curve.child("secret-key") if curve is not None else None
    if curve is not None:
        for key_name in ("public-key", "secret-key"):
            dups = [c for c in curve.children if c.name == key_name]
            for extra in dups[1:]:
                out.append(Finding(path, extra.line, WARNING, "duplicate-key",
                                   f"a second {key_name}; readers use only the first "
                                   f"(line {dups[0].line})"))
    public: bytes | None = None
    if pub_node is None:
        out.append(Finding(path, curve.line if curve is not None else None, ERROR,
                           "no-public-key", "no curve/public-key entry; this is not a "
                           "certificate CZMQ, pyzmq or curvecert can load"))
    else:
        public, found = _key_findings(pub_node, path, "public-key")
        out += found
        if public is not None and keys.keys_equal(public, _ZERO_KEY):
            out.append(Finding(path, pub_node.line, ERROR, "key-zero",
                               "public-key is all zero bytes: what CZMQ produces when it "
                               "cannot decode a key; no real keypair has it, and two such "
                               "files in one CZMQ store abort the server"))
        elif public is not None and keys.weak_public_key(public) is not None:
            out.append(Finding(path, pub_node.line, ERROR, "key-weak",
                               f"public-key is {keys.weak_public_key(public)}; stores "
                               "never trust it"))
    holds_secret = named_secret
    if sec_node is not None:
        holds_secret = True
        if sec_node.value == "":
            out.append(Finding(path, sec_node.line, WARNING, "secret-empty",
                               "secret-key is empty; this file holds no secret"))
        elif sec_node.value == _CZMQ_NO_SECRET:
            out.append(Finding(path, sec_node.line, WARNING, "secret-none",
                               "secret-key is forty zeros, CZMQ's 'no secret' value; this "
                               "file holds no usable secret"))
        else:
            secret, found = _key_findings(sec_node, path, "secret-key")
            out += found
            if secret is not None and public is not None:
                if not keys.keys_equal(keys.derive_public(secret), public):
                    out.append(Finding(path, sec_node.line, ERROR, "key-mismatch",
                                       "secret-key does not belong to public-key (it derives "
                                       f"to {z85.encode(keys.derive_public(secret))})"))
        if not path.endswith(SECRET_SUFFIX):
            out.append(Finding(path, sec_node.line, WARNING, "secret-name",
                               f"holds a secret key but the name does not end in "
                               f"{SECRET_SUFFIX!r}: CZMQ stores load it like a public "
                               "certificate, and tools that hand out public files copy it"))
    elif path.endswith(SECRET_SUFFIX):
        out.append(Finding(path, curve.line if curve is not None else None, WARNING,
                           "no-secret", f"named like a secret certificate ({SECRET_SUFFIX!r}) "
                           "but holds no secret-key"))
    metadata = root.child("metadata")
    if metadata is not None:
        for item in metadata.children:
            if item.children:
                out.append(Finding(path, item.children[0].line, WARNING, "meta-nested",
                                   f"metadata {item.name!r} has nested entries; CZMQ and "
                                   "curvecert ignore them"))
        out += check_metadata([(c.name, c.value) for c in metadata.children], path,
                              [c.line for c in metadata.children])
    return out, FileFacts(True, holds_secret, public)


def _bits(mode: int, mask: int) -> str:
    who = []
    for name, (r, w, x) in (("group", (stat.S_IRGRP, stat.S_IWGRP, stat.S_IXGRP)),
                            ("others", (stat.S_IROTH, stat.S_IWOTH, stat.S_IXOTH))):
        can = [verb for bit, verb in ((r, "read"), (w, "write"), (x, "execute"))
               if mode & mask & bit]
        if can:
            who.append(f"{name} can {'/'.join(can)}")
    return ", ".join(who)


def check_mode(path: str, mode: int, *, holds_secret: bool) -> list[Finding]:
    """Findings about a file's permission bits (`st_mode`); pure, for any platform's stat."""
    perm = stat.S_IMODE(mode)
    if holds_secret and perm & 0o077:
        return [Finding(path, None, ERROR, "secret-mode",
                        f"secret file has mode {perm:04o} ({_bits(perm, 0o077)}); "
                        f"run: chmod 600 {path}")]
    if not holds_secret and perm & 0o022:
        return [Finding(path, None, ERROR, "public-writable",
                        f"public file has mode {perm:04o} ({_bits(perm, 0o022)}); whoever "
                        f"can write it can swap in their own key. Run: chmod 644 {path}")]
    return []


def _sibling_findings(path: str, public: bytes | None) -> list[Finding]:
    """A public file's `_secret` sibling: CZMQ's zcert_load(path) reads it first."""
    sibling = path + SECRET_SUFFIX
    try:
        st = os.stat(sibling)
    except OSError:
        return []
    if not stat.S_ISREG(st.st_mode):
        return []
    out: list[Finding] = []
    perm = stat.S_IMODE(st.st_mode)
    if perm & 0o077:
        out.append(Finding(sibling, None, ERROR, "secret-sibling-mode",
                           f"the secret file next to {path} has mode {perm:04o} "
                           f"({_bits(perm, 0o077)}); run: chmod 600 {sibling}"))
    if public is None:
        return out
    try:
        data = read_bytes(sibling)
        root = zpl.parse(data, path=sibling)
    except (OperationalError, ZplSyntaxError):
        return out  # verified on its own when named; CZMQ falls back to `path` then
    node = root.locate("curve/public-key")
    if node is None or len(node.value) != z85.KEY_TEXT_LEN:
        return out
    try:
        other = keys.decode_key(node.value)
    except InvalidKey:
        return out
    if not keys.keys_equal(other, public):
        out.append(Finding(path, None, ERROR, "sibling-mismatch",
                           f"{sibling} holds a different public key ({node.value}); CZMQ's "
                           f"zcert_load({path}) reads that file first and uses its key"))
    return out


def verify_file(path: str | os.PathLike[str]) -> list[Finding]:
    """All findings for one certificate file, sorted by line.

    Raises `OperationalError` when the file cannot be read at all (missing, a directory,
    no permission): that is a problem with the request, not a finding about a file.
    """
    spath = os.fspath(path)
    if os.path.isdir(spath):
        raise OperationalError(f"{spath}: is a directory, not a certificate file")
    data = read_bytes(spath)
    findings, facts = check_text(data, spath)
    try:
        st = os.stat(spath)
    except OSError as exc:
        raise OperationalError(f"{spath}: cannot stat: {exc.strerror or exc}") from exc
    findings += check_mode(spath, st.st_mode, holds_secret=facts.holds_secret)
    if not facts.holds_secret:
        findings += _sibling_findings(spath, facts.public_key)
    findings += _stale_temporaries(spath)
    name_problem = unsafe_summary(os.path.basename(spath))
    if name_problem is not None:
        findings.append(Finding(spath, None, ERROR, "file-name-unsafe",
                                f"the file name holds {name_problem}; curvecert shows it "
                                "escaped, but ls, logs and other tools print it raw"))
    _logger.debug("verified %s: %d findings", spath, len(findings))
    return sorted(findings, key=lambda f: (f.path != spath, f.path, f.line or 0))


def _stale_temporaries(path: str) -> list[Finding]:
    """Temporary files an interrupted write of `path` (or its `_secret`) left behind.

    `fileio.atomic_write` writes `.NAME.<random>.tmp` beside the target and renames it; a
    process killed in between leaves the temporary, which may hold a secret key that a
    rotation (`new --force`) meant to retire.
    """
    directory, name = os.path.split(os.path.abspath(path))
    stem = name[:-len("_secret")] if name.endswith("_secret") else name
    prefixes = (f".{stem}.", f".{stem}_secret.")
    out: list[Finding] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for other in sorted(names):
        if other.endswith(".tmp") and other.startswith(prefixes):
            out.append(Finding(os.path.join(directory, other), None, WARNING, "stale-temporary",
                               "temporary file left by an interrupted write (it may hold a "
                               "secret key); delete it"))
    return out


def verify_files(paths: Iterable[str | os.PathLike[str]]) -> list[Finding]:
    """Findings for several files, in argument order (each file's findings by line)."""
    out: list[Finding] = []
    for p in paths:
        out += verify_file(p)
    return list(dict.fromkeys(out))  # the pair's files report the same stale temporaries
