"""Declare a node's ROS parameters from the schema in ``mex_fusion_ros.config`` and guard changes.

Each ``ParameterSpec`` becomes one declared parameter with a ``ParameterDescriptor``: its
description, a ``FloatingPointRange``/``IntegerRange`` from the spec's bounds, the choices in
``additional_constraints``, and ``read_only`` unless the spec is dynamic (rclpy itself then refuses
``ros2 param set``). An on-set-parameters callback validates every change against the spec
(type, range, choices) and hands accepted dynamic values to the node, which applies them between
frames. ``add_on_set_parameters_callback`` is used (not the Iron+ post-set callback) so the node
runs on Humble too.

What ``ros2 param set`` users meet (``docs/nodes.md``):

- an integer for a float parameter (``sync.slop 1``) is accepted as the float. rclpy has no
  int-to-double coercion and refuses a type change with "Wrong parameter type"; so parameters are
  declared with ``dynamic_typing`` and the spec checks the type (naming both types when it
  refuses). Where rclpy has ``add_pre_set_parameters_callback`` (Jazzy and later) the integer is
  turned into the double before it is stored; on Humble the integer is stored as given and the node
  uses its float value. The list parameter with an empty default (``classes``) keeps its static
  type (rclpy refuses dynamic typing for parameters declared by type): on Jazzy and later an empty
  list of any type (``ros2 param set`` sends ``[]`` as a bool array) becomes the empty integer list;
- an unknown name is refused with the node's closest parameter names. The nodes are created with
  ``NODE_OPTIONS`` (``allow_undeclared_parameters``) so that such a request reaches the guard
  instead of rclpy's "Invalid access to undeclared parameter(s)"; the guard never lets one in;
- ``device`` is checked against this machine at start-up: "device 'cuda:7': this machine has 1
  CUDA device; available: cpu, cuda:0".
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from mex_fusion_ros.config import (
    BUILTIN_PARAMETERS,
    DEVICE_SYNTAX,
    ConfigError,
    ParameterSpec,
    ParamValue,
    schema_node_of,
    unknown_parameter_reason,
    validate_start_up,
)

_ARRAY_TYPES = {
    "int_array": Parameter.Type.INTEGER_ARRAY,
    "float_array": Parameter.Type.DOUBLE_ARRAY,
    "str_array": Parameter.Type.STRING_ARRAY,
}


#: Keyword arguments of ``rclpy.node.Node`` for the nodes declared from specs: a request to set
#: an undeclared name reaches ``parameter_guard``, which refuses it naming the closest parameters.
NODE_OPTIONS: dict[str, Any] = {"allow_undeclared_parameters": True}

_SCALAR_TYPES = {"bool": Parameter.Type.BOOL, "int": Parameter.Type.INTEGER, "float": Parameter.Type.DOUBLE,
                 "str": Parameter.Type.STRING}
_ANY_ARRAY = (Parameter.Type.BYTE_ARRAY, Parameter.Type.BOOL_ARRAY, Parameter.Type.INTEGER_ARRAY,
              Parameter.Type.DOUBLE_ARRAY, Parameter.Type.STRING_ARRAY)


def _declared_by_type(spec: ParameterSpec) -> bool:
    """rclpy infers BYTE_ARRAY from an empty list, so a spec with an empty default is declared by type."""
    return isinstance(spec.default, list) and not spec.default


def descriptor_for(spec: ParameterSpec) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` ``ros2 param describe`` shows for ``spec``."""
    # dynamic_typing: the spec checks types (an integer is a valid float); rclpy refuses it for
    # parameters declared by type.
    descriptor = ParameterDescriptor(description=spec.description, read_only=not spec.dynamic,
                                     dynamic_typing=not _declared_by_type(spec))
    constraints = []
    if spec.choices:
        constraints.append(f"one of: {', '.join(spec.choices)}")
    scalar = spec.type_name.removesuffix("_array")
    if spec.minimum is not None or spec.maximum is not None:
        low = spec.minimum if spec.minimum is not None else -1e308
        high = spec.maximum if spec.maximum is not None else 1e308
        if scalar == "float":
            # step 0.0: any value in the range (rcl_interfaces/FloatingPointRange).
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high),
                                                                  step=0.0)]
        elif scalar == "int":
            descriptor.integer_range = [IntegerRange(from_value=int(max(low, -(2**63))),
                                                     to_value=int(min(high, 2**63 - 1)), step=1)]
        constraints.append(f"range [{spec.minimum}, {spec.maximum}]")
    if spec.dynamic:
        constraints.append("may change at run time")
    descriptor.additional_constraints = "; ".join(constraints)
    return descriptor


