"""The configuration reference: generated from the settings model and checked against the loader,
so a key cannot be added, renamed or left undocumented without these tests failing."""

from __future__ import annotations

from pathlib import Path

import pytest

from spoolgate.config import ConfigError, load_settings
from spoolgate.config_reference import (
    NOT_KEYS,
    REGENERATE,
    ReferenceKey,
    loader_keys,
    render,
    settings_fields,
    tables,
)

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"


def all_keys() -> list[ReferenceKey]:
    return [key for table in tables() for key in table.keys]


def toml_file(values: dict[str, list[str]]) -> str:
    """A TOML file with *values* (``key = value`` lines) per table, required keys included."""
    lines: list[str] = []
    for table in tables():
        body = [f"{key.name} = {key.toml}" for key in table.keys
                if key.default.startswith("required") and key.toml is not None]
        body += values.get(table.name, [])
        if body or table.name.startswith("[["):
            lines += [table.name, *body, ""]
    return "\n".join(lines)


def test_the_committed_reference_is_up_to_date() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render(), (
        f"docs/config-reference.md is stale: regenerate it with `{REGENERATE}`")


def test_every_documented_key_with_its_default_loads_as_the_default(tmp_path: Path) -> None:
    """All documented defaults written out load (no unknown key) to what omitting them gives."""
    written: dict[str, list[str]] = {}
    count = 0
    for key in all_keys():
        if key.toml is not None and not key.default.startswith("required"):
            written.setdefault(key.table, []).append(f"{key.name} = {key.toml}")
            count += 1
    assert count > 50  # the file below really spells out the defaults
    path = tmp_path / "spoolgate.toml"
    path.write_text(toml_file({}), encoding="utf-8")
    implicit = load_settings(path)
    path.write_text(toml_file(written), encoding="utf-8")
    explicit = load_settings(path)
    assert explicit == implicit


UNSET = [key for key in all_keys() if key.toml is None]


def sample(key: ReferenceKey) -> str:
    """Some value of the key's type; it need not be valid, only read."""
    if key.type.startswith("list"):
        return '["x"]'
    if key.type == "boolean":
        return "true"
    if key.type.startswith(("integer", "number")):
        return "1"
    return '"x"'


@pytest.mark.parametrize("key", UNSET, ids=[f"{key.table}.{key.name}" for key in UNSET])
def test_every_documented_key_without_a_default_is_read(tmp_path: Path, key: ReferenceKey) -> None:
    """A key that is unset by default is still one the loader reads: setting it alone either
    loads or fails validation, never as an unknown key (the file without it loads)."""
    path = tmp_path / "spoolgate.toml"
    path.write_text(toml_file({}), encoding="utf-8")
    load_settings(path)
    path.write_text(toml_file({key.table: [f"{key.name} = {sample(key)}"]}), encoding="utf-8")
    try:
        load_settings(path)
    except ConfigError as error:
        assert error.problem != "unknown key", f"{key.table} {key.name} is documented but unknown"


def test_every_field_of_the_settings_model_is_documented() -> None:
    covered = {where for key in all_keys() for where in key.fields} | set(NOT_KEYS)
    covered |= {("Settings", table.name.strip("[]")) for table in tables()}
    missing = sorted(settings_fields() - covered)
    assert not missing, f"settings fields missing from the reference: {missing}"


def test_every_key_the_loader_reads_is_documented() -> None:
    documented = {key.name for key in all_keys()} | {t.name.strip("[]") for t in tables()}
    missing = sorted(loader_keys() - documented)
    assert not missing, f"keys read by load_settings but not in the reference: {missing}"


def test_every_key_has_a_meaning() -> None:
    missing = [f"{key.table} {key.name}" for key in all_keys() if not key.meaning.strip()]
    assert not missing, ("add a trailing # comment saying what it means to these fields in "
                         f"spoolgate/config.py, then `{REGENERATE}`: {missing}")


def test_types_and_defaults_are_readable() -> None:
    """The reference reads like the file: TOML defaults, words for types, the loader's choices."""
    keys = {(key.table, key.name): key for key in all_keys()}
    assert keys[("[smtp]", "max_recipients")].type == "integer, at least 1"
    assert keys[("[smtp]", "listen")].default == '`["127.0.0.1:2525"]`'
    assert keys[("[web]", "secure_cookies")].default == "`false`"
    assert keys[("[outbound]", "tls")].type == "one of: none, opportunistic, required"
    assert keys[("[[domains]]", "spam_tag")].fields[-1] == ("SpamPolicySettings", "tag")
    assert keys[("[[domains]]", "min_backoff")].default.startswith("`[delivery]`'s")
    assert keys[("[delivery]", "lifetime")].type == "number (seconds), at least 0"
    assert ("[delivery]", "retry") not in keys and ("[node]", "source") not in keys
    text = render()
    assert text.splitlines()[2].startswith("Generated from `spoolgate/config.py`")
    assert all(f"## `{table.name}`" in text for table in tables())
