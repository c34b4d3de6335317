"""Run notebooks headlessly, and make their parameters strict.

papermill only *warns* about unknown parameters, and a typo (`-p sede 3`) would silently run the
defaults. Two guards close that hole:

* inside every notebook, the cell after `parameters` calls `parameters(globals(), NAME)`, which
  compares the cell papermill injected (found in the kernel's input history) and the current
  values with the declared parameters cell of notebooks/NAME.ipynb: unknown names and ill-typed
  values raise before anything runs, whether the notebook came from run_all.sh, plain papermill,
  nbmake or Jupyter;
* `python -m grokprobe.notebook` checks the same before it even starts a kernel.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path

from . import paths

PLAIN = (int, float, str, bool, list, dict, type(None))
TYPE_NAMES = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
    "None": type(None),
}


class ParameterError(ValueError):
    pass


def _annotation_types(node) -> tuple:
    """Allowed types of an annotation: int, float, str, bool, list, dict, None, X | Y, Optional[X],
    or any of these as a string. Write `seed: "Optional[int]" = None`: papermill's own parameter
    inference (papermill --help-notebook) reads quoted Optional[...] but not `int | None`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _annotation_types(ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Optional":
        return _annotation_types(node.slice) + (type(None),)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _annotation_types(node.left) + _annotation_types(node.right)
    if isinstance(node, ast.Constant) and node.value is None:
        return (type(None),)
    if isinstance(node, ast.Name) and node.id in TYPE_NAMES:
        return (TYPE_NAMES[node.id],)
    raise ParameterError(f"unsupported parameter annotation: {ast.unparse(node)}")


def declared(name_or_path) -> dict:
    """{name: (default, allowed types, comment)} from the notebook's `parameters` cell."""
    path = Path(name_or_path)
    if path.suffix != ".ipynb":
        path = paths.NOTEBOOKS / f"{name_or_path}.ipynb"
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{path} must have exactly one cell tagged 'parameters', found {len(cells)}")
    src = "".join(cells[0]["source"])
    lines = src.splitlines()
    out = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.AnnAssign):
            name, default = node.target.id, ast.literal_eval(node.value)
            types = _annotation_types(node.annotation)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            name, default = node.targets[0].id, ast.literal_eval(node.value)
            types = (type(default),)
        else:
            continue
        line = lines[node.lineno - 1]
        out[name] = (default, types, line.split("#", 1)[1].strip() if "#" in line else "")
    return out


def _type_ok(value, types) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def _coerce(name, value, types):
    """papermill's -p passes lists as strings: accept '1,42,15213' and '[1, 42]' for list params."""
    if list in types and isinstance(value, str):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = [ast.literal_eval(v.strip()) for v in value.split(",") if v.strip()]
        value = list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
    if isinstance(value, tuple):
        value = list(value)
    return value


def _fmt_types(types) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)


def check(spec: dict, values: dict, *, unknown=()) -> dict:
    """Validated values for every declared name; raises ParameterError naming the problem."""
    valid = ", ".join(f"{k} ({_fmt_types(t)})" for k, (_, t, _) in spec.items())
    bad = sorted(set(unknown) - set(spec))
    if bad:
        raise ParameterError(f"unknown parameter(s) {', '.join(map(repr, bad))}; valid parameters: {valid}")
    out = {}
    for name, (default, types, _) in spec.items():
        v = _coerce(name, values.get(name, default), types)
        if not _type_ok(v, types):
            raise ParameterError(
                f"parameter {name!r} must be {_fmt_types(types)}, got {type(v).__name__} {v!r}; "
                f"valid parameters: {valid}"
            )
        if isinstance(v, list) and any(
            isinstance(x, bool) or not isinstance(x, (int, float, str)) for x in v
        ):
            raise ParameterError(f"parameter {name!r} must be a list of numbers or strings, got {v!r}")
        out[name] = v
    return out


def _injected_names(ns: dict) -> list[str]:
    """Names assigned by papermill's injected cell(s), read from the kernel's input history."""
    names = []
    for src in ns.get("In", []) or []:
        if src.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(src)
            except SyntaxError:
                continue
            for node in tree.body:
                if isinstance(node, ast.Assign):
                    names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def parameters(ns: dict, notebook: str) -> dict:
    """The notebook's validated parameters; also writes the coerced values back into `ns`.

    GROKPROBE_PROFILE (how nbmake and CI ask for the smoke profile) overrides `profile`.
    """
    spec = declared(notebook)
    values = check(spec, {k: ns[k] for k in spec if k in ns}, unknown=_injected_names(ns))
    env_profile = os.environ.get("GROKPROBE_PROFILE")
    if env_profile and "profile" in values:
        values["profile"] = env_profile
    ns.update(values)
    return values


RUN_PARAMS = ("profile", "recompute")


def config_params(values: dict) -> dict:
    """The parameters that go into config.resolve (everything but how and where to run)."""
    return {k: v for k, v in values.items() if k not in RUN_PARAMS}


def parse_cli_value(text: str):
    """As papermill's -p: int, float, True/False, None, else the string itself."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def execute(
    notebook: Path, params: dict, *, out_dir: Path | None = None, tag: str = "", html: bool = True
) -> Path:
    """Run one notebook with papermill (cwd = notebooks/), keep it and an HTML rendering."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    notebook = Path(notebook).resolve()
    check(declared(notebook), params, unknown=params)
    out_dir = Path(out_dir or paths.BUILD / "executed")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{notebook.stem}{'-' + tag if tag else ''}.ipynb"
    try:
        papermill.execute_notebook(
            str(notebook),
            str(out),
            parameters=params,
            cwd=str(paths.NOTEBOOKS),
            log_output=True,
            progress_bar=False,
            kernel_name="python3",
        )
    finally:
        if html and out.exists():
            body, _ = HTMLExporter().from_notebook_node(nbformat.read(out, as_version=4))
            out.with_suffix(".html").write_text(body)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grokprobe.notebook", description=__doc__.splitlines()[0])
    ap.add_argument("notebook", type=Path)
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--profile", choices=("smoke", "quick", "paper"))
    ap.add_argument("--device", help="passed on if the notebook declares a `device` parameter")
    ap.add_argument("--recompute", action="store_true", help="passed on if the notebook declares `recompute`")
    ap.add_argument("--out-dir", type=Path)
    ap.add_argument("--no-html", action="store_true")
    args = ap.parse_args(argv)
    params = {k: parse_cli_value(v) for k, v in args.parameter}
    if args.profile:
        params["profile"] = args.profile
    spec = declared(args.notebook)
    if args.device and "device" in spec:
        params["device"] = args.device
    if args.recompute and "recompute" in spec:
        params["recompute"] = True
    try:
        out = execute(
            args.notebook, params, out_dir=args.out_dir, tag=params.get("profile", ""), html=not args.no_html
        )
    except ParameterError as e:
        print(f"error: {args.notebook}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # papermill's error already names the failing cell
        print(f"error: {args.notebook} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"executed {args.notebook} -> {out} (+ .html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
