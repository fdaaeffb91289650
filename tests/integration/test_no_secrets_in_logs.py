"""Run the five patterns in-process with ALL logging at DEBUG: no password, no secret key.

Every keypair made during the run is recorded (by wrapping `curvecert.certs.keys.keypair`), so
secret keys that never reach a file are checked too; passwords are the examples' own.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from curvecert.certs import keys
from curvecert.formats import z85

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PATTERNS = ["grasslands", "strawhouse", "woodhouse", "stonehouse", "ironhouse"]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def everything() -> Iterator[_Collect]:
    handler = _Collect()
    root = logging.getLogger()
    saved = root.level, logging.getLogger("curvecert").level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("curvecert").setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        logging.getLogger("curvecert").setLevel(saved[1])


def test_five_patterns_log_no_secrets(everything: _Collect, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    secrets: list[bytes] = []
    real_keypair = keys.keypair

    def recording_keypair() -> tuple[bytes, bytes]:
        public, secret = real_keypair()
        secrets.append(secret)
        return public, secret

    monkeypatch.setattr(keys, "keypair", recording_keypair)
    passwords: set[str] = set()
    for name in PATTERNS:
        module = _load(name)
        passwords.update(v for k, v in vars(module).items()
                         if k.endswith("PASSWORD") and isinstance(v, str))
        for negative in (False, True):
            workdir = tmp_path / f"{name}-{negative}"
            workdir.mkdir()
            outcome = module.run(workdir, negative)
            assert outcome.delivered is not negative, (name, negative, outcome.detail)

    out = capsys.readouterr()
    text = "\n".join(everything.lines) + out.out + out.err
    # The run really logged decisions at every level we care about.
    assert "ALLOWED (PLAIN)" in text and "DENIED (PLAIN)" in text
    assert "ALLOWED (CURVE)" in text and "DENIED (CURVE)" in text and "DENIED (NULL)" in text
    assert passwords == {"s3cret-Woodhouse!", "wr0ng-Guess!"}
    assert len(secrets) >= 10
    for password in passwords:
        assert password not in text
    for secret in secrets:
        assert z85.encode(secret) not in text
        assert secret.hex() not in text
