"""Tools as tiny classes: the schema beside `invoke`.

A tool declares its name, description, JSON-schema parameters (all required, as in τ²-bench)
and whether it writes; `invoke(db, **arguments)` runs it on a `Transaction` and returns a
JSON value or raises `ToolError` (the agent sees `ERROR: <message>`). Arguments are checked
against the schema before `invoke` runs (`check_arguments`), so a tool body only ever sees
well-typed values:

- a parameter the tool does not have: `unknown_parameter`; a missing one or a value of the
  wrong type or outside an enum: `invalid_value`;
- numbers given as text ("3") and whole floats (3.0) are taken as integers, numbers as text
  (a zip code written as 19122) where text is expected; keys of nested objects that the schema
  does not list are dropped (τ²-bench's models ignore them too).
"""

from __future__ import annotations

import ast
import copy
import operator
from typing import Any, ClassVar

from josh_core.envs.tau2.state import Transaction


class ToolError(Exception):
    """The tool refused the call (not found, not allowed, not enough balance, ...)."""


class ArgumentError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def string(description: str, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": description}
    if enum:
        schema["enum"] = list(enum)
    return schema


def integer(description: str) -> dict[str, Any]:
    return {"type": "integer", "description": description}


def array(description: str, items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "description": description, "items": items}


def obj(properties: dict[str, dict[str, Any]], description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": list(properties)}
    if description:
        schema["description"] = description
    return schema


class Tool:
    """One API. Subclasses set the class attributes and write `invoke`."""

    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict[str, dict[str, Any]]] = {}
    writes: ClassVar[bool] = False  # changes the database (its gold calls are JOSH goals)

    def invoke(self, db: Transaction, **arguments: Any) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        """The OpenAI `tools` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {"type": "object", "properties": copy.deepcopy(self.parameters),
                               "required": list(self.parameters)},
            },
        }


# -- arguments ----------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "text", list: "list", dict: "object"}.get(
        type(value), type(value).__name__)


def _check(value: Any, schema: dict[str, Any], where: str) -> Any:
    kind = schema.get("type", "string")
    if kind == "string":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ArgumentError("invalid_value", f"{where} must be text, not {_type_name(value)}")
        if "enum" in schema and value not in schema["enum"]:
            raise ArgumentError("invalid_value", f"{where} must be one of {', '.join(schema['enum'])}, not {value!r}")
        return value
    if kind == "integer":
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ArgumentError("invalid_value", f"{where} must be an integer, not {value!r}") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ArgumentError("invalid_value", f"{where} must be an integer, not {_type_name(value)}")
        return value
    if kind == "number":
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ArgumentError("invalid_value", f"{where} must be a number, not {value!r}") from None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ArgumentError("invalid_value", f"{where} must be a number, not {_type_name(value)}")
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise ArgumentError("invalid_value", f"{where} must be a list, not {_type_name(value)}")
        return [_check(item, schema.get("items", {}), f"{where}[{i}]") for i, item in enumerate(value)]
    if kind == "object":
        if not isinstance(value, dict):
            raise ArgumentError("invalid_value", f"{where} must be an object, not {_type_name(value)}")
        properties = schema.get("properties", {})
        out = {}
        for key, sub in properties.items():
            if key not in value:
                if key in schema.get("required", []):
                    raise ArgumentError("invalid_value", f"{where} lacks {key!r}")
                continue
            out[key] = _check(value[key], sub, f"{where}.{key}")
        return out
    return value


def check_arguments(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments, checked and coerced to the tool's schema; ArgumentError otherwise."""
    unknown = [key for key in arguments if key not in tool.parameters]
    if unknown:
        raise ArgumentError("unknown_parameter", f"{tool.name} has no parameter {unknown[0]!r}; its parameters: "
                            + (", ".join(tool.parameters) or "none"))
    out = {}
    for key, schema in tool.parameters.items():
        if key not in arguments:
            raise ArgumentError("invalid_value", f"{tool.name} needs the parameter {key!r}")
        out[key] = _check(arguments[key], schema, key)
    return out


# -- tools every τ² domain has --------------------------------------------------------------

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _arithmetic(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _arithmetic(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _arithmetic(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    raise ToolError("Invalid expression")


class Calculate(Tool):
    name = "calculate"
    description = ("Calculate the result of a mathematical expression. Returns the result rounded to 2 "
                   "decimals, as text.")
    parameters = {"expression": string("The mathematical expression to calculate, such as '2 + 2'. The expression "
                                       "can contain numbers, operators (+, -, *, /), parentheses, and spaces.")}

    def invoke(self, db: Transaction, expression: str) -> str:
        if not all(char in "0123456789+-*/(). " for char in expression) or len(expression) > 500:
            raise ToolError("Invalid characters in expression")
        try:
            value = _arithmetic(ast.parse(expression, mode="eval"))
        except (SyntaxError, RecursionError, ValueError):
            raise ToolError("Invalid expression") from None
        except ZeroDivisionError:
            raise ToolError("Division by zero") from None
        return str(round(float(value), 2))


class TransferToHumanAgents(Tool):
    name = "transfer_to_human_agents"
    description = ("Transfer the user to a human agent, with a summary of the user's issue. Only transfer if the "
                   "user explicitly asks for a human agent, or if given the policy and the available tools you "
                   "cannot solve the user's issue.")
    parameters = {"summary": string("A summary of the user's issue.")}

    def invoke(self, db: Transaction, summary: str) -> str:
        return "Transfer successful"
