"""Binds a parameter schema (nodes/params.py) to an rclpy node: declaration with descriptors,
validation of every set, and reading the current values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from asyncvla_ros.nodes.params import ParamSchema

_ROS_TYPES = {
    'bool': Parameter.Type.BOOL,
    'int': Parameter.Type.INTEGER,
    'double': Parameter.Type.DOUBLE,
    'string': Parameter.Type.STRING,
    'string_array': Parameter.Type.STRING_ARRAY,
    'double_array': Parameter.Type.DOUBLE_ARRAY,
}


class BoundParams:
    """The node's parameters as declared from `schema`.

    Sets are refused with a reason when the value is invalid (by the schema, then by the node's own
    `check`, for rules that involve its state), or when a configure-time parameter changes while
    `is_active()` is true. Accepted changes are reported to `on_change`.
    """

    def __init__(
        self,
        node: Node,
        schema: ParamSchema,
        is_active: Callable[[], bool],
        on_change: Callable[[dict[str, Any]], None] | None = None,
        check: Callable[[str, Any], str | None] | None = None,
    ):
        self._node = node
        self._check = check
        self._schema = schema
        self._is_active = is_active
        self._on_change = on_change
        for p in schema:
            descriptor = ParameterDescriptor(
                name=p.name,
                type=_ROS_TYPES[p.type].value,
                description=p.description,
                additional_constraints=p.constraint_text().replace('\\|', '|'),
            )
            if p.range is not None and p.type == 'double':
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]))
                ]
            elif p.range is not None and p.type == 'int':
                descriptor.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=1)]
            default = _ROS_TYPES[p.type] if p.default is None else p.default  # a bare type: declared, unset
            node.declare_parameter(p.name, default, descriptor)
            reason = schema.check(p.name, self._value(p.name))
            if reason:
                raise ValueError(f'{node.get_name()}: invalid parameter override: {reason}')
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._changed)

    def _value(self, name: str) -> Any:
        """The value, None when the parameter is unset."""
        try:
            value = self._node.get_parameter(name).value
        except ParameterUninitializedException:
            return None
        return list(value) if isinstance(value, (list, tuple)) or hasattr(value, 'tolist') else value

    def values(self) -> dict[str, Any]:
        return {p.name: self._value(p.name) for p in self._schema}

    def _validate(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            if param.name == 'use_sim_time':
                continue
            value = param.value
            value = list(value) if hasattr(value, 'tolist') or isinstance(value, tuple) else value
            reason = self._schema.check(param.name, value, active=self._is_active())
            if reason is None and self._check is not None:
                reason = self._check(param.name, value)
            if reason:
                self._node.get_logger().warning(f'parameter set refused: {reason}')
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _changed(self, params: list[Parameter]) -> None:
        if self._on_change is not None:
            self._on_change({p.name: self._value(p.name) for p in params if p.name in self._schema.params})
