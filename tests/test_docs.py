"""The repository cites only itself: no path outside it, and every docs/*.md#anchor it cites exists."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = re.compile(r"docs/(\w+\.md)#([\w-]+)")


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    keep = (".py", ".md", ".yaml", ".yml", ".cfg", ".toml", ".sh", ".ipynb", ".txt")
    return [ROOT / n for n in names if n.endswith(keep) or n in ("Makefile",) or n.startswith(".ci/")]


def test_no_citation_outside_the_repository():
    bad = []
    for path in _tracked_text_files():
        if path.name == "test_docs.py":
            continue
        for no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"(^|[\s`(\"'])(\.\./)*shared/(spec|paper)", line):
                bad.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()[:80]}")
    assert not bad, "citations outside the repository:\n" + "\n".join(bad)


def test_cited_doc_anchors_exist():
    anchors = {doc.name: set(re.findall(r'<a id="([\w-]+)"></a>', doc.read_text())) for doc in (ROOT / "docs").glob("*.md")}
    assert anchors, "no docs/*.md"
    missing = []
    for path in _tracked_text_files():
        for doc, anchor in ANCHOR.findall(path.read_text(errors="replace")):
            if anchor not in anchors.get(doc, set()):
                missing.append(f"{path.relative_to(ROOT)}: docs/{doc}#{anchor}")
    assert not missing, "cited anchors that do not exist:\n" + "\n".join(missing)


def test_the_checker_sees_a_bad_citation(tmp_path):
    assert ANCHOR.findall("see docs/baselines.md#decision-8-1") == [("baselines.md", "decision-8-1")]
    assert re.search(r"(^|[\s`(\"'])(\.\./)*shared/(spec|paper)", "read `shared/spec/method.md`")
