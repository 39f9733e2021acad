"""The README's release table is what the corpus and the product say today."""
from __future__ import annotations

from tests.releases import table


def test_readme_release_table_is_current() -> None:
    readme = table.README.read_text()
    start = readme.index(table.BEGIN) + len(table.BEGIN)
    assert readme[start:readme.index(table.END)].strip() == table.table(), \
        "run: python -m tests.releases.table --write"
