"""The documentation stays true: README.md lists every CLI command (with its options) and
every RPC, lists nothing that does not exist, and every section a document cites exists."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from skit.pipelines.v1 import pipeline_service_pb2
from skit_pipelines_cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CLI_HEADING = "The CLI in full"
API_HEADING = "The API"
DOCS = (
    "README.md",
    "docs/*.md",
    "pipelines/README.md",
    "images/README.md",
    "images/*/README.md",
    "images/*/CHANGELOG.md",
    "Makefile",
)
"""The documents whose citations are checked (code comments are not documents here)."""

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


# Reading the documents.


def doc_paths() -> list[Path]:
    return sorted({path for pattern in DOCS for path in ROOT.glob(pattern) if path.is_file()})


def split_fences(text: str) -> tuple[list[str], list[list[str]]]:
    """(the prose lines, each fenced block's lines), fences removed."""
    prose: list[str] = []
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
            continue
        (prose if current is None else current).append(line)
    return prose, blocks


def headings(path: Path) -> list[str]:
    """The heading texts of a Markdown document (a Makefile has none), backticks removed."""
    if path.suffix != ".md":
        return []
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for line in prose:
        match = _HEADING.match(line)
        if match:
            found.append(match.group(2).replace("`", "").strip())
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def section(path: Path, title: str) -> str:
    """The text from heading `title` to the next heading of the same or a higher level."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = level = None
    for number, line in enumerate(lines):
        match = _HEADING.match(line)
        if not match:
            continue
        if start is None and match.group(2) == title:
            start, level = number, len(match.group(1))
        elif start is not None and level is not None and len(match.group(1)) <= level:
            return "\n".join(lines[start:number])
    assert start is not None, f"{path.name} has no section {title!r}"
    return "\n".join(lines[start:])


# The CLI, from its parser.


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable command ("runs", "retry") with its parser."""
    children = _subcommands(parser)
    if not children:
        yield path, parser
    for name, child in children.items():
        yield from commands(child, (*path, name))


def long_options(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(the option's longest flag, its help text) of each option but --help."""
    found = []
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            found.append((max(action.option_strings, key=len), action.help or ""))
    return found


def cli_block() -> list[str]:
    """The fenced block after "The CLI in full" in README.md."""
    text = README.read_text(encoding="utf-8")
    assert CLI_HEADING in text, f'README.md lost "{CLI_HEADING}"'
    _, blocks = split_fences(text[text.index(CLI_HEADING) :])
    return blocks[0]


def cli_entries() -> dict[tuple[str, ...], str]:
    """Each command the block lists (a line starting at column 0) with its lines."""
    entries: dict[tuple[str, ...], str] = {}
    current: tuple[str, ...] | None = None
    for line in cli_block():
        if line[:1].islower():
            words = re.findall(r"[a-z][a-z-]*", line.split("  ")[0].split("[")[0])
            words = [w for w in words if not w.startswith("-") and w.islower()]
            current = tuple(words[:2]) if words and words[0] != "skit-pipelines" else None
            if current is not None:
                entries[current] = entries.get(current, "") + line + "\n"
        elif current is not None:
            entries[current] += line + "\n"
    return entries


PARSER = build_parser({})
COMMANDS = dict(commands(PARSER))
CONNECTION_OPTIONS = tuple(flag for flag, _ in long_options(PARSER))
"""The options every remote command takes too; README lists them once, on its first lines."""


def _listed(path: tuple[str, ...], entries: dict[tuple[str, ...], str]) -> str | None:
    """The README lines of a command path (a leaf's words, or its group and name)."""
    return entries.get(path) or entries.get(path[:2])


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_the_cli_in_full_lists_every_command_with_its_options(path: tuple[str, ...]) -> None:
    entries = cli_entries()
    lines = _listed(path, entries)
    assert lines is not None, f'README.md "{CLI_HEADING}" lacks `{" ".join(path)}`'
    readme = README.read_text(encoding="utf-8")
    for flag, help_text in long_options(COMMANDS[path]):
        if path == ("serve",):
            # serve's many flags are documented in README's tables, by flag or variable.
            variables = re.findall(r"\bSKIT_[A-Z0-9_]+", help_text)
            assert flag in readme or any(v in readme for v in variables), (
                f"README.md documents neither serve's {flag} nor {variables}"
            )
        elif flag not in CONNECTION_OPTIONS:
            assert flag in lines, f'README.md "{CLI_HEADING}": `{" ".join(path)}` lacks {flag}'


def test_the_cli_in_full_lists_the_connection_options_and_no_command_that_does_not_exist() -> None:
    first = "\n".join(cli_block()[:2])
    assert "--server" in CONNECTION_OPTIONS
    for flag in CONNECTION_OPTIONS:
        assert flag in first, f'README.md "{CLI_HEADING}": the first lines lack {flag}'
    known = set(COMMANDS) | {path[:2] for path in COMMANDS}
    unknown = [" ".join(path) for path in cli_entries() if path not in known]
    assert not unknown, f'README.md "{CLI_HEADING}" lists commands that do not exist: {unknown}'


def api_table() -> dict[str, str]:
    """RPC name -> its row in README.md's table of RPCs."""
    rows = {}
    for line in section(README, API_HEADING).splitlines():
        match = re.match(r"^\| `(\w+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_the_api_section_lists_every_rpc_and_no_other() -> None:
    service = pipeline_service_pb2.DESCRIPTOR.services_by_name["PipelineService"]
    rpcs = [method.name for method in service.methods]
    listed = api_table()
    assert "RetryRun" in rpcs and "ReadStepLogs" in rpcs
    assert [r for r in rpcs if r not in listed] == [], "README.md's API table lacks these RPCs"
    assert [r for r in listed if r not in rpcs] == [], "README.md lists RPCs that do not exist"


def test_the_api_tables_cli_column_names_real_commands() -> None:
    known = {" ".join(path) for path in COMMANDS}
    for rpc, row in api_table().items():
        cli = row.rstrip(" |").rsplit("|", 1)[-1]
        named = [c.split(" --")[0] for c in re.findall(r"`([^`]+)`", cli)]
        assert named, f"README.md: the {rpc} row names no CLI command"
        assert set(named) <= known, f"README.md: the {rpc} row names {named}, not all commands"


# Citations.

_QUOTED_LIST = r'"[^"]+"(?:, "[^"]+")*(?:,? and "[^"]+")?'
_CITATIONS = (
    # `"Releasing images" in the root README`, `"Bazel" in docs/kubeflow.md`
    re.compile(
        rf"(?P<names>{_QUOTED_LIST}) in (?:the root )?(?P<doc>README(?:\.md)?|[\w/.-]+\.md)"
    ),
    # `README.md: "Bazel", "Releasing images"`, `README.md, "Releasing images"`
    re.compile(rf"(?P<doc>[\w/.-]*README\.md|[\w/.-]+\.md)[:,] (?P<names>{_QUOTED_LIST})"),
    # `"Scale-out" and "Observability" below`, `see "Limits and reliability"`
    re.compile(rf"(?P<names>{_QUOTED_LIST}) (?:below|above)"),
    re.compile(rf"\bsee (?P<names>{_QUOTED_LIST})(?! in )"),
    # `see Deployment below`
    re.compile(r"\bsee (?P<bare>[A-Z][\w-]*(?: [a-zA-Z][\w-]*){0,3}) (?:below|above)"),
)
_SECTION_NUMBER = re.compile(r"(?P<doc>[\w/.-]+\.md)? ?§(?P<number>\d+)")
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _doc(cited: str | None, citing: Path) -> Path:
    """The document a citation names: README means the root README.md."""
    if not cited:
        return citing
    if cited in ("README", "README.md") and citing.parent != ROOT and citing.name != "Makefile":
        # "README.md" in a folder's README may mean the root one: the folder's is itself.
        return README
    for base in (citing.parent, ROOT):
        if (base / cited).is_file():
            return base / cited
    return ROOT / cited


def citations(path: Path) -> Iterator[tuple[str, Path, str]]:
    """(the citation as written, the document it names, the section it names)."""
    text = path.read_text(encoding="utf-8")
    prose, _ = split_fences(text) if path.suffix == ".md" else (text.splitlines(), [])
    flat = re.sub(r"\s+", " ", " ".join(prose).replace("`", ""))
    for pattern in _CITATIONS:
        for match in pattern.finditer(flat):
            groups = match.groupdict()
            doc = _doc(groups.get("doc"), path)
            names = re.findall(r'"([^"]+)"', groups.get("names") or "")
            for name in names or [groups["bare"]]:
                yield match.group(0), doc, name
    for match in _SECTION_NUMBER.finditer(flat):
        yield match.group(0), _doc(match.group("doc"), path), "§" + match.group("number")
    for match in _LINK.finditer(flat):
        target = match.group("target")
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        yield match.group(0), (path.parent / file) if file else path, "#" + anchor if anchor else ""


def _exists(doc: Path, name: str) -> bool:
    if not doc.is_file():
        return False
    titles = headings(doc)
    if name.startswith("§"):
        return any(re.match(rf"^{name[1:]}[.) ]", title) for title in titles)
    if name.startswith("#"):
        return name[1:] in {slug(title) for title in titles}
    return name == "" or name.lower() in {title.lower() for title in titles}


@pytest.mark.parametrize("path", doc_paths(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_section_a_document_cites_exists(path: Path) -> None:
    missing = [
        f"{written!r} -> {doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc}"
        f" {name or '(the file)'}"
        for written, doc, name in citations(path)
        if not _exists(doc, name)
    ]
    assert not missing, f"{path.relative_to(ROOT)} cites what does not exist: {missing}"


def test_the_citation_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Real section\n\nSee ARCHITECTURE.md §7, see Missing below, and\n"
        'see "Real section" and "Real section" below; [x](#real-section) [y](#nope).\n'
    )
    found = [(name, _exists(doc, name)) for _, doc, name in citations(page)]
    assert ("§7", False) in found and ("Missing", False) in found
    assert ("Real section", True) in found and ("#real-section", True) in found
    assert ("#nope", False) in found
