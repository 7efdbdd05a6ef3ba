"""Every `pitstop ...` command line shown in README.md and docs/*.md exists, with every option it shows.

The docs once mentioned `pitstop status`, which never existed. Each distinct command path is asked for
its ``--help``; each ``--option`` on the documented line must appear in that help.
"""

from __future__ import annotations

import re
import shlex
from functools import cache

from tests.conftest import ROOT, run_cli

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
INLINE = re.compile(r"`(?:\.venv/bin/)?pitstop ((?:[a-z][a-z-]*)(?: [^`\n]*)?)`")
LINE = re.compile(r"^\s*(?:\$\s+)?(?:\.venv/bin/)?pitstop ((?:[a-z][a-z-]*)(?: [^\n#]*)?)")


def documented() -> list[tuple[str, int, str]]:
    out = []
    for doc in DOCS:
        inside = False
        for n, line in enumerate(doc.read_text().splitlines(), start=1):
            if line.lstrip().startswith("```"):
                inside = not inside
                continue
            if not inside:
                out += [(f"{doc.name}:{n}", n, m.group(1)) for m in INLINE.finditer(line)]
                continue
            m = LINE.search(line)
            if m:
                out.append((f"{doc.name}:{n}", n, m.group(1)))
    return out


@cache
def help_of(path: tuple[str, ...]) -> str | None:
    res = run_cli(*path, "--help", env={"COLUMNS": "250"})
    return res.stdout if res.returncode == 0 else None


def test_every_documented_command_and_option_exists() -> None:
    problems = []
    cases = documented()
    assert len(cases) > 20, "the scan found too few command lines to mean anything"
    for where, _, text in cases:
        try:
            words = shlex.split(text.replace("|", " "))
        except ValueError:
            words = text.split()
        path: tuple[str, ...] = ()
        for w in words:
            if not re.fullmatch(r"[a-z][a-z-]*", w) or help_of((*path, w)) is None:
                break
            path = (*path, w)
        if not path:
            problems.append(f"{where}: `pitstop {text}`: no such command")
            continue
        helptext = help_of(path) or ""
        for opt in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text):
            if opt not in helptext:
                problems.append(f"{where}: `pitstop {' '.join(path)}` has no option {opt}")
    assert problems == [], "\n".join(problems)
