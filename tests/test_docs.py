"""The documents the code cites live in the repository, under ``docs/``, and every citation resolves.

Source files, tests, the README and the CHANGELOG cite the contract, the architecture and the
vendor protocol notes by their ``docs/`` paths: a citation of a file that is not there (or of the
copy outside the repository it used to point at) is a broken reference for every reader.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("CONTRACT.md", "ARCHITECTURE.md", "protocols/weixin-ilink.md", "protocols/feishu.md")
CITATION = re.compile(r"(?<![\w/.-])docs/[\w./-]*\w")
# Citations of the documents by a name that is not their path in this repository.
STALE = re.compile(r"shared/protocols|(?<![\w/])protocols/\w|(?<![\w/])CONTRACT(?:\.md| §)")
SKIP_DIRS = {".venv", ".git", "node_modules", "dist", "build", "var", ".tools"}
SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".example", ""}


def _cited_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if any(
            part in SKIP_DIRS or (part.startswith(".") and part != ".env.example")
            for part in relative.parts
        ):
            continue
        if relative.parts[0] == "docs" or not path.is_file() or path == Path(__file__).resolve():
            continue
        if path.suffix in SUFFIXES and path.name not in {"uv.lock"}:
            files.append(path)
    return files


@pytest.mark.parametrize("name", DOCS)
def test_the_documents_are_in_docs(name: str) -> None:
    """The contract, the architecture and both protocol notes are in ``docs/`` and not empty."""
    path = ROOT / "docs" / name
    assert path.is_file(), path
    assert path.read_text(encoding="utf-8").startswith("# ")


def test_every_cited_docs_path_exists() -> None:
    """Every ``docs/…`` path cited in a source file, test, README or CHANGELOG exists."""
    files = _cited_files()
    assert ROOT / "README.md" in files
    cited: dict[str, list[str]] = {}
    for path in files:
        for match in CITATION.finditer(path.read_text(encoding="utf-8", errors="replace")):
            cited.setdefault(match.group(0).rstrip("."), []).append(str(path.relative_to(ROOT)))
    assert "docs/CONTRACT.md" in cited
    assert "docs/protocols/feishu.md" in cited
    missing = {c: where for c, where in cited.items() if not (ROOT / c).exists()}
    assert missing == {}


def test_no_citation_points_outside_the_repository() -> None:
    """The documents are cited by their ``docs/`` path, never as ``shared/…`` or a bare name."""
    stale = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _cited_files()
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        )
        if STALE.search(line.replace("docs/protocols/", "").replace("docs/CONTRACT", ""))
    ]
    assert stale == []


def test_the_license_is_there_and_named_the_same_everywhere() -> None:
    """LICENSE is the MIT license; the README and every package's metadata say MIT."""
    import tomllib

    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## License\n\nMIT: see [LICENSE](LICENSE)." in readme
    for member in ("contracts", "sdk", "sidecar"):
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        assert project["license"] == "MIT", member
