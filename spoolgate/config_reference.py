"""The configuration reference: every TOML key, its type, default and meaning, as Markdown.

Generated from the settings model itself so it cannot drift: the sections and keys come from
the dataclasses reachable from :class:`~spoolgate.config.Settings`, the types from their
annotations, the defaults from their default values, the meanings from the ``# comment`` on
each field in ``spoolgate/config.py``, and the choices, minimums and readers of each key
from the loader's own calls (read with :mod:`ast`). Where the file's shape differs from the
dataclasses (flattened tables, renamed keys, derived fields) the tables below say so.

``python -m spoolgate.config_reference > docs/config-reference.md`` regenerates the document;
tests/unit/test_config_reference.py fails when it is stale. A field of a type this module
does not know is shown by its annotation rather than failing.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import sys
import tokenize
import types
import typing
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spoolgate import config
from spoolgate.config import Endpoint, Route, Settings

REGENERATE = "python -m spoolgate.config_reference > docs/config-reference.md"


@dataclass(frozen=True, slots=True)
class ReferenceKey:
    """One key of the reference: where it sits, what it takes and what it means."""

    table: str                            # "[smtp]", "[[domains]]", ...
    name: str                             # the key as written in the TOML file
    type: str                             # readable: "integer, at least 1", "one of: a, b"
    default: str                          # as shown: TOML, or "unset", "required", ...
    toml: str | None                      # TOML value equal to the default; None: none
    meaning: str
    fields: tuple[tuple[str, str], ...]   # (dataclass, field) pairs this key sets


@dataclass(frozen=True, slots=True)
class ReferenceTable:
    """One TOML table (or array of tables) and its keys."""

    name: str
    about: str
    keys: tuple[ReferenceKey, ...]


# Fields of Settings that are no key of the file, and why.
NOT_KEYS = {
    ("Settings", "source"): "the path of the file itself, set by load_settings",
}

# [[domains]] is one flat table: the spam policy's thresholds carry a spam_ prefix there.
RENAMED = {
    ("SpamPolicySettings", "tag"): "spam_tag",
    ("SpamPolicySettings", "quarantine"): "spam_quarantine",
    ("SpamPolicySettings", "reject"): "spam_reject",
    ("SpamPolicySettings", "subject_prefix"): "spam_subject_prefix",
}

# The loader passes [delivery]'s values as these defaults of each domain (see _domains).
INHERITED = {("DomainSettings", "retry"), ("DomainSettings", "retention_days")}

# Required keys get an example instead of a default.
EXAMPLES = {
    ("DomainSettings", "name"): '"example.org"',
    ("DomainSettings", "route"): '"smtp://mail.example.org:25"',
}

# Defaults computed at start-up from the machine, shown in words.
COMPUTED = {"gethostname": "this machine's host name", "getfqdn": "this machine's FQDN"}

# How the loader reads a key, where that says more than its Python type.
READERS = {
    "_daemon_address": "tcp:HOST:PORT or unix:PATH",
    "_http_url": "http://HOST:PORT",
    "_sender_list": "list of addresses or domains",
}

_UNITS = {"_days": "days", "_minutes": "minutes", "_ms": "milliseconds"}


@dataclass(frozen=True, slots=True)
class _Loader:
    """What the loader's source says about each key name (keys are matched by name)."""

    readers: dict[str, set[str]]
    choices: dict[str, tuple[str, ...]]
    choice_defaults: dict[str, str]
    minimums: dict[str, set[float]]
    keys: frozenset[str]


def _source_tree() -> tuple[str, ast.Module]:
    source = inspect.getsource(config)
    return source, ast.parse(source)


def _string_tuple(node: ast.expr) -> tuple[str, ...] | None:
    if isinstance(node, ast.Name):
        value = getattr(config, node.id, None)
    else:
        try:
            value = ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError):
            return None
    if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return None


def _read_loader(tree: ast.Module) -> _Loader:
    readers: dict[str, set[str]] = defaultdict(set)
    choices: dict[str, tuple[str, ...]] = {}
    choice_defaults: dict[str, str] = {}
    minimums: dict[str, set[float]] = defaultdict(set)
    keys: set[str] = set()
    tables = {"table", "t", "top"}
    # Helpers called as helper(table, name, ...): their second parameter is the key.
    helpers = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
               and len(node.args.args) > 1 and node.args.args[1].arg == "name"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, args = node.func, node.args
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and func.value.id in tables and func.attr in ("get", "number", "path"):
            reader, at = func.attr, 0
        elif isinstance(func, ast.Name) and func.id in helpers and args \
                and isinstance(args[0], ast.Name) and args[0].id in tables:
            reader, at = func.id, 1
        else:
            continue
        if len(args) <= at or not isinstance(args[at], ast.Constant) \
                or not isinstance(args[at].value, str):
            continue
        key = args[at].value
        keys.add(key)
        readers[key].add(reader)
        found = _string_tuple(args[at + 2]) if len(args) > at + 2 else None
        if found is not None:
            if choices.get(key, found) != found:
                raise ValueError(f"key {key!r} has different choices in two places of the loader")
            choices[key] = found
            default = _literal(args[at + 1])
            if isinstance(default, str):
                choice_defaults[key] = default
        if reader == "number" and len(args) > 2:
            minimum = _literal(args[2])
            if isinstance(minimum, int | float):
                minimums[key].add(minimum)
        elif reader == "_seconds":
            minimum = _literal(args[3]) if len(args) > 3 else 0
            if isinstance(minimum, int | float):
                minimums[key].add(minimum)
    return _Loader(dict(readers), choices, choice_defaults, dict(minimums), frozenset(keys))


