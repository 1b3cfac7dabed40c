"""The lm-eval YAML templates of ``tasks/lm_eval/``, filled in as data: each template is parsed, its
``@FIELD@`` placeholders are filled in the parsed values, and the result is dumped by a YAML
library, so a value (a path, say) can never add YAML of its own or become a tag."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

TEMPLATES = Path(__file__).parent


@dataclass(frozen=True)
class YAMLTag:
    """A tagged scalar of a template, such as lm-eval's ``!function wsc273.load``: kept as data when
    the template is read, written back with its tag; never filled in."""

    tag: str
    value: str


class _TemplateLoader(yaml.SafeLoader):
    """Safe loading that keeps a template's own ``!tag`` scalars as ``YAMLTag`` values."""


_TemplateLoader.add_multi_constructor(
    "!", lambda loader, suffix, node: YAMLTag(node.tag, loader.construct_scalar(node)))


class _ConfigDumper(yaml.SafeDumper):
    """Safe dumping; only ``YAMLTag`` values (from the templates) are written with a tag."""


_ConfigDumper.add_representer(YAMLTag, lambda dumper, v: dumper.represent_scalar(v.tag, v.value))

PLACEHOLDER = re.compile(r"@([A-Z_]+)@")


def _fill(value, fields: dict[str, str]):
    """``value`` with the ``@FIELD@`` placeholders of its strings replaced, in one pass (a filled-in
    value is never read for placeholders again); tags, keys and other scalars stay as they are."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: fields.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: _fill(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, fields) for v in value]
    return value


def render_config(template: str, **fields) -> dict:
    """A template of ``tasks/lm_eval/`` as data, its placeholders filled with ``fields``."""
    config = yaml.load((TEMPLATES / template).read_text(encoding="utf-8"), Loader=_TemplateLoader)  # noqa: S506
    return _fill(config, {k: str(v) for k, v in fields.items()})


def dump_config(config: dict) -> str:
    """lm-eval YAML for ``config``: every string a plain (quoted where needed) string."""
    return yaml.dump(config, Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True, width=2**31)


def render(template: str, **fields) -> str:
    """The template as lm-eval YAML, its placeholders filled with ``fields``."""
    return dump_config(render_config(template, **fields))
