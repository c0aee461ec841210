"""What the agent and the ledger need from Python 3.10+, also on 3.9 (Amazon Linux 2023's and Debian 11's python3):
keyword-only record dataclasses, ``X | Y`` annotations read at run time, and ``zip(strict=True)``."""

from __future__ import annotations

import ast
import dataclasses
import sys
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

NEW = sys.version_info >= (3, 10)
_T = TypeVar("_T")


class _Required:
    """The default given on 3.9 to a record field that has none (dataclasses there have no ``kw_only``)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


if typing.TYPE_CHECKING:  # the type checker then sees the 3.10+ dataclass (PEP 681)
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: Any) -> Callable[[_T], _T]:
        return lambda decorator: decorator


@dataclass_transform(kw_only_default=True, frozen_default=True)
def record_dataclass(cls: type[_T]) -> type[_T]:
    """``@dataclass(frozen=True, kw_only=True)``; on 3.9 the fields without a default get ``REQUIRED`` (a base's
    defaulted field may then precede them) and building a record without one raises TypeError, as on 3.10+."""
    if NEW:
        return dataclasses.dataclass(frozen=True, kw_only=True)(cls)  # novm (3.10+ only)
    annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 (inspect.get_annotations is 3.10+)
    for name, hint in annotations.items():
        if "ClassVar" not in str(hint) and name not in cls.__dict__:
            setattr(cls, name, dataclasses.field(default=REQUIRED))
    built = dataclasses.dataclass(frozen=True)(cls)
    init = built.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if args:
            raise TypeError(f"{built.__name__}() takes keyword arguments only")
        init(self, **kwargs)
        missing = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is REQUIRED]
        if missing:
            raise TypeError(f"{built.__name__}() missing required keyword argument(s): {', '.join(missing)}")

    built.__init__ = __init__  # type: ignore[method-assign]
    return built


class _UnionOf(ast.NodeTransformer):
    """``X | Y`` -> ``typing.Union[X, Y]``, so 3.9 can evaluate the annotation."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.op, ast.BitOr):
            return node
        union = ast.Attribute(value=ast.Name(id="typing", ctx=ast.Load()), attr="Union", ctx=ast.Load())
        options = ast.Tuple(elts=[node.left, node.right], ctx=ast.Load())
        return ast.Subscript(value=union, slice=options, ctx=ast.Load())  # 3.9's form (no ast.Index)


def type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, on 3.9 too (where ``str | None`` cannot be evaluated)."""
    if NEW:
        return typing.get_type_hints(cls)
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        namespace = {**vars(sys.modules[klass.__module__]), "typing": typing}
        for name, hint in klass.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
            if isinstance(hint, str):
                tree = ast.fix_missing_locations(_UnionOf().visit(ast.parse(hint, mode="eval")))
                hint = eval(compile(tree, "<annotation>", "eval"), namespace)
            hints[name] = hint
    return hints


def zip_strict(*iterables: Iterable[Any]) -> Iterable[tuple[Any, ...]]:
    """``zip(*iterables, strict=True)``: unequal lengths raise ValueError."""
    if NEW:
        return zip(*iterables, strict=True)  # novm (3.10+ only)
    lists = [list(it) for it in iterables]
    if len({len(items) for items in lists}) > 1:
        raise ValueError("zip_strict: the iterables have different lengths")
    return zip(*lists)
