"""Every relative link in README.md and docs/*.md names a file that exists (the README points into docs/)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _relative_links(md: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)  # code blocks hold no links
    return [t.split("#", 1)[0] for t in _LINK.findall(text)
            if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("md", [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(md):
    if not md.is_file():
        pytest.skip(f"{md} is not in this checkout (an installed package)")
    missing = [t for t in _relative_links(md) if not (md.parent / t).exists()]
    assert not missing, f"{md.name} links to missing files: {missing}"


def test_the_link_check_sees_links(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("see [a](docs/a.md#top), [web](https://x.org), [here](#h)\n```\n[no](code.md)\n```\n")
    assert _relative_links(md) == ["docs/a.md"]
