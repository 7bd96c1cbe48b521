"""Config problems as people read them: ``file:line:col: path: what is wrong``, from pydantic's
validation errors and from each detector's parameter model, and the error that carries them."""
from __future__ import annotations

import re
import types
from typing import Any

from pydantic import BaseModel, ValidationError

from plantwatch.detectors import REGISTRY

from plantwatch.daemon.config.checks import did_you_mean, entry_label
from plantwatch.daemon.config.loader import Located


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` lists ``file:line:col: path: message``."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s) in config\n" + "\n".join(f"  {p}" for p in problems))


def fmt_path(path: tuple[Any, ...], data: Any = None) -> str:
    """``detectors[h2s-limit].params.high``: entries of id lists by their id, others by index."""
    out = ""
    for k, p in enumerate(path):
        if isinstance(p, int):
            out += f"[{entry_label(data, tuple(path[:k + 1])) or p}]"
        else:
            out += f".{p}" if out else str(p)
    return out or "(top level)"


def model_at(root: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model of the mapping at ``path`` under ``root`` (to suggest its keys), if there is one."""
    import typing

    def unwrap(tp: Any) -> Any:  # Annotated[X, ...] -> X; X | None -> X
        while True:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if typing.get_origin(tp) is typing.Annotated or (typing.get_origin(tp) in (typing.Union, types.UnionType)
                                                               and len(args) == 1):
                tp = args[0]
            else:
                return tp

    tp: Any = root
    for seg in path:
        tp = unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(seg, str) and seg in tp.model_fields:
            tp = tp.model_fields[seg].annotation
        elif typing.get_origin(tp) in (list, tuple) and isinstance(seg, int):
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_REF = re.compile(r"^(?P<path>[A-Za-z_]+(?:\[\d+\])?(?:\.[A-Za-z_]+(?:\[\d+\])?)*): (?P<msg>.*)$")


def _parse_ref(ref: str) -> tuple[Any, ...]:
    out: list[Any] = []
    for part in ref.split("."):
        m = re.match(r"^([A-Za-z_]+)(?:\[(\d+)\])?$", part)
        if not m:
            break
        out.append(m.group(1))
        if m.group(2) is not None:
            out.append(int(m.group(2)))
    return tuple(out)


def validation_problems(err: ValidationError, located: Located, root: type[BaseModel]) -> list[str]:
    """``file:line:col: path: what`` for each error of validating ``located`` against ``root``
    (a model: it names the keys suggested for an unknown one)."""
    out: list[str] = []
    for e in err.errors(include_url=False):
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith(("function-after", "tagged-union"))))
        msg = e["msg"].removeprefix("Value error, ")
        # cross-reference problems come as "path: message; path: message"
        parts = msg.split("\n") if e["type"] == "value_error" else [msg]
        for part in parts:
            m = _REF.match(part)
            if m and e["type"] == "value_error":
                path = loc + _parse_ref(m.group("path"))
                text = m.group("msg")
            else:
                path, text = loc, part
            if e["type"] == "extra_forbidden":
                model = model_at(root, path[:-1])
                text = f"unknown key {path[-1]!r}{did_you_mean(path[-1], model.model_fields if model else ())}"
            elif e["type"] == "missing":
                text = f"missing required key {path[-1]!r}"
            elif "input" in e and e["type"] not in ("value_error",) and not isinstance(e["input"], (dict, list)):
                text = f"{text} (got {e['input']!r})"
            out.append(located_problem(located, path, text))
    return out


def located_problem(located: Located, path: tuple[Any, ...], text: str) -> str:
    return f"{located.where(path)}: {fmt_path(path, located.data)}: {text}"


def param_problems(located: Located) -> list[str]:
    """Validate each detector's params against its type's model, with exact locations."""
    out: list[str] = []
    dets = located.data.get("detectors") if isinstance(located.data, dict) else None
    if not isinstance(dets, list):
        return out
    for i, d in enumerate(dets):
        if not isinstance(d, dict) or d.get("type") not in REGISTRY or not isinstance(d.get("params", {}), dict):
            continue
        try:
            REGISTRY[d["type"]].Params.model_validate(d.get("params", {}))
        except ValidationError as err:
            for e in err.errors(include_url=False):
                path = ("detectors", i, "params") + tuple(e["loc"])
                text = e["msg"].removeprefix("Value error, ")
                if e["type"] == "extra_forbidden":
                    allowed = ", ".join(REGISTRY[d["type"]].Params.model_fields)
                    text = (f"unknown parameter {path[-1]!r} for detector type {d['type']!r}"
                            f"{did_you_mean(path[-1], REGISTRY[d['type']].Params.model_fields)} (allowed: {allowed})")
                elif "input" in e and not isinstance(e["input"], (dict, list)) and e["type"] != "value_error":
                    text = f"{text} (got {e['input']!r})"
                out.append(located_problem(located, path, text))
    return out


def line_col(located: Located, problem: str) -> tuple[int, int]:
    """Sort key of a ``file:line:col: ...`` problem."""
    rest = problem[len(located.source) + 1:].split(":", 2)
    try:
        return int(rest[0]), int(rest[1])
    except (ValueError, IndexError):
        return 0, 0
