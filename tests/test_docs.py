"""The documentation runs: every ```python block of README.md and docs/*.md, and the CLI
reference names every command and option of the click group.

Each block runs in a fresh temporary working directory in its own interpreter (so blocks
share nothing and may write files); a block whose fence reads ```python no-run is collected
as a skipped test, so the count of blocks that do not run shows in the summary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 120  # seconds per block; the blocks are small, this only stops a hang

_FENCE = re.compile(r"^(?P<indent> *)(?P<ticks>`{3,})(?P<info>[^`]*)$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str  # the fence's info string, e.g. "python" or "python no-run"
    code: str

    @property
    def where(self) -> str:
        try:
            return f"{self.path.relative_to(ROOT)}:{self.line}"
        except ValueError:  # a file outside the repository (the parser's own test)
            return f"{self.path.name}:{self.line}"


def _closes(line: str, ticks: str) -> bool:
    fence = line.strip()
    return len(fence) >= len(ticks) and set(fence) == {"`"}


def code_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with the line of its opening fence."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, info = len(m["indent"]), m["ticks"], m["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not _closes(lines[j], ticks):
            line = lines[j]
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path}:{i + 1}: code fence never closed")
        blocks.append(Block(path, i + 1, info, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def python_blocks() -> list[Block]:
    return [b for p in DOCS for b in code_blocks(p) if b.info.split()[:1] == ["python"]]


def _param(block: Block) -> Any:
    marks = [pytest.mark.skip(reason=f"marked no-run at {block.where}")] \
        if "no-run" in block.info.split()[1:] else []
    return pytest.param(block, id=block.where, marks=marks)


BLOCKS = python_blocks()


def run_block(block: Block, tmp_path: Path) -> str | None:
    """Run one block in a fresh folder under ``tmp_path``; None, or why it failed (naming
    the file and line of its fence)."""
    script = tmp_path / "block.py"
    script.write_text(block.code, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    work = tmp_path / "work"
    work.mkdir()
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=work, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"{block.where}: the block did not finish within {TIMEOUT} s"
    if done.returncode != 0:
        return (f"{block.where}: the block failed (exit status {done.returncode})\n"
                f"{done.stderr[-3000:]}")
    return None


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    failure = run_block(block, tmp_path)
    if failure:
        pytest.fail(failure, pytrace=False)


def test_a_failing_block_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    sample = tmp_path / "sample.md"
    sample.write_text("# t\n\n```python\nimport os\nraise SystemExit(os.getcwd())\n```\n",
                      encoding="utf-8")
    (block,) = code_blocks(sample)
    failure = run_block(block, tmp_path)
    assert failure is not None and failure.startswith("sample.md:3: the block failed")
    assert str(tmp_path / "work") in failure  # it ran in its own folder


def test_docs_have_runnable_blocks() -> None:
    """The collector finds the blocks (a broken fence pattern would make every file look
    empty and every test above vanish)."""
    runnable = [b for b in BLOCKS if "no-run" not in b.info.split()[1:]]
    assert {b.path.name for b in runnable} >= {"README.md", "guide.md"}
    assert len(runnable) >= 10


def test_code_blocks_parse(tmp_path: Path) -> None:
    """Fences are found with their info strings and bodies, indented ones included."""
    sample = tmp_path / "sample.md"
    sample.write_text("text\n```python\nx = 1\n```\n\n  ```python no-run\n  y = 2\n  ```\n"
                      "```sh\nls\n```\n", encoding="utf-8")
    blocks = code_blocks(sample)
    assert [(b.line, b.info, b.code) for b in blocks] == [
        (2, "python", "x = 1\n"), (6, "python no-run", "y = 2\n"), (9, "sh", "ls\n")]
    assert [len(_param(b).marks) for b in blocks] == [0, 1, 0]  # no-run: collected, skipped


# -- the CLI reference -------------------------------------------------------------------


def cli_group() -> click.Group:
    """The ``lshdb`` click group."""
    from lshdb.cli.main import cli

    return cli


def _sections(text: str) -> dict[str, str]:
    """The body of each ``### lshdb NAME`` section of docs/cli.md."""
    parts = re.split(r"^### `?lshdb ([a-z][a-z-]*)`?\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_cli_reference_lists_every_command_and_option() -> None:
    cli = cli_group()
    sections = _sections((ROOT / "docs" / "cli.md").read_text(encoding="utf-8"))
    ctx = click.Context(cli, info_name="lshdb")
    commands = cli.list_commands(ctx)
    assert commands, "the click group lists no commands"
    missing = [c for c in commands if c not in sections]
    assert not missing, (f"docs/cli.md has no '### lshdb NAME' section for {missing}; "
                         "run `python tools/clidoc.py` to regenerate the reference")
    stale = sorted(set(sections) - set(commands))
    assert not stale, f"docs/cli.md documents commands the CLI does not have: {stale}"
    for name in commands:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        for param in cmd.params:
            if getattr(param, "hidden", False):
                continue
            flags = [o for o in (*param.opts, *param.secondary_opts) if o.startswith("-")]
            if flags and not any(f"`{o}" in sections[name] or f"{o} " in sections[name]
                                 or f"{o}`" in sections[name] for o in flags):
                pytest.fail(f"docs/cli.md: `lshdb {name}` does not mention {flags[0]}; "
                            "run `python tools/clidoc.py`")


def test_package_map_is_up_to_date() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "layout.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# -- links between the documents -----------------------------------------------------------

# pages other changes add; a link to one is checked once the page exists
PENDING_PAGES = {"operations.md", "serve.md", "scale.md", "features.md"}
_LINK = re.compile(r"\]\((?!https?:|mailto:)([^)#\s]*)(?:#([^)\s]*))?\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file (outside code blocks)."""
    out: set[str] = set()
    fence = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _FENCE.match(line)
        if m and (fence is None or _closes(line, fence)):
            fence = m["ticks"] if fence is None else None
            continue
        if fence is None and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_links_between_documents_resolve() -> None:
    broken = []
    for doc in DOCS:
        for target, anchor in _LINK.findall(doc.read_text(encoding="utf-8")):
            dest = (doc.parent / target).resolve() if target else doc
            if not dest.exists():
                if dest.name not in PENDING_PAGES:
                    broken.append(f"{doc.relative_to(ROOT)}: ({target}) does not exist")
                continue
            if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.relative_to(ROOT)}: ({target}#{anchor}) has no such heading")
    assert not broken, "\n".join(broken)
