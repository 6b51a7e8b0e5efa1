"""The ``rosbags`` typestore: the ROS 2 Kilted messages plus custom ones registered on first use.

``rosbags`` ships the standard message definitions only; the project's ``mex_fusion_msgs`` and a
robot's own packages are unknown to it. Two ways to make such a type known:

- ``ensure_msgtype``: the installed definition ``share/<pkg>/msg/<Name>.msg`` (every prefix of
  ``AMENT_PREFIX_PATH``, then this interpreter's prefix, where ``scripts/build_interfaces.sh``
  installs ``mex_fusion_msgs`` without a sourced environment, then the source checkout's
  ``mex_fusion_msgs/msg/`` for the project's own package), with its nested types, recursively;
  for writing and recording;
- ``register_definition``: the definition a bag stores with each connection; for reading, where
  the bag's definition is the one its bytes were written with.

The RIHS01 hash ``rosbags`` computes for a type registered this way (``TYPESTORE.hash_rihs01``) is
what it stores in bags; for every ``mex_fusion_msgs`` type it equals the hash rosidl generated
(``share/mex_fusion_msgs/msg/*.json``) and the one rclpy reports for a publisher
(``test_bag_custom_types.py`` checks both).

This module never imports rclpy (``ament_index_python`` only, lazily), so it works without ROS.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from rosbags.interfaces import MessageDefinition, MessageDefinitionFormat, Nodetype
from rosbags.typesys import Stores, TypesysError, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

#: ROS 2 Kilted message definitions (the distribution the project's rclpy wheels come from).
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
#: Source checkouts of interface packages, used when no prefix has the package installed.
SOURCE_MSG_DIRS = {"mex_fusion_msgs": Path(__file__).resolve().parents[2] / "mex_fusion_msgs" / "msg"}
_IDL_SEPARATOR = "=" * 80 + "\n"


class BagError(ValueError):
    """A bag, one of its topics or a message type cannot be used; the message names it and why."""


def split_msgtype(msgtype: str) -> tuple[str, str]:
    """``"pkg/msg/Name"`` -> ``("pkg", "Name")``; ``BagError`` for anything else (services, actions)."""
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg" or not parts[0] or not parts[2]:
        raise BagError(f"message type {msgtype!r} is not of the form package/msg/Name")
    return parts[0], parts[2]


def ament_prefixes() -> list[Path]:
    """Install prefixes to search: ``AMENT_PREFIX_PATH`` (through ament_index_python), then ``sys.prefix``."""
    try:
        from ament_index_python.search_paths import get_search_paths

        try:
            paths = get_search_paths()
        except OSError:  # AMENT_PREFIX_PATH unset: not a sourced ROS environment
            paths = []
    except ImportError:
        paths = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes = [Path(p) for p in paths]
    # The venv is the prefix the project installs its interfaces into (docs/interfaces.md), and
    # `.venv/bin/python` runs without AMENT_PREFIX_PATH set.
    if Path(sys.prefix) not in prefixes:
        prefixes.append(Path(sys.prefix))
    return prefixes


def definition_candidates(msgtype: str) -> list[Path]:
    """Where ``ensure_msgtype`` looks for the ``.msg`` file of ``msgtype``, in order."""
    package, name = split_msgtype(msgtype)
    candidates = [prefix / "share" / package / "msg" / f"{name}.msg" for prefix in ament_prefixes()]
    if package in SOURCE_MSG_DIRS:
        candidates.append(SOURCE_MSG_DIRS[package] / f"{name}.msg")
    return candidates


def nested_types(fields: list) -> Iterator[str]:
    """Names of the message types a parsed field list refers to (plain, array or sequence fields)."""
    for _, (node_type, detail) in fields:
        if node_type == Nodetype.NAME:
            yield detail
        elif node_type in (Nodetype.ARRAY, Nodetype.SEQUENCE) and detail[0][0] == Nodetype.NAME:
            yield detail[0][1]


def _load_installed(msgtype: str, needed_by: str) -> dict:
    candidates = definition_candidates(msgtype)
    for path in candidates:
        if path.is_file():
            try:
                return get_types_from_msg(path.read_text(), msgtype)
            except (TypesysError, ValueError) as exc:
                raise BagError(f"definition of {msgtype} in {path} does not parse: {exc}") from exc
    context = f" (a field type of {needed_by})" if needed_by else ""
    raise BagError(
        f"message type {msgtype}{context} is unknown to the rosbags typestore and no definition was found; "
        f"looked for {', '.join(str(p) for p in candidates)}. Install its package into one of these "
        "prefixes or source its workspace (AMENT_PREFIX_PATH)"
    )


def ensure_msgtype(msgtype: str, typestore: Typestore = TYPESTORE) -> None:
    """Register ``msgtype`` and the types it nests from their installed ``.msg`` files, if not known.

    ``BagError`` names the type (and the type needing it) and every file looked for when one is missing.
    """
    if msgtype in typestore.types:
        return
    found: dict = {}
    pending = [(msgtype, "")]
    while pending:
        name, needed_by = pending.pop()
        if name in found or name in typestore.types:
            continue
        found.update(_load_installed(name, needed_by))
        pending.extend((nested, name) for nested in nested_types(found[name][1]))
    _register(typestore, found, "its installed definition")


def _register(typestore: Typestore, types: dict, origin: str) -> None:
    try:
        typestore.register(types)
    except TypesysError as exc:
        raise BagError(f"cannot register {', '.join(sorted(types))} from {origin}: {exc}") from exc


def types_from_definition(msgtype: str, msgdef: MessageDefinition) -> dict:
    """The parsed types of a stored definition (``ros2msg`` or ``ros2idl``, nested types included)."""
    try:
        if msgdef.format == MessageDefinitionFormat.MSG:
            return get_types_from_msg(msgdef.data, msgtype)
        if msgdef.format == MessageDefinitionFormat.IDL:
            if not msgdef.data.startswith(f"{_IDL_SEPARATOR}IDL: "):
                return get_types_from_idl(msgdef.data)
            types: dict = {}
            for section in msgdef.data.split(_IDL_SEPARATOR)[1:]:
                types.update(get_types_from_idl(section.split("\n", 1)[1]))
            return types
    except (TypesysError, ValueError, IndexError) as exc:
        raise BagError(f"the stored definition of {msgtype} does not parse: {exc}") from exc
    return {}


def register_definition(
    msgtype: str, msgdef: MessageDefinition, typestore: Typestore = TYPESTORE, *, origin: str = "a bag"
) -> bool:
    """Register ``msgtype`` from a bag connection's stored definition; False when the bag stores none.

    Types the definition nests but does not carry are taken from their installed definitions. A
    definition that contradicts one already registered is a ``BagError`` (its bytes would be
    decoded with the wrong layout otherwise).
    """
    if msgtype in typestore.types:
        return True
    types = types_from_definition(msgtype, msgdef)
    if msgtype not in types:
        return False
    for _, fields in types.values():
        for nested in nested_types(fields):
            if nested not in types:
                ensure_msgtype(nested, typestore)
    _register(typestore, types, f"the definition stored in {origin}")
    return True