class ParameterSpecError(ConfigError):
    """A declared parameter's value (from a parameters file or override) violates the schema."""


def declare_from_specs(node: Node, specs: Sequence[ParameterSpec]) -> dict[str, ParamValue]:
    """Declare every spec on ``node``; return the effective values (overrides applied), validated.

    Raises ``ParameterSpecError`` naming the parameter when a value given at start-up (through
    ``--params-file`` or ``parameter_overrides``) has the wrong type, range or choice.
    """
    # The shared validator (config.validate_start_up) sees every value rcl handed the node (files,
    # -p, parameter_overrides): unknown keys, types, finite numbers, method, homography. An integer
    # given for a float parameter goes on as the float, which rclpy alone refuses.
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy's start-up values (Humble to Kilted)
    try:
        checked = validate_start_up(specs, {name: p.value for name, p in overrides.items()}, node.get_name())
    except ConfigError as error:
        raise ParameterSpecError(error.key_path, error.reason) from None
    for name, value in checked.items():
        if Parameter(name, value=value).type_ != overrides[name].type_:
            overrides[name] = Parameter(name, value=value)
    values: dict[str, ParamValue] = {}
    for spec in specs:
        descriptor = descriptor_for(spec)
        default: Any = spec.default
        if _declared_by_type(spec):
            default = _ARRAY_TYPES[spec.type_name]  # filled in with [] below
        try:
            declared = node.declare_parameter(spec.name, default, descriptor)
        except Exception as error:  # rclpy raises several types for a bad override; report them as one
            raise ParameterSpecError(f"{node.get_name()}.{spec.name}", str(error)) from error
        value = declared.value
        if value is None:
            if not spec.dynamic:  # read_only: the set_parameters below would be refused
                raise ParameterSpecError(spec.name, "read-only list parameters need a non-empty default")
            node.set_parameters([Parameter(spec.name, _ARRAY_TYPES[spec.type_name], list(spec.default))])
            value = list(spec.default)
        if not isinstance(value, (bool, int, float, str)):
            value = list(value)  # array parameters come back as array.array
        try:
            values[spec.name] = spec.validate(value, f"{node.get_name()}.{spec.name}")
        except ConfigError as error:
            raise ParameterSpecError(error.key_path, error.reason) from None
    if "device" in values:
        problem = device_problem(str(values["device"]))
        if problem:
            raise ParameterSpecError(f"{node.get_name()}.device", problem)
    if hasattr(node, "add_pre_set_parameters_callback"):  # Jazzy and later
        node.add_pre_set_parameters_callback(typed_for_specs(specs))
    return values


def device_problem(device: str) -> str | None:
    """Why ``device`` (auto, cpu, cuda, cuda:N) cannot be used on this machine, or None.

    Imports torch only for a CUDA device (a classical fusion method on the CPU does not need it).
    """
    if not DEVICE_SYNTAX.fullmatch(device):
        return f"{device!r} is not a device; use auto, cpu, cuda or cuda:N"
    if device in ("auto", "cpu"):
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index < count:
        return None
    available = ", ".join(["cpu", *(f"cuda:{i}" for i in range(count))])
    reason = ("CUDA is not available here (torch sees no GPU)" if count == 0 else
              f"this machine has {count} CUDA device{'s' if count > 1 else ''}")
    return f"device {device!r}: {reason}; available: {available}"


