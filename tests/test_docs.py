"""The reference pages generated from the code are the ones committed (``make docs`` rewrites them)."""

from __future__ import annotations

import argparse

import pytest

from kapparec import reference
from kapparec.cli import build_parser


@pytest.mark.parametrize("path", sorted(reference.pages()), ids=lambda path: path.name)
def test_generated_page_is_current(path):
    assert path.read_text() == reference.pages()[path], f"{path.name} is stale: run `make docs` and commit it"


def test_configuration_reference_names_every_verb_flag_and_variable():
    page = reference.pages()[reference.DOCS / "configuration.md"]
    for path, parser in reference._walk(build_parser(), ("kapparec",)):
        assert f"### `{' '.join(path)}`" in page
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert f"`{flag}" in page, f"{flag} of {' '.join(path)} missing"
    for variable in ("KAPPAREC_BOOTSTRAP", "KAPPAREC_REDIS_URL", "KAPPAREC_RUN_DIR", "KAPPAREC_MODELS_DIR", "KAPPAREC_TOKEN"):
        assert f"| `{variable}` |" in page
    assert "| `--port PORT` | `50051` |" in page  # serve's default, as the parser holds it


def test_key_layout_lists_every_feature():
    from featurestore.definitions import Feature

    page = reference.key_layout()
    names = [value for name, value in vars(Feature).items() if name.isupper()]
    assert names and all(f"| `{name}` | `Feature." in page for name in names)
    assert "kr:<v>:offsets" in page
