"""Notebook hygiene and strict parameters (the notebooks themselves run through nbmake)."""

import json
import subprocess
import sys

import pytest

from grokprobe import manifest, notebook, paths

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_one_parameters_cell_checked_right_after(nb):
    content = json.loads(nb.read_text())
    assert content["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in content["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    tagged = [i for i, c in enumerate(code) if "parameters" in c["metadata"].get("tags", [])]
    assert tagged == [0], "the first code cell, and only it, is tagged 'parameters'"
    assert f'notebook.parameters(globals(), "{nb.stem}")' in "".join(code[1]["source"])
    spec = notebook.declared(nb.stem)
    assert "profile" in spec and spec["profile"][0] == "quick"


def test_manifest_lists_every_notebook_and_committed_figure():
    listed = set(manifest.notebooks())
    assert listed == {p.name for p in NOTEBOOKS}
    for entry in manifest.load():
        for ext in ("png", "pdf"):
            assert (paths.FIGURES / f"{entry['id']}.{ext}").exists(), (
                f"figures/{entry['id']}.{ext} is not committed"
            )


SPEC = notebook.declared("01_grokking_geometry")


def test_unknown_name_is_rejected_with_the_valid_names():
    with pytest.raises(notebook.ParameterError) as e:
        notebook.check(SPEC, {"sede": 3}, unknown=["sede"])
    assert "'sede'" in str(e.value) and "seed (int or None)" in str(e.value) and "train_frac" in str(e.value)


@pytest.mark.parametrize("name, value", [("seed", "three"), ("lr", "fast"), ("recompute", 1), ("steps", 2.5)])
def test_ill_typed_values_are_rejected(name, value):
    with pytest.raises(notebook.ParameterError, match=f"parameter '{name}' must be"):
        notebook.check(SPEC, {name: value})


def test_values_are_coerced_like_the_command_line_passes_them():
    got = notebook.check(SPEC, {"seeds": "1,42", "lr": 1})
    assert got["seeds"] == [1, 42] and got["lr"] == 1
    assert notebook.check(SPEC, {"seeds": "[3, 4]"})["seeds"] == [3, 4]
    assert notebook.parse_cli_value("3") == 3 and notebook.parse_cli_value("1e-3") == 1e-3
    assert notebook.parse_cli_value("True") is True and notebook.parse_cli_value("x^2+y^2") == "x^2+y^2"


def test_injected_parameters_are_read_from_the_kernel_history(monkeypatch):
    ns = {k: v for k, (v, _, _) in SPEC.items()}
    ns["In"] = ["", "profile = 'quick'", '# Parameters\nsede = 3\nprofile = "smoke"\n']
    ns["sede"] = 3
    with pytest.raises(notebook.ParameterError, match="sede"):
        notebook.parameters(ns, "01_grokking_geometry")
    monkeypatch.setenv("GROKPROBE_PROFILE", "smoke")
    ns["In"][-1] = "# Parameters\nseed = 3\n"
    ns["seed"] = 3
    assert notebook.parameters(ns, "01_grokking_geometry")["profile"] == "smoke"


def test_cli_rejects_a_typo_before_starting_a_kernel():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "grokprobe.notebook",
            str(paths.NOTEBOOKS / "01_grokking_geometry.ipynb"),
            "-p",
            "sede",
            "3",
            "--profile",
            "smoke",
            "--no-html",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "sede" in r.stderr and "valid parameters" in r.stderr


def test_plain_papermill_with_a_typo_fails_naming_it(tmp_path):
    papermill = pytest.importorskip("papermill")
    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(
            str(paths.NOTEBOOKS / "01_grokking_geometry.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"sede": 3, "profile": "smoke"},
            progress_bar=False,
            cwd=str(paths.NOTEBOOKS),
            kernel_name="python3",
        )
    assert "ParameterError" in str(e.value) and "sede" in str(e.value)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_sees_every_declared_parameter(nb):
    """`papermill --help-notebook` must list them all: annotate as `name: "Optional[int]" = None`
    (papermill cannot read `int | None`) and keep '=' out of the comments."""
    papermill = pytest.importorskip("papermill")
    inferred = papermill.inspect_notebook(str(nb))
    assert set(inferred) == set(notebook.declared(nb.stem))
