"""Coverage-guided fuzzing of curvecert's parsers with atheris (libFuzzer), optional.

The Hypothesis harness in `tests/fuzz/` is the one that runs in CI; this script adds a
coverage-guided engine on the same properties for long runs, when `pip install atheris`
works (it does on CPython 3.11 / Linux x86-64). Targets:

- `zpl`: `zpl.parse` on any bytes: a tree or `ZplSyntaxError` with a line in range;
- `certfile`: `Certificate.parse`, the store's `parse_public` (they must agree) and
  `verify.check_text`;
- `passwords`: `passwords.parse`: a table or `PasswordFileError` naming `path:line`;
- `zap`: `policy.respond` with a real policy on frames cut from the input: always six
  well-formed reply frames, never 300, user id and metadata empty unless 200;
- `zmtp`: `zmtp.decode` on any bytes, re-encoding exactly what it accepts.

Usage:
    python benchmarks/fuzz_atheris.py TARGET [libFuzzer options...]   # e.g. -runs=1000000
    python benchmarks/fuzz_atheris.py TARGET corpus_dir/ -max_total_time=600
    python benchmarks/fuzz_atheris.py --quick     # every target, 20k runs each (< 60 s)

A crash prints the input and writes `crash-<sha1>` in the current directory; turn it into
an `@example(...)` in the matching `tests/fuzz/test_fuzz_*.py` (see docs/fuzzing.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

TARGETS = ("zpl", "certfile", "passwords", "zap", "zmtp")
QUICK_RUNS = 20_000


def _target(name: str) -> Callable[[bytes], None]:
    import atheris  # type: ignore[import-untyped,unused-ignore]

    with atheris.instrument_imports(include=["curvecert"]):
        from curvecert import store
        from curvecert.auth import passwords
        from curvecert.auth.keylookup import StaticKeys
        from curvecert.auth.policy import DomainPolicy, Policy, respond
        from curvecert.auth.pwtable import StaticPasswords
        from curvecert.certs.cert import Certificate
        from curvecert.certs.verify import check_text
        from curvecert.errors import (
            CertificateError,
            CurvecertError,
            PasswordFileError,
            ZapError,
            ZplSyntaxError,
        )
        from curvecert.formats import zap, zmtp, zpl

    if name == "zpl":
        def one(data: bytes) -> None:
            try:
                zpl.parse(data)
            except ZplSyntaxError as exc:
                if not 1 <= exc.line <= data.count(b"\n") + 1:
                    raise AssertionError(f"line {exc.line} out of range") from exc
        return one

    if name == "certfile":
        def one(data: bytes) -> None:
            try:
                cert = Certificate.parse(data)
            except CurvecertError:
                cert = None
            try:
                fast = store.parse_public(data)
            except CurvecertError as exc:
                if cert is not None and not cert.has_secret:
                    raise AssertionError("store refuses what certfile reads") from exc
                if cert is not None and not isinstance(exc, CertificateError):
                    raise
            else:
                if cert is None or cert.has_secret:
                    raise AssertionError("store trusts what certfile refuses")
                if fast != (cert.public_key, list(cert.meta.items())):
                    raise AssertionError("store and certfile disagree")
            check_text(data, "fuzz")
        return one

    if name == "passwords":
        def one(data: bytes) -> None:
            try:
                passwords.parse(data, path="pw")
            except PasswordFileError as exc:
                if not str(exc).startswith("pw:"):
                    raise AssertionError(f"error does not name path:line: {exc}") from exc
        return one

    if name == "zap":
        from curvecert.certs.cert import Certificate

        trusted = Certificate.new()
        policy = Policy({"*": DomainPolicy(curve=StaticKeys.from_certificates([trusted]),
                                           plain=StaticPasswords({"alice": "pw"})),
                         "n": DomainPolicy(null=True)})

        def one(data: bytes) -> None:
            fdp = atheris.FuzzedDataProvider(data)
            frames = []
            for _ in range(fdp.ConsumeIntInRange(0, 12)):
                frames.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)))
            if fdp.ConsumeBool() and len(frames) >= 7:
                frames[0], frames[5], frames[6] = b"1.0", b"CURVE", trusted.public_key
            _req, _decision, reply = respond(policy, frames)
            if len(reply) != 6 or reply[0] != b"1.0" or reply[2] not in (b"200", b"400",
                                                                           b"500"):
                raise AssertionError(f"bad reply {reply!r}")
            if reply[2] != b"200" and (reply[4] or reply[5]):
                raise AssertionError("user id or metadata on a denial")
            try:
                zap.parse_request(frames)
            except ZapError:
                pass
        return one

    if name == "zmtp":
        def one(data: bytes) -> None:
            try:
                props = zmtp.decode(data)
            except ZapError:
                return
            if zmtp.encode(props) != data:
                raise AssertionError("decode/encode is not exact")
        return one

    raise SystemExit(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")


def _quick() -> int:
    failed = 0
    for name in TARGETS:
        start = time.monotonic()
        result = subprocess.run([sys.executable, __file__, name, f"-runs={QUICK_RUNS}"],
                                capture_output=True, text=True)
        took = time.monotonic() - start
        status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        print(f"{name:10s} {QUICK_RUNS} runs in {took:5.1f}s: {status}")
        if result.returncode:
            failed += 1
            print(result.stderr[-3000:])
    return 1 if failed else 0


def main() -> None:
    """Run one target under atheris, or `--quick`: every target briefly."""
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0)
    if sys.argv[1] == "--quick":
        raise SystemExit(_quick())
    try:
        import atheris  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise SystemExit("atheris is not installed (pip install atheris)") from None
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    one = _target(sys.argv[1])
    atheris.Setup([sys.argv[0], *sys.argv[2:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
