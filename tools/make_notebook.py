"""Write a notebook from a percent-format script (authoring aid; the .ipynb is what is committed).

    python tools/make_notebook.py notebooks/src/01_grokking_geometry.py notebooks/01_grokking_geometry.ipynb

Cells start with `# %%` (code), `# %% [markdown]` (markdown) or `# %% tags=["parameters"]`.
"""

import json
import re
import sys

import nbformat


def build(text: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for chunk in re.split(r"^# %%", text, flags=re.M)[1:]:
        header, _, body = chunk.partition("\n")
        body = body.strip("\n")
        if "[markdown]" in header:
            src = "\n".join(
                line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines()
            )
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            cell = nbformat.v4.new_code_cell(body)
            m = re.search(r"tags=(\[.*\])", header)
            if m:
                cell.metadata["tags"] = json.loads(m.group(1))
            nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs quiet
        cell["id"] = str(i)  # what nbstripout writes, so --verify passes
    return nb


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    nbformat.write(build(open(src).read()), dst)
    print(f"wrote {dst}")
