"""YAML loading that remembers where every value came from.

pydantic tells *what* is wrong (a location path such as ``("stages", 2, "steps", 0, "uses")``);
this module turns that path back into a ``file:line`` using ruamel.yaml's position data, so every
problem an operator sees points at the line to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from .errors import InputError, Problem

M = TypeVar("M", bound=BaseModel)


class YamlDoc:
    """A parsed YAML document plus the positions of its nodes."""

    def __init__(self, path: Path, root: Any):
        self.path = path
        self.root = root

    @property
    def file(self) -> str:
        return str(self.path)

    def line_of(self, loc: Sequence[Any]) -> int | None:
        """1-based line of the deepest node on ``loc`` that exists in the document."""
        node = self.root
        line: int | None = 1
        for key in loc:
            if isinstance(node, CommentedMap) and key in node:
                line = node.lc.key(key)[0] + 1
                node = node[key]
            elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
                line = node.lc.item(key)[0] + 1
                node = node[key]
            else:
                break
        return line

    def problem(self, loc: Sequence[Any], message: str) -> Problem:
        where = ".".join(str(k) for k in loc)
        return Problem(file=self.file, line=self.line_of(loc), where=where, message=message)

    def plain(self) -> Any:
        return _plain(self.root)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def load(path: Path, error: type[InputError] = InputError) -> YamlDoc:
    """Parse ``path``; a syntax error becomes an :class:`InputError` with file and line."""
    if not path.is_file():
        raise error([Problem(str(path), None, "", "file not found")])
    yaml = YAML(typ="rt")
    try:
        root = yaml.load(path.read_text(encoding="utf-8"))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise error([Problem(str(path), line, "", f"invalid YAML: {exc.problem or exc.context}")]) from None
    if not isinstance(root, CommentedMap):
        raise error([Problem(str(path), 1, "", "expected a mapping at the top of the file")])
    return YamlDoc(path, root)


def describe(err: dict[str, Any]) -> str:
    """A short 'what was expected' message for one pydantic error."""
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see `pitstop schema`)"
    got = err.get("input")
    if kind and not isinstance(got, dict | list) and got is not None and kind != "value_error":
        return f"{msg} (got {got!r})"
    return msg.removeprefix("Value error, ")


def validate(doc: YamlDoc, model: type[M], error: type[InputError], data: Any = None, **context: Any) -> M:
    """Validate ``doc`` (or ``data`` taken from it) against ``model``; every problem gets file:line."""
    try:
        return model.model_validate(doc.plain() if data is None else data, context=context or None)
    except ValidationError as exc:
        problems = [doc.problem(_clean_loc(e["loc"]), describe(dict(e))) for e in exc.errors()]
        raise error(problems) from None


def _clean_loc(loc: Sequence[Any]) -> list[Any]:
    # pydantic inserts union/tagged-union member names into loc; keep only real keys and indexes.
    out: list[Any] = []
    for part in loc:
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue
        out.append(part)
    return out


_announce: Callable[[str, str], None] | None = None
_announced: set[tuple[str, Path]] = set()


def on_load(hook: Callable[[str, str], None] | None) -> None:
    """Tell ``hook(kind, "absolute path[ (shadows other path)]")`` about every config and runbook file loaded
    (the CLI prints it first: ``./config`` in the working directory is searched before the project's, so the
    operator sees which file was used and which one it hid)."""
    global _announce
    _announce = hook


def announce(kind: str, path: Path, shadows: Path | None = None) -> None:
    key = (kind, path.resolve())
    if _announce is not None and key not in _announced:
        _announced.add(key)
        _announce(kind, str(key[1]) + (f" (shadows {shadows.resolve()})" if shadows else ""))