def typed_for_specs(specs: Sequence[ParameterSpec]) -> Callable[[list[Parameter]], list[Parameter]]:
    """A pre-set-parameters callback (Jazzy+): give a request the types the specs declare.

    An integer for a float parameter becomes the double (and an integer list a double list), so
    the value is stored as a double; an empty list of any type becomes the spec's empty list
    (``ros2 param set NODE classes "[]"`` sends a bool array). Everything else is left to rclpy
    and ``parameter_guard``.
    """
    by_name = {spec.name: spec for spec in specs}

    def typed(parameters: list[Parameter]) -> list[Parameter]:
        result = []
        for parameter in parameters:
            spec = by_name.get(parameter.name)
            kind = parameter.type_
            if spec is not None:
                if spec.type_name == "float" and kind == Parameter.Type.INTEGER:
                    parameter = Parameter(parameter.name, Parameter.Type.DOUBLE, float(parameter.value))
                elif spec.type_name == "float_array" and kind == Parameter.Type.INTEGER_ARRAY:
                    parameter = Parameter(parameter.name, Parameter.Type.DOUBLE_ARRAY,
                                          [float(v) for v in parameter.value])
                elif spec.type_name in _ARRAY_TYPES and kind in _ANY_ARRAY and len(parameter.value) == 0:
                    parameter = Parameter(parameter.name, _ARRAY_TYPES[spec.type_name], [])
            result.append(parameter)
        return result

    return typed


def parameter_guard(specs: Sequence[ParameterSpec],
                    apply: Callable[[Mapping[str, ParamValue]], None]) -> Callable[[list[Parameter]],
                                                                                SetParametersResult]:
    """An on-set-parameters callback: validate every change against its spec, then ``apply`` them.

    All parameters of one request are validated first; if any fails, none is applied and the
    reason (naming the parameter) goes back to the caller (``ros2 param set`` prints it). ``apply``
    may refuse a combination by raising ``ValueError``; its message becomes the reason.
    Read-only parameters never reach here with a new value after declaration: rclpy refuses them.
    """
    by_name = {spec.name: spec for spec in specs}
    node = schema_node_of(specs) or "this node"

    def on_set(parameters: list[Parameter]) -> SetParametersResult:
        accepted: dict[str, ParamValue] = {}
        for parameter in parameters:
            spec = by_name.get(parameter.name)
            if spec is None:
                if parameter.name in BUILTIN_PARAMETERS or parameter.name.startswith("qos_overrides."):
                    continue
                # Also what keeps an undeclared name out (NODE_OPTIONS lets it get this far).
                reason = unknown_parameter_reason(node, parameter.name, list(by_name))
                return SetParametersResult(successful=False, reason=f"{parameter.name}: {reason}")
            value: Any = parameter.value
            if value is not None and not isinstance(value, (bool, int, float, str)):
                value = list(value)
            try:
                accepted[spec.name] = spec.validate(value, spec.name)
            except ConfigError as error:
                return SetParametersResult(successful=False, reason=str(error))
        if accepted:
            try:
                apply(accepted)
            except ValueError as error:  # a combination the spec alone cannot judge (e.g. low >= high)
                return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    return on_set


def overrides_to_parameters(values: Mapping[str, Any], specs: Sequence[ParameterSpec]) -> list[Parameter]:
    """``{dotted name: value}`` -> ``Parameter`` list for ``Node(parameter_overrides=...)``.

    rclpy re-infers an override's type from its value when declaring, and an empty list reads as
    BYTE_ARRAY; so an empty list equal to the schema default is left out (the declared default is
    the same value) and any other empty list is refused with the parameter's name.
    """
    by_name = {spec.name: spec for spec in specs}
    parameters = []
    for name, value in values.items():
        if isinstance(value, list) and not value:
            spec = by_name.get(name)
            if spec is not None and spec.default == []:
                continue
            raise ConfigError(name, "an empty list can only be given where it is the default")
        parameters.append(Parameter(name, value=value))
    return parameters
