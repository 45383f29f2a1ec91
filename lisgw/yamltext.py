"""YAML read as written: every scalar stays text, duplicate keys are problems.

Layer: configuration helper (pure but for reading the file). Test codes (`685`, `0675`, `NO`)
and HL7 versions (`2.5.1`, `2.50`) must not turn into numbers, octal or booleans as PyYAML's
resolver would make them, and a key given twice must be reported, not silently replaced. The
test-code map (lisgw.drivers.mapping) and the HIS profiles (lisgw.his.profile) read their
files through here; both report problems as ``file: line N: key.path: problem``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

import yaml

from lisgw.errors import ConfigError

_NULL_TAG: Final = "tag:yaml.org,2002:null"


def compose_file(path: str | os.PathLike[str]) -> yaml.Node | None:
    """The file's YAML node tree (None when empty); ConfigError when unreadable or not YAML."""
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.compose(stream, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{source}: cannot read: {error}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"{source}: not valid YAML: {error}"]) from None


def node_data(
    node: yaml.Node,
    source: str,
    problems: list[str],
    *,
    lines: dict[str, int] | None = None,
    key_label: Callable[[str], str] = str,
    path: str = "",
) -> object:
    """YAML node → dicts, lists and strings as written (null stays None).

    Duplicate and non-text keys become ``problems``; ``lines`` (when given) records the line
    of every key path, sequence items included (`tests[2]`); ``key_label`` shows a key in a
    path (quoting keys with dots, say).
    """
    if lines is not None:
        lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode):
        return None if node.tag == _NULL_TAG else str(node.value)
    if isinstance(node, yaml.SequenceNode):
        return [
            node_data(item, source, problems, lines=lines, key_label=key_label, path=f"{path}[{i}]")
            for i, item in enumerate(node.value)
        ]
    if not isinstance(node, yaml.MappingNode):  # the composer makes no other kind of node
        return None
    data: dict[str, object] = {}
    first_line: dict[str, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            problems.append(f"{source}: line {line}: {path or 'top level'}: a key must be text")
            continue
        key = str(key_node.value)
        child = f"{path}.{key_label(key)}" if path else key_label(key)
        if key in first_line:
            problems.append(
                f"{source}: line {line}: {child}: duplicate key (first at line {first_line[key]})"
            )
            continue
        first_line[key] = line
        if lines is not None:
            lines[child] = line
        data[key] = node_data(
            value_node, source, problems, lines=lines, key_label=key_label, path=child
        )
    return data
