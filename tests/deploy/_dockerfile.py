"""A small Dockerfile reader: enough to check the instructions this project's Dockerfile uses."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-cased: FROM, RUN, COPY, ...
    args: str  # the rest of the (joined) line

    def words(self) -> list[str]:
        return shlex.split(self.args)

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), self.args
        assert all(isinstance(v, str) for v in value), self.args
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name or self.base}, got {len(found)}"
        return found[0]

    def pairs(self, keyword: str) -> dict[str, str]:
        """KEY=value pairs of every ENV / LABEL / ARG instruction in this stage."""
        out: dict[str, str] = {}
        for instruction in self.all(keyword):
            for word in instruction.words():
                key, _, value = word.partition("=")
                out[key] = value
        return out


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]


@dataclass(frozen=True)
class Copy:
    sources: list[str]
    dest: str
    from_stage: str | None


def logical_lines(text: str) -> list[str]:
    """Join backslash continuations; drop comments and blank lines (parser directives included)."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            words = instruction.words()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert instruction.keyword == "ARG", f"only ARG may precede the first FROM: {line}"
            key, _, value = instruction.args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


def copy_of(instruction: Instruction) -> Copy:
    words = instruction.words()
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
    return Copy(sources=paths[:-1], dest=paths[-1], from_stage=from_stage)


def healthcheck(instruction: Instruction) -> tuple[dict[str, str], list[str]]:
    """The options (``--interval`` ...) and the exec-form command of a HEALTHCHECK."""
    options_part, sep, command = instruction.args.partition("CMD ")
    assert sep, "HEALTHCHECK needs a CMD"
    options = {}
    for word in shlex.split(options_part):
        key, _, value = word.removeprefix("--").partition("=")
        options[key] = value
    return options, Instruction("CMD", command.strip()).exec_form()


def run_commands(instruction: Instruction) -> list[str]:
    """The ``&&``-joined shell commands of one RUN, each with its words normalised by spaces."""
    return [" ".join(part.split()) for part in instruction.args.split("&&")]
