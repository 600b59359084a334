"""Loading device profiles: shipped names (package data `edgeprune.hw_profiles`), YAML paths, or "host".

Every failure is one ProfileError line naming the file and the field path, with a fix hint; a profile
that breaks several rules reports all of them (joined by "; "), so one edit round fixes the file.
"""
from __future__ import annotations

import difflib
import functools
import os
from importlib import resources
from pathlib import Path

import yaml

from edgeprune.errors import ProfileError
from edgeprune.targets.schema import DeviceProfile
from edgeprune.targets.validate import one_line, profile_from_mapping, schema_error, validation_problems  # noqa: F401

PACKAGE = "edgeprune.hw_profiles"
HOST = "host"
_SUFFIXES = (".yaml", ".yml")


def profile_names() -> list[str]:
    """Names of the shipped profiles (file stems), sorted."""
    root = resources.files(PACKAGE)
    return sorted(e.name.rsplit(".", 1)[0] for e in root.iterdir() if e.name.endswith(_SUFFIXES))


def load_profile(name_or_path: str | os.PathLike | DeviceProfile) -> DeviceProfile:
    """A shipped profile by name, a profile file by path (.yaml/.yml or anything with a '/'), or "host"."""
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    text = os.fspath(name_or_path) if isinstance(name_or_path, (str, os.PathLike)) else None
    if not text:
        raise ProfileError(f"not a profile name or path: {name_or_path!r}",
                           hint=f"use one of {', '.join(profile_names() + [HOST])} or a path to a .yaml file")
    if text == HOST:
        return _host()
    if isinstance(name_or_path, os.PathLike) or text.lower().endswith(_SUFFIXES) or "/" in text or os.sep in text:
        return load_profile_file(text)
    return _shipped(text.strip().lower())


def list_profiles() -> list[DeviceProfile]:
    """Every shipped profile, sorted by name (the probed host is not included)."""
    return [_shipped(n) for n in profile_names()]


def load_profile_file(path: str | os.PathLike) -> DeviceProfile:
    where = os.fspath(path)
    p = Path(where)
    if not p.exists():
        raise ProfileError(f"{where}: profile file not found",
                           hint=f"check the path, or use a shipped name ({', '.join(profile_names())})")
    if not p.is_file():
        raise ProfileError(f"{where}: not a file", hint="pass the path of a .yaml profile")
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ProfileError(f"{where}: cannot read profile: {err.strerror or err}", hint="check the file permissions") from err
    return profile_from_text(_decode(raw, where), where)


def profile_from_text(text: str, where: str = "<profile>") -> DeviceProfile:
    """Parse YAML text (safe_load only) and validate it."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ProfileError(f"{where}: YAML syntax error{at}: {one_line(err.problem or err)}",
                           hint="fix the YAML syntax (indentation, quotes, ':' after keys)") from err
    except Exception as err:  # PyYAML constructors raise plain ValueError/TypeError/RecursionError on odd scalars
        raise ProfileError(f"{where}: cannot parse YAML: {type(err).__name__}: {one_line(err)}",
                           hint="quote unusual scalars (dates, very long or nested values)") from err
    if data is None:
        raise ProfileError(f"{where}: profile file is empty", hint="write a YAML mapping with name, vendor, kind, ...")
    return profile_from_mapping(data, where)


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProfileError(f"{where}: not UTF-8 text (byte {err.start})", hint="save the profile as UTF-8 YAML") from err


@functools.lru_cache(maxsize=None)
def _shipped(name: str) -> DeviceProfile:
    names = profile_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        guess = f"did you mean '{close[0]}'? " if close else ""
        raise ProfileError(f"unknown device profile '{name}' (available: {', '.join(names + [HOST])})",
                           hint=f"{guess}use one of the available names, or a path to a .yaml file")
    where = f"hw_profiles/{name}.yaml"
    entry = next(e for e in resources.files(PACKAGE).iterdir() if e.name in (f"{name}.yaml", f"{name}.yml"))
    profile = profile_from_text(_decode(entry.read_bytes(), where), where)
    if profile.name != name:
        raise ProfileError(f"{where}: field 'name': '{profile.name}' differs from the file name",
                           hint=f"set name: {name}, or rename the file")
    return profile


@functools.lru_cache(maxsize=1)
def _host() -> DeviceProfile:
    # the machine does not change while the process runs; probing twice costs an nvidia-smi call
    from edgeprune.targets.probe import probe_host

    return probe_host()


__all__ = ["DeviceProfile", "load_profile", "load_profile_file", "list_profiles", "profile_names",
           "profile_from_text", "profile_from_mapping", "schema_error", "validation_problems"]
