"""The config file as text: the commented template, and editing a tomlkit document in place.

`app.config` reads and saves through these; comments, key order and keys Lampchat does not
know are kept because every change is made on the parsed tomlkit document.
"""

from __future__ import annotations

import importlib.resources
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit

from app.atomic_file import atomic_write_text
from app.config_schema import ENDPOINT_SCHEMA, SCHEMA, Field

TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
"""A `[table]` or `[[array]]` header line; group 1 is its name."""


def render_template() -> str:
    """The commented default config (what `assets/config.toml` holds), made from the schema."""
    lines = [
        "# Lampchat configuration.",
        "#",
        "# Every key is optional. A commented-out line shows the default: remove the '# ' in front",
        "# of it to change the value. Precedence: command-line flags > environment variables",
        "# (LAMPCHAT_<SECTION>__<KEY>, e.g. LAMPCHAT_GENERATION__TEMPERATURE=0.2) > this file >",
        "# defaults. `lampchat config show` prints the effective values and where each came from;",
        "# `lampchat config validate` checks this file.",
    ]
    for section, fields in SCHEMA.items():
        lines += ["", f"[{section}]"]
        for field in fields.values():
            lines += _template_key(field)
    lines += [
        "",
        "# Remote endpoints (OpenAI-compatible servers), one [remote.NAME] table each, e.g.:",
        "#",
        "# [remote.local]",
    ]
    examples = {"base_url": "http://127.0.0.1:8080/v1", "api_key_env": "LOCAL_LLM_API_KEY"}
    for field in ENDPOINT_SCHEMA.values():
        value = examples.get(field.key, field.default)
        lines += _comment(f"{field.help} ({field.allowed()})", "# # ")
        lines.append(f"# {field.key} = {tomlkit.item(value).as_string()}")
    return "\n".join(lines) + "\n"


def _comment(text: str, prefix: str = "# ") -> list[str]:
    return textwrap.wrap(text, width=96, initial_indent=prefix, subsequent_indent=prefix)


def _template_key(field: Field) -> list[str]:
    return [*_comment(f"{field.help} ({field.allowed()})"),
            f"# {field.key} = {tomlkit.item(field.default).as_string()}"]


def template_text() -> str:
    return importlib.resources.files("assets").joinpath("config.toml").read_text(encoding="utf-8")


def write_template(path: Path) -> None:
    """Write the commented default config to `path` (which must not exist yet)."""
    atomic_write_text(path, template_text())




def lookup(data: dict[str, Any], dotted: str) -> Any:
    """The value at `dotted` in nested dicts, or None."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def uncomment_placeholders(text: str, pending: Mapping[str, Any]) -> str:
    """Turn the template's `# key = default` line into `key = value` for each key being set
    that the file does not define yet, so the value lands under its help comment."""
    try:
        present = tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.ParseError:
        return text
    lines = text.splitlines(keepends=True)
    for dotted, value in pending.items():
        section, _, key = dotted.rpartition(".")
        if lookup(present, dotted) is not None or section.startswith("remote."):
            continue
        current = None
        for i, line in enumerate(lines):
            header = TABLE_HEADER.match(line)
            if header:
                current = header.group(1).strip()
                continue
            if current == section and re.match(rf"^#\s?{re.escape(key)}\s*=", line):
                ending = "\n" if line.endswith("\n") else ""
                lines[i] = f"{key} = {tomlkit.item(value).as_string()}{ending}"
                break
    return "".join(lines)


def set_in_document(doc: tomlkit.TOMLDocument, dotted: str, value: Any) -> None:
    """Set `dotted` in a tomlkit document, adding the tables it needs."""
    parts = dotted.split(".")
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        if part not in node:
            table = tomlkit.table(is_super_table=(i == 0 and len(parts) == 3))
            node.add(part, table) if node is doc else node.append(part, table)
        node = node[part]
    node[parts[-1]] = value
