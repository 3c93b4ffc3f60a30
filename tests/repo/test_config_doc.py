"""README.md documents exactly the settings the code reads (generated tables, kept fresh)."""

from __future__ import annotations

from pathlib import Path

from callbridge.services.ops.config_doc import BEGIN, END, render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_tables_are_current() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "README lacks the generated configuration block"
    current = text[text.index(BEGIN): text.index(END) + len(END)]
    assert current == render(), (
        "README's configuration tables are stale: replace the block with the output of "
        "`python -m callbridge.services.ops.config_doc`")
