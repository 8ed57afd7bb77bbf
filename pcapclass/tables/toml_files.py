"""Where the shipped rules are, and the one TOML reader every table loader uses.

A fault in a rules file is a ``RulesError`` that names the file (and, from the loaders, the
key path, e.g. ``interface[3].service``), because a typo in a table would otherwise silently
mislabel traffic.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ..errors import RulesError


def _rules_dir() -> Path:
    """The shipped rules: ``rules/`` beside the package in a checkout (and an editable
    install), or the copy a wheel installs inside the package (``pcapclass/rules``)."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "rules"
    return installed if installed.is_dir() else package.parent / "rules"


#: the rules shipped with pcapclass (the repository's rules/ folder)
RULES_DIR = _rules_dir()


def read_toml(path: str) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into a RulesError that names the file."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise RulesError("no such file", path=path) from None
    except IsADirectoryError:
        raise RulesError("is a directory, not a rules file", path=path) from None
    except PermissionError:
        raise RulesError("permission denied", path=path) from None
    except OSError as exc:
        raise RulesError(f"cannot read ({exc.strerror or exc})", path=path) from None
    except UnicodeDecodeError as exc:
        raise RulesError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"not valid TOML: {exc}", path=path) from None


def no_unknown_keys(row: dict[str, Any], allowed: frozenset[str], path: str, key: str) -> None:
    """Raise RulesError naming the first key of ``row`` (the table at ``key`` of the file
    ``path``; "" at the top) that is not ``allowed``, with the keys that are."""
    unknown = sorted(set(row) - allowed)
    if unknown:
        full = f"{key}.{unknown[0]}" if key else unknown[0]
        raise RulesError(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})", path=path, key=full)
