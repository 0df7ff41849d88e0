"""The one fitted check every estimator uses (scikit-learn's `check_is_fitted`, lookalike's errors).

An estimator's `__init__` only stores settings and `fit` sets the learned attributes, whose names
end in `_`; an estimator is fitted when they are there. `check_is_fitted` raises `NotFittedError`
naming the estimator and how to fix it, so every "used before fit" message reads the same.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from lookalike.errors import NotFittedError


def check_is_fitted(
    estimator: Any,
    attributes: str | Sequence[str] | None = None,
    *,
    hint: str = "",
    action: str | None = None,
) -> None:
    """Raise `NotFittedError` unless `estimator` holds the fitted `attributes` (names ending in `_`).

    With `attributes=None`, any attribute whose name ends in `_` (and does not start with `__`)
    counts as fitted. The message names the estimator ("this mlp classifier" when it has a `kind`
    and an `_estimator_type`, else its class) and says how to fix it: "call fit(X, y) first"
    (the arguments read from its `fit`), followed by ", or <hint>" when a hint is given (e.g.
    "load a trained one with load_classifier(folder)"). With `action` ("save") the message starts
    "cannot save an unfitted ..." instead of "this ... is not fitted yet".
    """
    if isinstance(estimator, type):
        raise TypeError(f"check_is_fitted expects an estimator instance, got the class {estimator.__name__}")
    if not callable(getattr(estimator, "fit", None)):
        raise TypeError(f"check_is_fitted expects an estimator with a fit method, got {type(estimator).__name__}")
    learned = vars(estimator) if hasattr(estimator, "__dict__") else {}
    if attributes is None:
        fitted = any(name.endswith("_") and not name.startswith("__") for name in learned)
    else:
        names = [attributes] if isinstance(attributes, str) else list(attributes)
        unlearned = [name for name in names if not name.endswith("_")]
        if unlearned:
            raise ValueError(f"fitted attributes end in '_' (the estimator contract); got {unlearned}")
        fitted = all(hasattr(estimator, name) for name in names)
    if fitted:
        return
    fix = f"call {_fit_call(estimator)} first" + (f", or {hint}" if hint else "")
    name = estimator_name(estimator)
    if action:
        raise NotFittedError(f"cannot {action} an unfitted {name}: {fix}")
    raise NotFittedError(f"this {name} is not fitted yet: {fix}")


def estimator_name(estimator: Any) -> str:
    """The name messages use: "<kind> <estimator type>" ("mlp classifier"), else the class name."""
    kind = getattr(estimator, "kind", None)
    noun = getattr(estimator, "_estimator_type", None)
    if isinstance(kind, str) and kind and isinstance(noun, str) and noun:
        return f"{kind} {noun}"
    return type(estimator).__name__


def _fit_call(estimator: Any) -> str:
    """How `fit` is called: its positional parameters, and "..." for required keyword-only ones."""
    try:
        parameters = inspect.signature(estimator.fit).parameters.values()
    except (TypeError, ValueError):  # a builtin or C-implemented fit
        return "fit"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in parameters if p.kind in positional]
    if any(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty for p in parameters):
        names.append("...")
    return f"fit({', '.join(names)})"
