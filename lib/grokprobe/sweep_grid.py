"""Turning a sweep's grid (`--grid name=v1,v2` tokens or a dict of axes) into validated configs.

Apart from submitting and status because it only needs the config classes: a bad point is rejected
here, before anything is trained or submitted, and notebooks can build grids without the job machinery."""

from __future__ import annotations

import dataclasses
import itertools
import typing
import warnings

from . import config as C


def _field_types(experiment: str) -> dict:
    C._check_choice("experiment", experiment, list(C.CONFIGS))
    cls = C.CONFIGS[experiment]
    hints = typing.get_type_hints(cls)
    types = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(cls)}
    types["seed"] = (int, 0)  # seed=3 is seeds=(3,): one job per seed
    return types


def _scalar(name: str, text: str, want):
    text = text.strip()
    try:
        if want is bool:
            low = text.lower()
            if low in ("true", "yes", "1"):
                return True
            if low in ("false", "no", "0"):
                return False
            raise ValueError
        return want(text)
    except ValueError:
        raise ValueError(f"grid: {name}={text!r} is not a valid {want.__name__}") from None


def parse_grid(experiment: str, tokens) -> dict[str, list]:
    """'name=v1,v2,...' tokens -> {name: [values]}, each value parsed as the config field's type.

    Tuple fields take the whole comma list as one value and '/' between alternatives:
    seeds=1,42,15213 is ONE job training those seeds batched; seeds=1,2/3,4 is two jobs."""
    types = _field_types(experiment)
    axes: dict[str, list] = {}
    for tok in tokens:
        name, eq, text = tok.partition("=")
        name = name.strip()
        if not eq or not name or not text.strip():
            raise ValueError(f"grid: {tok!r} is not of the form name=value[,value...]")
        if name not in types:
            valid = ", ".join(sorted(types))
            raise ValueError(f"grid: unknown parameter {name!r} for {experiment}; valid: {valid}")
        if name in axes:
            raise ValueError(f"grid: {name} is given twice")
        want, default = types[name]
        if want is tuple:
            elem = type(default[0]) if default else int
            axes[name] = [
                tuple(_scalar(name, t, elem) for t in alt.split(",") if t.strip()) for alt in text.split("/")
            ]
        else:
            axes[name] = [_scalar(name, t, want) for t in text.split(",")]
    return axes


def _axis(name: str, values, want) -> list:
    if want is tuple:  # a bare tuple is one value; a list must hold tuples (one batched job each)
        if isinstance(values, tuple):
            return [values]
        if not all(isinstance(v, (list, tuple)) for v in values):
            raise ValueError(
                f"grid: {name} takes tuples of values (one batched job each), got {values!r}"
                + ("; for one job per seed use seed=[...]" if name == "seeds" else "")
            )
        return [tuple(v) for v in values]
    return list(values) if isinstance(values, (list, tuple, range)) else [values]


def grid(experiment: str, axes: dict | None = None, profile: str = "quick") -> list:
    """The validated configs of the cartesian product of `axes` under `profile`, in order, no duplicates.

    An invalid point raises before anything is trained or submitted."""
    types = _field_types(experiment)
    C._check_choice("profile", profile, C.PROFILES)
    axes = dict(axes or {})
    if "seed" in axes and "seeds" in axes:
        raise ValueError("grid: give seed (one job per seed) or seeds (seeds batched in one job), not both")
    for name in axes:
        if name not in types:
            valid = ", ".join(sorted(types))
            raise ValueError(f"grid: unknown parameter {name!r} for {experiment}; valid: {valid}")
    names = list(axes)
    values = [_axis(n, axes[n], types[n][0]) for n in names]
    configs, seen = [], set()
    for point in itertools.product(*values):
        params = dict(zip(names, point))
        try:
            cfg = C.resolve(experiment, params, profile)
        except (ValueError, TypeError) as e:
            raise type(e)(f"grid point {params}: {e}") from None
        h = C.config_hash(cfg)
        if h not in seen:
            seen.add(h)
            configs.append(cfg)
    if "lam" in axes and any(c.penalty == "none" and c.lam for c in configs):
        warnings.warn(
            "lam has no effect with penalty='none'; add e.g. penalty=anti_flat to the grid", stacklevel=2
        )
    return configs