def _comments(source: str, tree: ast.Module) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """Each dataclass field's trailing comment (or the comment lines right above it), and
    each class's docstring."""
    by_line: dict[int, str] = {}
    comment_only: set[int] = set()
    first_on_line: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            by_line[token.start[0]] = token.string.lstrip("#").strip()
            if token.start[0] not in first_on_line:
                comment_only.add(token.start[0])
        if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            first_on_line.add(token.start[0])
    fields: dict[tuple[str, str], str] = {}
    docs: dict[str, str] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        doc = " ".join((ast.get_docstring(node) or "").split())
        docs[node.name] = doc.replace("``", "`")  # reStructuredText to Markdown
        for statement in node.body:
            if not (isinstance(statement, ast.AnnAssign)
                    and isinstance(statement.target, ast.Name)):
                continue
            end = statement.end_lineno or statement.lineno
            trailing = [by_line[n] for n in range(statement.lineno, end + 1) if n in by_line]
            above: list[str] = []
            line = statement.lineno - 1
            while line in comment_only:
                above.insert(0, by_line[line])
                line -= 1
            fields[(node.name, statement.target.id)] = " ".join(trailing or above)
    return fields, docs


def _settings_class(hint: Any) -> type | None:
    """The settings dataclass inside *hint* (``X``, ``X | None``, ``tuple[X, ...]``), if any."""
    if dataclasses.is_dataclass(hint) and hint.__name__.endswith("Settings"):
        return hint  # type: ignore[return-value]
    for arg in typing.get_args(hint):
        found = _settings_class(arg)
        if found is not None:
            return found
    return None


