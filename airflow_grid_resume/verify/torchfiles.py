"""Loading torch files and comparing their tensors: the edge of ``verify.compare`` that needs torch.

torch is imported only when a torch output's bytes differ and it is importable where verify runs
(it is not a dependency of the provider). Files are loaded on the CPU with ``weights_only=True``
(tensors and plain containers only, nothing executed); a file that holds other objects (a
Lightning ``AttributeDict`` of hyper-parameters, say) is loaded again with ``weights_only=False``,
which runs its pickle's code: both files were written moments ago by the user's own command in
this verify run, so that runs nothing the command could not already. The report says so.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Sequence
from typing import Any

from airflow_grid_resume.verify.compare import (
    LIGHTNING_RULES,
    Comparison,
    IgnoreRule,
    TreeDiff,
    compare_trees,
    tree_verdict,
)


def torch_available() -> bool:
    """Whether torch can be imported here (without importing it: that takes seconds)."""
    return importlib.util.find_spec("torch") is not None


def load(path: str) -> tuple[Any, str]:
    """The loaded file and a note when it needed ``weights_only=False`` (empty otherwise)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True), ""
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        loaded = torch.load(path, map_location="cpu", weights_only=False)
        return loaded, (
            f"loaded with weights_only=False: it holds objects other than tensors and plain containers ({first[:160]})"
        )


def tensor_leaf(a: Any, b: Any) -> tuple[bool, str] | None:
    """Tensors (and numpy arrays) as leaves of ``compare_trees``: equal only when dtype, shape and every
    value's bits are the same (so NaN equals the same NaN, and 0.0 differs from -0.0)."""
    import torch

    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor):
            return False, f"a tensor in the reference, a {type(b).__name__} after interruptions"
        return _tensors(a.detach().cpu(), b.detach().cpu())
    array = _numpy_array_type()
    if array is not None and isinstance(a, array):
        if not isinstance(b, array):
            return False, f"an array in the reference, a {type(b).__name__} after interruptions"
        return (
            _tensors(torch.from_numpy(a.copy()), torch.from_numpy(b.copy()))
            if a.dtype == b.dtype
            else (
                False,
                f"dtype {a.dtype} in the reference, {b.dtype} after interruptions",
            )
        )
    return None


def compare_files(path: str, reference: str, resumed: str, rules: Sequence[IgnoreRule] = LIGHTNING_RULES) -> Comparison:
    """Load both files and compare them key by key (``path`` is the output's name in the report)."""
    ref, ref_note = load(reference)
    got, got_note = load(resumed)
    diff: TreeDiff = compare_trees(ref, got, tensor_leaf, rules)
    return tree_verdict(path, diff, ref_note or got_note)


def _tensors(a: Any, b: Any) -> tuple[bool, str]:
    import torch

    if a.dtype != b.dtype:
        return False, f"dtype {a.dtype} in the reference, {b.dtype} after interruptions"
    if a.shape != b.shape:
        return False, f"shape {tuple(a.shape)} in the reference, {tuple(b.shape)} after interruptions"
    if a.is_sparse or b.is_sparse:
        a, b = a.to_dense(), b.to_dense()
    if a.numel() == 0:
        return True, ""
    a, b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    try:  # every element's bytes
        bits = (a.view(torch.uint8).reshape(a.numel(), -1) != b.view(torch.uint8).reshape(b.numel(), -1)).any(dim=1)
    except (RuntimeError, TypeError):  # a dtype with no byte view (quantized...): by value
        bits = a != b
    count = int(bits.sum())
    if count == 0:
        return True, ""
    floating = a.is_floating_point() or a.is_complex()
    values = (a != b) & ~(a.isnan() & b.isnan()) if floating else a != b
    if not bool(values.any()):
        return (
            False,
            f"{count} of {a.numel()} values have equal values but not equal bits (NaN payloads or signed zeros)",
        )
    what = f"{count} of {a.numel()} values differ"
    if floating:
        wide = torch.complex128 if a.is_complex() else torch.float64
        gaps = (a.to(wide) - b.to(wide)).abs().nan_to_num(nan=float("inf"))
        what += f" (largest difference {float(gaps[values].max()):.3g})"
    return False, what


def _numpy_array_type() -> Any:
    if importlib.util.find_spec("numpy") is None:
        return None
    import numpy

    return numpy.ndarray
