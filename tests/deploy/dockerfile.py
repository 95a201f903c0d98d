"""A small Dockerfile reader: instructions (continuations joined, comments dropped), stages,
ARG substitution. Enough to check our own Dockerfile; not a general implementation."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$(?:\{([A-Za-z_]\w*)(?::-([^}]*))?\}|([A-Za-z_]\w*))")


@dataclass(frozen=True)
class Instruction:
    line: int
    """1-based line where the instruction starts."""
    keyword: str
    """Upper case: FROM, RUN, ..."""
    args: str

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD/RUN, or None for the shell form."""
        return _json_array(self.args)


@dataclass
class Stage:
    base: str
    """The FROM argument as written (ARGs unexpanded)."""
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def args(self) -> dict[str, str]:
        """ARG defaults declared in this stage (a bare `ARG X` maps to '')."""
        out: dict[str, str] = {}
        for ins in self.all("ARG"):
            name, _, default = ins.args.partition("=")
            out[name.strip()] = default.strip().strip('"')
        return out

    def env(self) -> dict[str, str]:
        """ENV key=value pairs set in this stage, in order."""
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            words = shlex.split(ins.args)
            if words and "=" not in words[0]:  # legacy `ENV KEY value`
                out[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, _, value = word.partition("=")
                out[key] = value
        return out


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    """ARG defaults before the first FROM (the only ones FROM can use)."""
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def resolve_from(self, stage: Stage, build_args: dict[str, str] | None = None) -> str:
        return expand(stage.base, {**self.global_args, **(build_args or {})})

    def chain(self, build_args: dict[str, str] | None = None) -> list[Stage]:
        """The final stage and the stages it is built FROM, final first, for these build args."""
        names = {s.name for s in self.stages if s.name}
        stage = self.stages[-1]
        out = [stage]
        while (base := self.resolve_from(stage, build_args)) in names:
            stage = self.stage(base)
            out.append(stage)
        return out


def expand(text: str, variables: dict[str, str]) -> str:
    """Substitute `$X`, `${X}` and `${X:-default}` as the builder does for ARG values."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        value = variables.get(name, "")
        if not value and m.group(2) is not None:
            return m.group(2)
        return value

    return _VAR.sub(sub, text)


def _json_array(text: str) -> list[str] | None:
    stripped = text.strip()
    if not stripped.startswith("["):
        return None
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        return None  # Docker falls back to the shell form, silently
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comment lines (also inside one) dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    if pending:
        raise ValueError(f"line {start}: the file ends inside a continued instruction")
    return out


def parse(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions(text):
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if ins.keyword != "ARG":
                raise ValueError(f"line {ins.line}: only ARG may come before the first FROM")
            key, _, default = ins.args.partition("=")
            global_args[key.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(global_args, stages)


def read(path: Path) -> Dockerfile:
    return parse(path.read_text())
