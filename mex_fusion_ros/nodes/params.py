"""Declare a node's ROS parameters from the schema in ``mex_fusion_ros.config`` and guard changes.

Each ``ParameterSpec`` becomes one declared parameter with a ``ParameterDescriptor``: its
description, a ``FloatingPointRange``/``IntegerRange`` from the spec's bounds, the choices in
``additional_constraints``, and ``read_only`` unless the spec is dynamic (rclpy itself then refuses
``ros2 param set``). An on-set-parameters callback validates every change against the spec
(type, range, choices) and hands accepted dynamic values to the node, which applies them between
frames. ``add_on_set_parameters_callback`` is used (not the Iron+ post-set callback) so the node
runs on Humble too.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from mex_fusion_ros.config import BUILTIN_PARAMETERS, ConfigError, ParameterSpec, ParamValue

_ARRAY_TYPES = {
    "int_array": Parameter.Type.INTEGER_ARRAY,
    "float_array": Parameter.Type.DOUBLE_ARRAY,
    "str_array": Parameter.Type.STRING_ARRAY,
}


def descriptor_for(spec: ParameterSpec) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` ``ros2 param describe`` shows for ``spec``."""
    descriptor = ParameterDescriptor(description=spec.description, read_only=not spec.dynamic)
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
    values: dict[str, ParamValue] = {}
    for spec in specs:
        descriptor = descriptor_for(spec)
        default: Any = spec.default
        if isinstance(default, list) and not default:
            # rclpy infers BYTE_ARRAY from an empty list; declare the type, fill in [] below.
            default = _ARRAY_TYPES[spec.type_name]
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
    return values


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

    def on_set(parameters: list[Parameter]) -> SetParametersResult:
        accepted: dict[str, ParamValue] = {}
        for parameter in parameters:
            spec = by_name.get(parameter.name)
            if spec is None:
                if parameter.name in BUILTIN_PARAMETERS or parameter.name.startswith("qos_overrides."):
                    continue
                return SetParametersResult(successful=False, reason=f"{parameter.name}: unknown parameter")
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
