"""A calculator that parses arithmetic with `ast` and walks the tree: no `eval`, no names beyond a math allow-list.

Limits keep a hostile expression cheap: expression length, exponent size, and the size of intermediate integers
(so `9**9**9` is refused instead of freezing the process).
"""

from __future__ import annotations

import ast
import math
import operator

MAX_EXPR_CHARS = 500
MAX_EXPONENT = 1000
MAX_INT_BITS = 4096

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS = {
    "sqrt": math.sqrt, "log": math.log, "log10": math.log10, "log2": math.log2, "exp": math.exp,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan,
    "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil, "min": min, "max": max,
    "factorial": math.factorial,
}
_CONSTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


class CalcError(ValueError):
    pass


def _check_size(value: float | int) -> float | int:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalcError("result is too large")
    if isinstance(value, float) and math.isinf(value):
        raise CalcError("result is too large (overflow)")
    return value


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalcError(f"exponent {right} is too large (limit {MAX_EXPONENT})")
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise CalcError("division by zero")
        return _check_size(_BINOPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
        args = [_eval(a) for a in node.args]
        if node.func.id == "factorial" and (not args or args[0] > 500):
            raise CalcError("factorial argument must be at most 500")
        try:
            return _check_size(_FUNCS[node.func.id](*args))
        except (TypeError, ValueError, OverflowError) as e:
            raise CalcError(f"{node.func.id}: {e}") from None
    what = type(node).__name__
    if isinstance(node, ast.Name):
        what = f"name {node.id!r}"
    elif isinstance(node, ast.Call):
        what = "that function call"
    raise CalcError(f"unsupported {what}; allowed: numbers, + - * / // % **, parentheses, "
                    f"{', '.join(sorted(_FUNCS))}, {', '.join(sorted(_CONSTS))}")


def calculate(expression: str) -> float | int:
    """Evaluate an arithmetic expression. Raises CalcError with a reason the model can act on."""
    expr = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if "=" in expr:  # small models often write "2 + 2 = 4": evaluate the left-hand side
        expr = expr.split("=", 1)[0].strip()
    if not expr:
        raise CalcError("empty expression")
    if len(expr) > MAX_EXPR_CHARS:
        raise CalcError(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise CalcError(f"not a valid arithmetic expression: {e.msg}") from None
    try:
        value = _eval(tree)
    except OverflowError:
        raise CalcError("result is too large (overflow)") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value
