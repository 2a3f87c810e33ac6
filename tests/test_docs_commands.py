"""Every documented command runs from a fresh clone: the fenced ``faithcb ...`` commands of README.md
and docs/*.md (and whole commands quoted inline) parse with faithcb's own argparse parsers (not run), name no path outside the
repository, and the problem sets they name load offline; no doc, recipe or bench README points at a
directory of the machine it was written on; ``faithcb --version`` (issue 23)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from faithcb import cli
from faithcb.data import is_named, load

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Places a fresh clone's user reads commands from.
READ_BY_USERS = [*DOCS, ROOT / "bench" / "README.md", *sorted((ROOT / "recipes").rglob("*.py")),
                 *sorted((ROOT / "recipes").rglob("*.yaml"))]
# Paths that exist only on the machine the docs were written on.
MACHINE_PATHS = re.compile(r"\.\./shared|/work/|/tmp/|/root\b|/home/")
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\w*)\s*$")
SEPARATORS = {"&&", "||", ";", "|"}


def fenced_commands(text: str) -> list[str]:
    """The shell commands of a markdown text: every line of a bash/sh/shell/console block, and the
    ``$ ``-prompted lines of any other block (outputs that show the command they came from);
    backslash continuations joined."""
    commands, lang, pending = [], None, ""
    for line in text.splitlines():
        fence = FENCE.match(line.strip())
        if fence:
            lang = None if lang is not None else fence.group(1)
            pending = ""
            continue
        if lang is None:
            continue
        line = pending + line.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("$ "):
            commands.append(line[2:])
        elif lang in SHELL_BLOCKS and line and not line.startswith("#"):
            commands.append(line)
    return commands


INLINE = re.compile(r"`((?:/usr/bin/time )?faithcb [^`<]*)`")


def inline_commands(text: str) -> list[str]:
    """Whole commands quoted in prose (`` `faithcb eval --problems aqua --n 16` ``): four words or
    more and no placeholder (``<that file>``, ``...``) or list (``eval / compare``), so a mention of
    one option or of the subcommands is not one."""
    spans = (m.group(1).removeprefix("/usr/bin/time ") for m in INLINE.finditer(text))
    return [span for span in spans if len(span.split()) >= 4 and "..." not in span and " / " not in span]


def faithcb_invocations(command: str) -> list[list[str]]:
    """Each ``faithcb ...`` of a shell line (also inside ``a && b`` chains), comments dropped."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    runs, current = [], []
    for token in lexer:
        if token in SEPARATORS:
            runs.append(current)
            current = []
        else:
            current.append(token)
    runs.append(current)
    return [run for run in runs if run and run[0] == "faithcb"]


def documented() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for command in fenced_commands(text) + inline_commands(text):
            for argv in faithcb_invocations(command):
                found.append((f"{path.relative_to(ROOT)}: {shlex.join(argv)}", argv))
    return found


COMMANDS = documented()


def test_the_extractor_finds_the_commands_a_new_user_reads_first() -> None:
    shown = {label.split(": ", 1)[1] for label, _ in COMMANDS}
    for expected in ("faithcb demo --output-dir faithcb-demo", "faithcb show --problems gsm8k",
                     "faithcb eval --problems gsm8k --n 16", "faithcb eval --problems aqua --n 16",
                     "faithcb --version"):
        assert expected in shown, sorted(shown)
    # A synopsis (``faithcb eval [--model PATH] ...``) and printed output are not commands.
    assert fenced_commands("```\nfaithcb eval [--model M]\nfaithcb eval: embedded on gsm8k\n```\n") == []
    assert fenced_commands("```bash\nfaithcb eval \\\n  --n 4  # four\n```\n") == ["faithcb eval  --n 4  # four"]
    assert inline_commands("run `faithcb eval --problems aqua --n 16`, not `faithcb eval --problems` or "
                           "`faithcb eval --problems <that file> --n 4`") == ["faithcb eval --problems aqua --n 16"]
    assert faithcb_invocations("pip install -e . && faithcb demo --quick  # smoke") == [["faithcb", "demo", "--quick"]]


def _paths_in(argv: list[str]) -> list[str]:
    values = []
    for token in argv[1:]:
        value = token.split("=", 1)[1] if token.startswith("--") and "=" in token else token
        if not value.startswith("-") and ("/" in value or "." in value or value.startswith("~")):
            values.append(value)
    return values


@pytest.mark.parametrize("label, argv", COMMANDS, ids=[label for label, _ in COMMANDS])
def test_documented_command_parses_and_stays_inside_the_repository(
    label: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        args = cli.build_parser().parse_args(argv[1:])
    except SystemExit as exc:  # --help and --version exit 0 after printing; a bad command exits 2
        assert exc.code == 0, f"{label}: {capsys.readouterr().err}"
        return
    for value in _paths_in(argv):
        if is_named(value):
            continue
        assert not value.startswith(("/", "~")), f"{label}: absolute path {value!r}"
        resolved = (ROOT / value).resolve()
        assert resolved.is_relative_to(ROOT), f"{label}: {value!r} points outside the repository"
    problems = getattr(args, "problems", None)
    if problems and is_named(problems) and not problems.startswith("hf:"):
        assert len(load(problems)) > 0  # a bundled set: loads offline, from the package


def test_no_doc_points_at_a_directory_of_the_machine_it_was_written_on() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in READ_BY_USERS
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if MACHINE_PATHS.search(line)
    ]
    assert not found, "\n".join(found)


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    import faithcb

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out.strip()
    assert printed == f"faithcb {metadata.version('faithcb')}"
    # One version everywhere: the metadata pip installed, the package attribute, pyproject.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert printed == f"faithcb {faithcb.__version__}" == f"faithcb {pyproject}"
