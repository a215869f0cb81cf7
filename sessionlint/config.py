"""``[tool.sessionlint]`` in the nearest ``pyproject.toml`` -> :class:`Settings`.

Command-line flags win over the file: each flag given replaces that key's value.
Every problem is a :class:`ConfigError` naming the file and the key; the CLI turns it
into one line on stderr and exit status 2.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

CODE_OR_PREFIX = re.compile(r"^SES[0-9]{0,3}$")


class ConfigError(Exception):
    """Bad configuration: unknown key, wrong type, unknown code."""


@dataclass(frozen=True)
class Settings:
    select: tuple[str, ...] = ("SES",)
    ignore: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    extend_exclude: tuple[str, ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    session_factories: tuple[str, ...] = ()
    # The baseline file (``baseline = "..."``, relative to the pyproject.toml): its
    # findings are not reported. It filters results, so it is not in the cache key.
    baseline: Path | None = None
    # Where the configuration came from (None: defaults) and the project root
    # the cross-module index is built over.
    config_path: Path | None = None
    root: Path = field(default_factory=Path.cwd)

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def cache_key(self) -> str:
        """Everything that changes results, as a stable string (for the result cache)."""
        return repr(
            (
                self.select,
                self.ignore,
                self.per_file_ignores,
                self.session_factories,
            )
        )


_KEYS = {
    "select": "codes",
    "ignore": "codes",
    "exclude": "strings",
    "extend-exclude": "strings",
    "per-file-ignores": "table",
    "session-factories": "strings",
    "baseline": "path",
}


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start`` that has ``[tool.sessionlint]``."""
    here = start if start.is_dir() else start.parent
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                # A broken pyproject.toml that may be ours: let load_settings report it.
                return candidate
            if "sessionlint" in data.get("tool", {}):
                return candidate
    return None


def find_root(start: Path) -> Path:
    """The project root: nearest directory with a pyproject.toml or .git, else ``start``."""
    here = start if start.is_dir() else start.parent
    for directory in (here, *here.parents):
        if (directory / "pyproject.toml").is_file() or (directory / ".git").exists():
            return directory
    return here


def load_settings(path: Path | None, root: Path | None = None) -> Settings:
    """Read ``[tool.sessionlint]`` from ``path`` (a pyproject.toml), or defaults."""
    if path is None:
        return Settings(root=root or Path.cwd())
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot decode as UTF-8: {exc.reason}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    table = data.get("tool", {}).get("sessionlint", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.sessionlint] must be a table")
    return parse_table(table, source=str(path), base=Settings(config_path=path, root=root or path.parent))


def parse_table(table: dict[str, Any], source: str, base: Settings | None = None) -> Settings:
    """Validate one ``[tool.sessionlint]``-shaped table (also used by fixture headers)."""
    settings = base or Settings()
    changes: dict[str, Any] = {}
    for key, value in table.items():
        kind = _KEYS.get(key)
        if kind is None:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(f"{source}: unknown key '{key}' in [tool.sessionlint] (known: {known})")
        where = f"{source}: [tool.sessionlint] {key}"
        attr = key.replace("-", "_")
        if kind == "codes":
            changes[attr] = parse_codes(value, where)
        elif kind == "strings":
            changes[attr] = _strings(value, where)
        elif kind == "path":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: expected a file path, got {value!r}")
            base_dir = settings.config_path.parent if settings.config_path is not None else settings.root
            changes[attr] = base_dir / value
        else:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table of glob = [codes]")
            changes[attr] = tuple(
                (str(glob), parse_codes(codes, f"{where}.\"{glob}\""))
                for glob, codes in value.items()
            )
    return replace(settings, **changes)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def parse_codes(value: Any, where: str) -> tuple[str, ...]:
    """Codes or prefixes (``SES101``, ``SES1``, ``SES``): a list, or a comma-separated string."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise ConfigError(f"{where}: expected a list of codes, got {value!r}")
    for item in items:
        if not CODE_OR_PREFIX.match(item.upper()):
            raise ConfigError(f"{where}: '{item}' is not a sessionlint code or prefix (like SES101 or SES1)")
    return tuple(item.upper() for item in items)
