"""Sybil: the samples in README.md and docs/*.md run as tests (conventions: tests/docs_shell.py)."""

from __future__ import annotations

from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser

from tests.docs_shell import (
    PythonSample,
    ShellSessionParser,
    document_setup,
    document_teardown,
)

pytest_collect_file = Sybil(
    parsers=[SkipParser(), CodeBlockParser(language="python", evaluator=PythonSample()),
             ShellSessionParser()],
    patterns=["README.md", "docs/*.md"],
    setup=document_setup,
    teardown=document_teardown,
    name="docs",
).pytest()
