"""The user documentation builds, and its links lead somewhere.

``mkdocs build --strict`` fails on a link to a page or an anchor that does not exist and on a
page left out of the nav (mkdocs.yml's ``validation``); the README is not part of the MkDocs
site, so its relative links are checked here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Markdown links and images: ``[text](target)``.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_the_docs_build_with_mkdocs_strict_so_every_link_and_anchor_resolves(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_every_relative_link_of_the_readme_points_at_a_file_of_the_repository() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t.split("#", 1)[0] for t in LINK.findall(readme)]
    local = [t for t in targets if t and not re.match(r"[a-z]+:", t)]
    assert local, "the README links into docs/"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert missing == []


def test_the_readme_stays_a_front_door_of_at_most_350_lines() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 350, f"README.md has {len(lines)} lines: move reference material to docs/"