def _without_none(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else repr(value)


def _toml(value: Any) -> str:
    """*value* written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str | Path | Endpoint | Route):
        return json.dumps(str(value))
    if isinstance(value, frozenset):
        value = sorted(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _type_text(hint: Any, key: str, loader: _Loader) -> str:
    hint = _without_none(hint)
    readers = loader.readers.get(key, set())
    choices = loader.choices.get(key)
    special = [READERS[reader] for reader in sorted(readers) if reader in READERS]
    origin = typing.get_origin(hint)
    if special:
        text = special[0]
    elif origin in (tuple, frozenset, list):
        inner = typing.get_args(hint)[0]
        if choices:
            text = "list of: " + ", ".join(choices)
        elif inner is Endpoint:
            text = "host:port or list of host:port" if "_listen" in readers \
                else "list of host:port"
        else:
            text = "list of " + {str: "strings", int: "integers"}.get(inner, str(inner))
    elif choices:
        text = "one of: " + ", ".join(choices)
    elif hint is bool:
        text = "boolean"
    elif hint is int:
        text = "integer"
    elif hint is float:
        unit = next((u for end, u in _UNITS.items() if key.endswith(end)), None)
        if unit is None and ("_seconds" in readers or key.endswith("timeout")):
            unit = "seconds"
        text = f"number ({unit})" if unit else "number"
    elif hint is str:
        text = "string"
    elif hint is Path:
        text = "path"
    elif hint is Endpoint:
        text = "host:port"
    elif hint is Route:
        text = "smtp://host[:port] or lmtp://host[:port]"
    else:
        text = f"`{hint}`"
    minimums = loader.minimums.get(key, set())
    if len(minimums) == 1 and hint in (int, float):
        text += f", at least {_number(next(iter(minimums)))}"
    return text


def _meaning(text: str) -> str:
    # The comments are written for Python readers: None is an unset key in the file.
    return " ".join(word.replace("None", "unset") for word in text.split())


class _Builder:
    def __init__(self) -> None:
        source, tree = _source_tree()
        self.loader = _read_loader(tree)
        self.comments, self.docs = _comments(source, tree)

    def keys(self, table: str, cls: type, path: tuple[tuple[str, str], ...] = (),
             inherited: bool = False) -> list[ReferenceKey]:
        """The keys of *cls*; nested settings are flattened into the same table."""
        hints = typing.get_type_hints(cls)
        found: list[ReferenceKey] = []
        for item in dataclasses.fields(cls):
            where = (cls.__name__, item.name)
            hint = hints[item.name]
            nested = _settings_class(hint)
            if where in NOT_KEYS:
                continue
            if where == ("DomainSettings", "imap"):
                found.extend(self.imap_keys(table, path + (where,)))
            elif nested is not None:
                found.extend(self.keys(table, nested, path + (where,),
                                       inherited or where in INHERITED))
            else:
                found.append(self.key(table, cls, item, hint, path + (where,),
                                      inherited or where in INHERITED))
        return found

    def key(self, table: str, cls: type, item: dataclasses.Field[Any], hint: Any,
            path: tuple[tuple[str, str], ...], inherited: bool) -> ReferenceKey:
        where = (cls.__name__, item.name)
        name = RENAMED.get(where, item.name)
        type_text = _type_text(hint, name, self.loader)
        if where == ("OutboundSettings", "route"):
            # The loader reads the string "mx" (its default) as no route.
            type_text = 'smtp://host[:port], or "mx"'
            default, toml = '`"mx"`', '"mx"'
        elif item.default is not dataclasses.MISSING:
            toml = None if item.default is None else _toml(item.default)
            default = "unset" if toml is None else f"`{toml}`"
            if inherited and toml is not None:
                default = f"`[delivery]`'s (`{toml}`)"
        elif item.default_factory is not dataclasses.MISSING:
            factory = item.default_factory
            name_of = getattr(factory, "__name__", "")
            default, toml = COMPUTED.get(name_of, f"computed: `{name_of}()`"), None
        else:
            example = EXAMPLES.get(where)
            default, toml = (f"required, e.g. `{example}`" if example else "required"), example
        return ReferenceKey(table, name, type_text, default, toml,
                            _meaning(self.comments.get(where, "")), path)

    def imap_keys(self, table: str,
                  path: tuple[tuple[str, str], ...]) -> list[ReferenceKey]:
        # ImapSettings is written as one URL plus two keys: its scheme sets the tls field,
        # and imap_tls only loosens STARTTLS (the values differ from the field's).
        url = ReferenceKey(
            table, "imap", "imaps://host[:port] or imap://host[:port]", "unset", None,
            _meaning(self.comments[("DomainSettings", "imap")]
                     + "; imaps:// is TLS from the start (port 993), imap:// uses STARTTLS "
                       "(port 143)"),
            path + (("ImapSettings", "host"), ("ImapSettings", "port"), ("ImapSettings", "tls")))
        choices = self.loader.choices.get("imap_tls", ())
        default = self.loader.choice_defaults.get("imap_tls")
        mode = ReferenceKey(
            table, "imap_tls", "one of: " + ", ".join(choices),
            f"`{_toml(default)}`" if default else "unset", None,
            _meaning(self.comments[("ImapSettings", "tls")]),
            path + (("ImapSettings", "tls"),))
        ca = ReferenceKey(
            table, "imap_tls_ca", "path", "unset", None,
            _meaning(self.comments[("ImapSettings", "tls_ca")]),
            path + (("ImapSettings", "tls_ca"),))
        return [url, mode, ca]


def tables() -> tuple[ReferenceTable, ...]:
    """Every table of the configuration file, in the order of :class:`Settings`."""
    builder = _Builder()
    found = []
    hints = typing.get_type_hints(Settings)
    for item in dataclasses.fields(Settings):
        cls = _settings_class(hints[item.name])
        if ("Settings", item.name) in NOT_KEYS or cls is None:
            continue
        many = typing.get_origin(hints[item.name]) is tuple
        name = f"[[{item.name}]]" if many else f"[{item.name}]"
        about = builder.docs.get(cls.__name__, "")
        found.append(ReferenceTable(name, about, tuple(builder.keys(name, cls))))
    return tuple(found)


def loader_keys() -> frozenset[str]:
    """Every key name (and table name) the loader reads, from its source."""
    return _read_loader(_source_tree()[1]).keys


def settings_fields() -> frozenset[tuple[str, str]]:
    """Every (dataclass, field) of every settings dataclass reachable from Settings."""
    found: set[tuple[str, str]] = set()
    pending: list[type] = [Settings]
    while pending:
        cls = pending.pop()
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            if (cls.__name__, item.name) not in found:
                found.add((cls.__name__, item.name))
                nested = _settings_class(hints[item.name])
                if nested is not None:
                    pending.append(nested)
    return frozenset(found)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The whole reference as Markdown."""
    lines = [
        "# Configuration reference",
        "",
        f"Generated from `spoolgate/config.py`; do not edit: regenerate with `{REGENERATE}`.",
        "",
        "Every key of the configuration file, its type, default and meaning. "
        "[configuration.md](configuration.md) explains them with examples. "
        "Unknown keys are errors; relative paths are taken relative to the file's folder.",
    ]
    for table in tables():
        lines += ["", f"## `{table.name}`", ""]
        if table.about:
            lines += [table.about, ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for key in table.keys:
            lines.append(f"| `{key.name}` | {_cell(key.type)} | {_cell(key.default)} "
                         f"| {_cell(key.meaning)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
