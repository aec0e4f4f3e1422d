"""Widgets that a page without a kernel can show: the course site renders a notebook's outputs, but a widget's
callbacks need a running Python, so a widget goes out with a static HTML form of itself beside it."""

from __future__ import annotations


def display_with_static_form(widget, static_html: str) -> None:
    """Display `widget` with `static_html` in the same output: JupyterLab, Colab and VS Code draw the live widget (its
    mime type outranks HTML there); the course site, which ranks HTML above widgets (site/conf.py), shows the HTML."""
    from IPython.display import display

    display({**widget._repr_mimebundle_(), "text/html": static_html}, raw=True)
