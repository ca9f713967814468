"""Every repository path that README.md, LEADERBOARD.md and docs/*.md name exists.

A path is a backticked token or a Markdown link target. Checked are:

- repository paths: the first component is a top-level folder (`andes_gym/`,
  `benchmarks/`, `docs/`, `tests/`, `.ci/`, and `configs/`, which no longer exists at the
  top: presets live in `andes_gym/configs/`), or the whole token is a top-level file
  (`Makefile`, `pyproject.toml`, ...);
- package paths: the first component is a subpackage of `andes_gym` (`core/candidates.py`),
  resolved under `andes_gym/`;
- bare Python file names (`knapsack.py`), which must exist somewhere in the package,
  `benchmarks/` or `tests/`;
- relative Markdown links, resolved from the document's folder;
- in shell code blocks (```bash), words that start with a top-level folder, except the
  word after `--out` (a file the command writes) and `<...>` placeholders of templates.

Not checked: placeholders (`runs/<run_dir>`, `*.yaml`, `{0,1,2}`), paths meant relative
to the user's working directory (`./configs/engines/`), absolute paths and URLs,
environment ids (`andes_gym/Surrogate-v0`) and output file names (`policy.onnx`,
`eval.csv`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "LEADERBOARD.md", *sorted((REPO / "docs").glob("*.md"))]

TOP_FOLDERS = {"andes_gym", "benchmarks", "configs", "docs", "tests", ".ci"}
TOP_FILES = {
    "Makefile",
    "pyproject.toml",
    "README.md",
    "LEADERBOARD.md",
    "CHANGELOG.md",
    "CITATION.cff",
    "LICENSE",
}
SUBPACKAGES = {
    p.name for p in (REPO / "andes_gym").iterdir() if (p / "__init__.py").is_file()
} - TOP_FOLDERS
SEARCHED_FOR_BARE_NAMES = ("andes_gym", "benchmarks", "tests")

ENV_ID = re.compile(r"^andes_gym/[A-Za-z]+-v\d+$")
BACKTICKED = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCED = re.compile(r"^```(bash|sh|shell|console)\n(.*?)^```", re.MULTILINE | re.DOTALL)
PLACEHOLDER_SPAN = re.compile(r"<[^<>]*>")  # `<path of the YAML, e.g. ...>` in templates
CODE_WORD_SEPARATORS = re.compile(r"[\s,\"'()\[\]=]+")


def _clean(token: str) -> str:
    """Drops an anchor, a `:line` suffix and trailing punctuation."""
    token = token.split("#", 1)[0]
    token = re.sub(r":\d+$", "", token)
    return token.rstrip(".,;:")


def _is_placeholder(token: str) -> bool:
    return (
        not token
        or any(c in token for c in "<>*{}$ ?|=")
        or "://" in token
        or token.startswith(("./", "/", "~", "-", "..."))
        or bool(ENV_ID.match(token))
    )


def _target(token: str) -> Path | None:
    """The path a backticked token names, or None when it names no repository file."""
    if _is_placeholder(token):
        return None
    if token in TOP_FILES:
        return REPO / token
    first, sep, _ = token.partition("/")
    if not sep:
        if token.endswith(".py") and re.fullmatch(r"[A-Za-z0-9_]+\.py", token):
            return Path(token)  # a bare module name, searched for below
        return None
    if first in TOP_FOLDERS:
        return REPO / token
    if first in SUBPACKAGES:
        return REPO / "andes_gym" / token
    return None


def _exists(path: Path) -> bool:
    if path.is_absolute():
        return path.exists()
    return any(next((REPO / root).rglob(path.name), None) for root in SEARCHED_FOR_BARE_NAMES)


def _named_paths(doc: Path) -> list[tuple[str, Path]]:
    text = doc.read_text()
    found = []
    for match in BACKTICKED.finditer(text):
        token = _clean(match.group(1).strip())
        target = _target(token)
        if target is not None:
            found.append((token, target))
    for _, block in FENCED.findall(text):
        words = CODE_WORD_SEPARATORS.split(PLACEHOLDER_SPAN.sub(" ", block))
        for previous, word in zip(["", *words], words, strict=False):
            token = _clean(word)
            if previous == "--out" or token.partition("/")[0] not in TOP_FOLDERS:
                continue
            target = _target(token)
            if target is not None:
                found.append((token, target))
    for match in LINK.finditer(text):
        token = _clean(match.group(1))
        if token and not _is_placeholder(token):
            found.append((token, (doc.parent / token).resolve()))
    return found


def test_the_documents_exist():
    assert (REPO / "README.md").is_file() and (REPO / "LEADERBOARD.md").is_file()
    assert len(DOCS) >= 4


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_named_path_exists(doc):
    missing = sorted({token for token, path in _named_paths(doc) if not _exists(path)})
    assert not missing, f"{doc.relative_to(REPO)} names paths that do not exist: {missing}"


def test_the_checker_sees_paths():
    """Guards the parser: it finds the README's paths and rejects a made-up one."""
    tokens = {token for token, _ in _named_paths(REPO / "README.md")}
    assert "benchmarks/RESULTS.md" in tokens
    assert "docs/CALIBRATION.md" in tokens
    assert _target("andes_gym/Surrogate-v0") is None
    assert _target("runs/<run_dir>") is None
    assert not _exists(_target("andes_gym/no_such_module.py"))
    assert not _exists(_target("configs/engines/cpu_tiny.yaml"))
    assert _exists(_target("core/selection.py"))


def test_cpu_live_checkpoint_resolves_from_the_checkout_root(monkeypatch, tmp_path):
    """The cpu-live suite names a checkpoint by a repository path: found from the root,
    and an error naming it (not a board of failed cells) from anywhere else."""
    from andes_gym.board.plan import policy_entries
    from andes_gym.board.suite import load_suite

    (checkpoint,) = [p.policy for p in load_suite("cpu-live").policies if ".onnx" in p.policy]
    monkeypatch.chdir(REPO)
    (entry,) = policy_entries([checkpoint])
    assert entry.digest
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(checkpoint)):
        policy_entries([checkpoint])
