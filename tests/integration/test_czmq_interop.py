"""Interoperability with the real CZMQ 4.x (Debian libczmq4), driven through ctypes.

- curvecert's ZPL parser agrees with CZMQ's zconfig on every corpus file and on generated
  text: the same accept/reject verdict, the same tree, the same error line;
- files curvecert writes load in `zcert_load` with identical keys and metadata, including
  unusual metadata; files `zcert_save` writes load in curvecert identically;
- where curvecert deliberately differs (stricter), the difference is pinned here.

Skipped only when libczmq is absent and CURVECERT_REQUIRE_CZMQ is not set (CI sets it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curvecert.certs.cert import Certificate
from curvecert.errors import CurvecertError, ZplSyntaxError
from curvecert.formats import z85, zpl
from tests.czmq import Czmq, CzmqNode, require_czmq

pytestmark = pytest.mark.czmq

CORPUS = Path(__file__).resolve().parents[1] / "assets" / "zpl"
SERVER_PUBLIC = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
SERVER_SECRET = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
CLIENT_PUBLIC = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
CLIENT_SECRET = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"
NO_SECRET = "0" * 40


@pytest.fixture(scope="module")
def czmq() -> Czmq:
    return require_czmq()


def ours(node: zpl.Node) -> tuple[CzmqNode, ...]:
    return tuple(CzmqNode(c.name, c.value, ours(c)) for c in node.children)


def compare(czmq: Czmq, data: bytes) -> None:
    """Assert that curvecert and CZMQ agree on `data` (verdict, tree, error line)."""
    theirs, log = czmq.parse_zpl_logged(data)
    try:
        mine = ours(zpl.parse(data))
    except ZplSyntaxError as exc:
        assert theirs is None, f"CZMQ accepts what curvecert rejects ({exc})"
        assert exc.line == czmq.error_line(log), (exc, log)
        return
    assert theirs is not None, f"curvecert accepts what CZMQ rejects: {log}"
    assert mine == theirs


# --- the ZPL parser, differential ---------------------------------------------------------


@pytest.mark.parametrize("path", sorted((CORPUS / "good").iterdir()) +
                         sorted((CORPUS / "bad").iterdir()),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_agrees_with_czmq(czmq: Czmq, path: Path) -> None:
    compare(czmq, path.read_bytes())
    accepted = czmq.parse_zpl(path.read_bytes()) is not None
    assert accepted == (path.parent.name == "good")


@pytest.mark.parametrize("path", sorted((CORPUS / "differs").iterdir()), ids=lambda p: p.name)
def test_deliberate_differences_are_only_stricter(czmq: Czmq, path: Path) -> None:
    # NUL bytes and non-UTF-8 text: CZMQ accepts (and truncates or keeps raw bytes).
    assert czmq.parse_zpl(path.read_bytes()) is not None
    with pytest.raises(ZplSyntaxError):
        zpl.parse(path.read_bytes())


_TOKENS = [" ", "    ", "\t", "=", "#", "'", '"', "a", "b/", "/", "-", "\r", "\x0b", "é",
           "x y", "metadata", "name", " = ", "\n", "\n    ", "\n        ", ":", "\\", "$@"]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(_TOKENS), max_size=16).map("".join))
def test_generated_text_agrees_with_czmq(text: str) -> None:
    compare(require_czmq(), text.encode("utf-8"))


# --- certificates curvecert writes, read by zcert_load -----------------------------------

UNUSUAL = {
    "unicode": {"name": "Zoë Ünïcødé", "city": "東京", "mark": "✓ ☃"},
    "spaces": {"leading": "  x", "trailing": "x  ", "only": "   ", "inner": "a  b"},
    "hash": {"hash": "#1", "mid": "a # b", "end": "x#"},
    "double-quote": {"say": 'say "hi"', "only": '"'},
    "apostrophe": {"its": "it's", "only": "'"},
    "equals": {"eq": "a=b", "lead": "=x", "trail": "x="},
    "empty": {"empty": "", "also": ""},
    "long": {"long": "L" * 3000, "name" * 50: "long name"},
    "printf": {"pct": "100% %s %d %%", "bs": "C:\\dir\\"},
    "tabs": {"tab": "a\tb", "edge": "\tx\t"},
    "name-chars": {"a.b-c_d$e@f&g+h/i": "1", "0digit": "2", "Case": "3", "case": "4"},
    "brackets": {"rich": "[bold]not markup[/]", "braces": "{x}"},
}


@pytest.mark.parametrize("meta", list(UNUSUAL.values()), ids=list(UNUSUAL))
def test_curvecert_files_load_in_czmq(czmq: Czmq, tmp_path: Path, meta: dict[str, str]) -> None:
    cert = Certificate.from_secret(SERVER_SECRET, meta)
    cert.save(tmp_path / "pair")
    # zcert_load(public) reads the _secret sibling first: the secret file must be right
    loaded = czmq.load_cert(tmp_path / "pair")
    assert loaded is not None
    assert (loaded.public_txt, loaded.secret_txt, loaded.meta) == (SERVER_PUBLIC,
                                                                    SERVER_SECRET, meta)
    # and the public file alone (no sibling next to it)
    cert.save_public(tmp_path / "alone")
    loaded = czmq.load_cert(tmp_path / "alone")
    assert loaded is not None
    assert (loaded.public_txt, loaded.secret_txt, loaded.meta) == (SERVER_PUBLIC, NO_SECRET,
                                                                    meta)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(meta=st.dictionaries(
    st.from_regex(r"[A-Za-z0-9$\-_@.&+][A-Za-z0-9$\-_@.&+/]{0,12}", fullmatch=True).filter(
        lambda n: not n.endswith("/")),
    st.text(st.characters(codec="utf-8", exclude_characters="\n\r\x00"),
            max_size=40).filter(lambda v: not ('"' in v and "'" in v)),
    max_size=5))
def test_generated_metadata_loads_in_czmq(tmp_path_factory: pytest.TempPathFactory,
                                          meta: dict[str, str]) -> None:
    czmq = require_czmq()
    path = tmp_path_factory.mktemp("gen") / "c"
    Certificate.from_secret(CLIENT_SECRET, meta).save_public(path)
    loaded = czmq.load_cert(path)
    assert loaded is not None and loaded.meta == meta and loaded.public_txt == CLIENT_PUBLIC


def test_czmq_store_finds_curvecert_certificates(czmq: Czmq, tmp_path: Path) -> None:
    Certificate.from_public(SERVER_PUBLIC, {"name": "server"}).save(tmp_path / "server")
    Certificate.from_secret(CLIENT_SECRET, {"name": "client"}).save(tmp_path / "client")
    assert czmq.store_has(tmp_path, SERVER_PUBLIC)
    assert czmq.store_has(tmp_path, CLIENT_PUBLIC)
    assert not czmq.store_has(tmp_path, z85.encode(bytes(range(32))))


# --- certificates zcert_save writes, read by curvecert -----------------------------------

CZMQ_READABLE = {k: v for k, v in UNUSUAL.items() if k not in ("double-quote",)}


@pytest.mark.parametrize("meta", list(CZMQ_READABLE.values()), ids=list(CZMQ_READABLE))
def test_czmq_files_load_in_curvecert(czmq: Czmq, tmp_path: Path, meta: dict[str, str]) -> None:
    written = czmq.make_cert(tmp_path / "c", meta)
    assert written.meta == meta
    public = Certificate.load(tmp_path / "c")
    secret = Certificate.load(tmp_path / "c_secret")
    assert not public.has_secret  # curvecert never picks up the sibling
    assert public.public_txt == secret.public_txt == written.public_txt
    assert secret.secret_txt == written.secret_txt
    # CZMQ writes metadata in hash order: compare as dicts
    assert dict(public.meta) == dict(secret.meta) == meta


def test_czmq_known_keys(czmq: Czmq, tmp_path: Path) -> None:
    keys = (z85.decode(SERVER_PUBLIC), z85.decode(SERVER_SECRET))
    written = czmq.make_cert(tmp_path / "s", {"name": "server"}, keys=keys)
    assert (written.public_txt, written.secret_txt) == (SERVER_PUBLIC, SERVER_SECRET)
    assert Certificate.load(tmp_path / "s_secret").secret_txt == SERVER_SECRET


def test_czmq_writes_quotes_it_cannot_read_and_curvecert_does_not(czmq: Czmq,
                                                                  tmp_path: Path) -> None:
    meta = {"say": 'say "hi"'}
    czmq.make_cert(tmp_path / "czmq", meta)
    assert czmq.load_cert(tmp_path / "czmq") is None  # CZMQ cannot read its own file
    with pytest.raises(CurvecertError):
        Certificate.load(tmp_path / "czmq")
    Certificate.new(meta).save(tmp_path / "ours")
    loaded = czmq.load_cert(tmp_path / "ours")
    assert loaded is not None and loaded.meta == meta


def test_czmq_no_secret_sentinel_reads_as_public_only(czmq: Czmq, tmp_path: Path) -> None:
    # A public-only CZMQ certificate saved as a pair: its "secret" file holds forty zeros.
    Certificate.from_public(SERVER_PUBLIC, {"n": "1"}).save_public(tmp_path / "p")
    loaded = czmq.load_cert(tmp_path / "p")
    assert loaded is not None and not loaded.has_secret
    keys = (z85.decode(SERVER_PUBLIC), bytes(32))
    czmq.make_cert(tmp_path / "again", {"n": "1"}, keys=keys)
    assert "secret-key = \"" + NO_SECRET in (tmp_path / "again_secret").read_text()
    cert = Certificate.load(tmp_path / "again_secret")
    assert not cert.has_secret and cert.public_txt == SERVER_PUBLIC


# --- certificate-level differences: curvecert refuses what CZMQ silently mangles --------

def _cert_text(public: str, secret: str | None = None) -> str:
    text = f'metadata\ncurve\n    public-key = "{public}"\n'
    return text + (f'    secret-key = "{secret}"\n' if secret is not None else "")


@pytest.mark.parametrize(("text", "czmq_public", "czmq_secret"), [
    # invalid Z85: CZMQ loads zero bytes as the key
    (_cert_text("~" * 40), NO_SECRET, NO_SECRET),
    # a secret of the wrong length: CZMQ drops it silently
    (_cert_text(SERVER_PUBLIC, "short"), SERVER_PUBLIC, NO_SECRET),
    # a secret that belongs to another key: CZMQ keeps the mismatched pair
    (_cert_text(SERVER_PUBLIC, CLIENT_SECRET), SERVER_PUBLIC, CLIENT_SECRET),
])
def test_curvecert_refuses_what_czmq_mangles(czmq: Czmq, tmp_path: Path, text: str,
                                             czmq_public: str, czmq_secret: str) -> None:
    path = tmp_path / "c"
    path.write_text(text)
    loaded = czmq.load_cert(path)
    assert loaded is not None
    assert (loaded.public_txt, loaded.secret_txt) == (czmq_public, czmq_secret)
    with pytest.raises(CurvecertError):
        Certificate.load(path)


@pytest.mark.parametrize("text", [_cert_text(f" {SERVER_PUBLIC}"), _cert_text("short"),
                                  "metadata\n", ""])
def test_both_refuse(czmq: Czmq, tmp_path: Path, text: str) -> None:
    path = tmp_path / "c"
    path.write_text(text)
    assert czmq.load_cert(path) is None
    with pytest.raises(CurvecertError):
        Certificate.load(path)


# --- the skip rule itself -----------------------------------------------------------------

def test_absent_libczmq_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.czmq as helper

    monkeypatch.setattr(helper, "_cached", [None])
    monkeypatch.delenv(helper.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="libczmq4"):
        helper.require_czmq()
    monkeypatch.setenv(helper.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="CURVECERT_REQUIRE_CZMQ"):
        helper.require_czmq()
