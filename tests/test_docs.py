"""The README and the docs site say only what is true of the program: every `amcs` command line
they show names a real command and real options, every command has its page, the README stays a
first screen (under 12 KB, no paths of the development set-up), every measured table on the
results page says when it was measured, and CI builds the site strictly before the tests.

(`mkdocs build --strict`, run by `.ci/run`, checks the links and anchors between the pages.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from cli.main import LazyCommand, app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Pages whose command lines are checked: the README, the docs and the recipe READMEs the docs
# include.
PAGES = [README, *sorted(DOCS.rglob("*.md")), *sorted((ROOT / "recipes").glob("*/README.md"))]
GLOBAL_OPTIONS = {"--debug", "--help", "--version"}
DATE = re.compile(r"Measured \d{4}-\d{2}-\d{2}")


def amcs_group():
    return typer.main.get_command(app)


def real_command(command):
    return command.command if isinstance(command, LazyCommand) else command


def command_lines(text: str) -> list[str]:
    """Every `amcs ...` command line in fenced code blocks (continuation lines joined, a leading
    "$ " dropped) and in inline code spans."""
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(line.strip().removeprefix("$ "))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += re.findall(r"`([^`\n]+)`", prose)
    # Indented blocks of the recipe READMEs.
    lines += [m.strip() for m in re.findall(r"^ {4}(amcs .*)$", prose, flags=re.M)]
    return [line for line in lines if re.match(r"(uv run )?amcs( |$)", line)]


def check_command_line(line: str, group) -> str | None:
    """What is wrong with one command line (None: nothing). Options are checked against the
    command's own click parameters; placeholders (`...`, `<...>`) are skipped."""
    tokens = shlex.split(line, comments=True)
    tokens = tokens[tokens.index("amcs") + 1 :]
    while tokens and tokens[0] in GLOBAL_OPTIONS:
        tokens = tokens[1:]
    if not tokens or tokens[0] == "..." or tokens[0].startswith("<"):
        return None
    name, args = tokens[0], tokens[1:]
    if name not in group.commands:
        return f"no command {name!r}"
    command = real_command(group.commands[name])
    subcommands = getattr(command, "commands", {})  # a group (typer vendors its own click)
    if args and args[0] in subcommands:
        command, args = subcommands[args[0]], args[1:]
    known = {"--help"}
    for param in command.params:
        known.update(getattr(param, "opts", ()))
        known.update(getattr(param, "secondary_opts", ()))
    unknown = [a.split("=")[0] for a in args if a.startswith("-") and a.split("=")[0] not in known]
    unknown = [a for a in unknown if not re.fullmatch(r"-\d.*", a)]  # a negative number
    return f"{name}: no option {', '.join(unknown)}" if unknown else None


def test_command_line_parsing_finds_real_and_false_lines():
    """The checker itself: it finds commands in every place a page shows them, and a wrong
    command or option is reported, not passed."""
    text = (
        "```bash\nuv run amcs generate --set k=16 \\\n    --out x.jsonl  # a comment --nope\n```\n"
        "Run `amcs eval steps --prm tiny-prm`, then `amcs --debug ...`.\n"
        "```text\n$ uv run amcs export d.jsonl --format trl --out t.jsonl\nwrote 3 lines\n```\n"
        "    amcs train --recipe r.yaml\n"
    )
    lines = command_lines(text)
    assert lines == [
        "uv run amcs generate --set k=16      --out x.jsonl  # a comment --nope",
        "uv run amcs export d.jsonl --format trl --out t.jsonl",
        "amcs eval steps --prm tiny-prm",
        "amcs --debug ...",
        "amcs train --recipe r.yaml",
    ]
    group = amcs_group()
    assert [check_command_line(line, group) for line in lines] == [None] * 5
    assert check_command_line("amcs generat --out x", group) == "no command 'generat'"
    assert check_command_line("amcs generate --outt x", group) == "generate: no option --outt"
    assert check_command_line("amcs eval steps --strategies x", group) == (
        "eval: no option --strategies"  # eval's option, not eval steps'
    )
    assert check_command_line("amcs train --lernig-rate 1", group) == (
        "train: no option --lernig-rate"
    )


@pytest.mark.parametrize("doc", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_line_shown_is_real(doc):
    group = amcs_group()
    problems = [
        f"{line!r}: {problem}"
        for line in command_lines(doc.read_text())
        if (problem := check_command_line(line, group))
    ]
    assert problems == []


def test_every_command_has_a_page_in_the_nav_and_a_row_in_the_readme():
    readme, nav = README.read_text(), (ROOT / "mkdocs.yml").read_text()
    names = list(amcs_group().commands)
    assert {"generate", "train", "eval", "filter", "view", "export", "problems"} <= set(names)
    for name in names:
        page = DOCS / "commands" / f"{name}.md"
        assert page.read_text().startswith(f"# `amcs {name}`"), page
        assert f"commands/{name}.md" in nav, name
        assert f"| [`amcs {name}`](docs/commands/{name}.md) |" in readme, name


def test_readme_is_a_first_screen():
    readme = README.read_text()
    assert len(readme.encode()) < 12_000
    assert "../shared" not in readme  # users have hub datasets, not our sibling folder
    assert "uv run pytest" in readme
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_every_measured_table_says_when_it_was_measured():
    """A table on the results page has a "Measured YYYY-MM-DD" line in its own section (## or
    ###) before it, or in the introduction of the ## section around it."""
    lines = (DOCS / "results.md").read_text().splitlines()
    undated, tables = [], 0
    for i, line in enumerate(lines):
        if not line.startswith("|---") or lines[i - 2].startswith("|"):
            continue  # not the first separator line of a table
        tables += 1
        own = max(j for j in range(i) if lines[j].startswith(("## ", "### ")))
        if DATE.search("\n".join(lines[own:i])):
            continue
        parent = max(j for j in range(own + 1) if lines[j].startswith("## "))
        if parent == own or not DATE.search("\n".join(lines[parent:own])):
            undated.append(lines[i - 1])
    assert tables >= 15
    assert undated == []


def test_ci_builds_the_docs_strictly_before_the_tests():
    ci = (ROOT / ".ci" / "run").read_text()
    sync = ci.index("uv sync --locked")
    docs = ci.index("mkdocs build --strict")
    tests = ci.index("\nuv run pytest\n")
    assert sync < docs < tests
