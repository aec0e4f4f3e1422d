"""The site's notebook reader (site/conf.py's nb_custom_formats): an answer cell collapsed in JupyterLab and Colab
(``jupyter.source_hidden``) is collapsed on the site too (myst-nb's ``hide-input`` tag), so that a reader meets the
task before the reference answer, as in the notebook."""

import nbformat


def read(text: str) -> nbformat.NotebookNode:
    """The notebook in `text`, its collapsed code cells tagged ``hide-input``."""
    notebook = nbformat.reads(text, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if cell.metadata.get("jupyter", {}).get("source_hidden") and "hide-input" not in tags:
            tags.append("hide-input")
    return notebook
