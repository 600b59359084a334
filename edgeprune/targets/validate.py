"""A mapping (parsed YAML, a probe's facts) into a validated DeviceProfile, or one ProfileError naming
every bad field. Shared by the profile loader and the host probe, so neither imports the other."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from edgeprune.errors import ProfileError
from edgeprune.targets.schema import DeviceProfile

_SCHEMA_HINT = ("correct the field(s) named above; `edgeprune profiles show jetson-agx-orin` prints a valid profile "
                "and edgeprune/targets/schema.py lists every field")


def profile_from_mapping(data: Any, where: str = "<profile>") -> DeviceProfile:
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: top level is a {type(data).__name__}, expected a mapping of profile fields",
                           hint="start the file with 'name: ...', 'vendor: ...', 'kind: ...' (no leading '-')")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as err:
        raise schema_error(err, where) from None
    except RecursionError as err:
        raise ProfileError(f"{where}: profile is nested too deeply", hint="flatten the document") from err


def schema_error(err: ValidationError, where: str) -> ProfileError:
    """One ProfileError listing every problem, each with its field path; `.problems` keeps them apart."""
    problems = validation_problems(err)
    text = "; ".join(f"field '{path}': {msg}" if path else msg for path, msg in problems)
    out = ProfileError(f"{where}: {text}", hint=_SCHEMA_HINT)
    out.problems = problems
    out.where = where
    return out


def validation_problems(err: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    errors = err.errors()
    for e in errors:
        loc = [_loc_part(part) for part in e["loc"]]
        if e["type"] == "too_short" and any(len(o["loc"]) > len(e["loc"]) and o["loc"][:len(e["loc"])] == e["loc"]
                                            for o in errors):
            continue  # pydantic also calls a list "too short" when one of its items failed: only noise
        ctx = e.get("ctx") or {}
        if e["type"] == "profile_consistency" and "problems" in ctx:
            base = ".".join(loc)
            out.extend((f"{base}.{path}" if base else path, msg) for path, msg in ctx["problems"])
            continue
        msg = one_line(e["msg"]).removeprefix("Value error, ")
        if loc and loc[-1] == "[key]":
            loc, msg = loc[:-1], f"bad key: {msg}"
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not in the profile schema; check the spelling)"
        elif e["type"] != "missing" and not isinstance(e.get("input"), (dict, list, tuple)):
            got = repr(e.get("input"))
            if "v" not in ctx:  # our own messages (ctx 'v') already quote the value
                msg += f" (got {got if len(got) <= 60 else got[:57] + '...'})"
        out.append((".".join(loc), one_line(msg)))
    return out


def _loc_part(part: Any) -> str:
    text = str(part)
    return text if text.isprintable() else repr(text)[1:-1]  # a key holding a newline must not break the line


def one_line(value: Any) -> str:
    return " ".join(str(value).split())
