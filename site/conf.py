"""The course site (`make site`): Sphinx with myst-nb, the README as the landing page, a page per notebook.

The source folder is the repository itself, so that the README's links to ``notebooks/NN_*.ipynb`` and the notebooks'
links to ``../README.md#...`` resolve as they do on GitHub. The notebooks are executed in the profile that
``GPTNB_PROFILE`` names (the Makefile's ``SITE_PROFILE``, cpu by default) and their outputs kept in a jupyter-cache
per profile under ``GPTNB_SITE_CACHE``: a notebook whose source has not changed is not run again.
"""

import os
import re
import sys
from pathlib import Path

from docutils import nodes

sys.path.insert(0, str(Path(__file__).parent))  # notebook_reader, math_svg

ROOT = Path(__file__).resolve().parent.parent
PROFILE = os.environ.get("GPTNB_PROFILE", "cpu")
NOTEBOOKS = sorted(
    path.relative_to(ROOT).with_suffix("").as_posix() for path in ROOT.glob("notebooks/[0-9][0-9]_*.ipynb")
)

project = "gptnb"
author = "the gptnb authors"
copyright = "the gptnb authors, MIT licence"
root_doc = "README"
include_patterns = ["README.md", "notebooks/[0-9][0-9]_*.ipynb"]
exclude_patterns = [".git", ".venv*", "build", "**/.ipynb_checkpoints", "notebooks/outputs"]

extensions = ["myst_nb", "math_svg"]
html_math_renderer = "mathtext"  # formulas drawn at build time (math_svg.py): no MathJax from a CDN
myst_heading_anchors = 3  # GitHub's heading anchors: ../README.md#how-the-notebooks-work
myst_enable_extensions = ["dollarmath"]
# Widgets need a kernel (a quiz's buttons run Python), so no page loads a script (from a CDN: myst-nb's default
# nb_ipywidgets_js, require.js and @jupyter-widgets/html-manager) to draw them. A widget's output shows its static form
# where it has one (gptnb.widgets.display_with_static_form: a quiz's choices opening to say why, what 03's playground
# wrote); else nothing (an inert widget tag), not its text form, which is how it started (a progress bar at 0 %, or
# "VBox(children=...").
nb_mime_priority_overrides = [("*", "application/vnd.jupyter.widget-view+json", 95)]  # text/html 30, text/plain 100
nb_ipywidgets_js = {}

nb_custom_formats = {".ipynb": "notebook_reader.read"}  # collapsed answer cells stay collapsed
nb_execution_mode = "cache"
nb_execution_cache_path = str(Path(os.environ.get("GPTNB_SITE_CACHE", ROOT / "build" / "site-cache")) / PROFILE)
nb_execution_timeout = 3600  # notebooks 04 and 05 train in the cpu profile
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

html_theme = "sphinx_book_theme"
html_title = f"gptnb: GPT models in notebooks ({PROFILE} profile)"
html_extra_path = ["_extra"]  # index.html: to the README's page
html_theme_options = {
    "repository_url": "https://github.com/gptnb/gptnb",
    "use_repository_button": True,
    "home_page_in_toc": True,
    "show_toc_level": 2,
}


def add_notebooks_to_toc(app, docname, source):
    """Give the landing page (the README) a hidden table of contents of the notebooks: the site's navigation."""
    if docname == root_doc:
        source[0] += "\n\n```{toctree}\n:hidden:\n:maxdepth: 1\n\n" + "\n".join(NOTEBOOKS) + "\n```\n"


def images_from_the_internet_as_text(app, doctree):
    """An image that a page would fetch from the internet (the "Open in Colab" badges) becomes its alt text, in its
    link: offline the page shows a working link instead of a broken image."""
    for image in list(doctree.findall(nodes.image)):
        if re.match(r"(https?:)?//", image["uri"]):
            text = nodes.Text(image.get("alt", ""))
            image.replace_self(text if isinstance(image.parent, nodes.TextElement) else nodes.paragraph("", "", text))


def setup(app):
    app.connect("source-read", add_notebooks_to_toc)
    app.connect("doctree-read", images_from_the_internet_as_text)
