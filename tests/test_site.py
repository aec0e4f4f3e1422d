"""`make site`: the course site (Sphinx + myst-nb), built in the tiny profile.

`make site` keeps the notebooks' executions in a jupyter-cache (SITE_CACHE) and runs only a notebook that is not
in it. Here that cache is first filled with each notebook's one execution of this `make test` (conftest's
`executed_notebooks`), so the build runs no notebook again; a real `make site` on an empty cache executes them.
"""

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import nbformat
import pytest

from gptnb.exercises import Choice, quiz, quiz_html

pytest.importorskip("myst_nb", reason="make site's tools are the site extra (pip install -e '.[site]')")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def notebook_reader():
    """site/notebook_reader.py, the reader `make site` reads the notebooks with."""
    spec = importlib.util.spec_from_file_location("notebook_reader", ROOT / "site" / "notebook_reader.py")
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    return reader


def fill(cache: Path, sources: dict) -> None:
    """Put each executed source notebook into the jupyter-cache at `cache`, keyed as `make site` reads it."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    reader, store = notebook_reader(), get_cache(str(cache))
    for path in NOTEBOOKS:
        notebook = reader.read(path.read_text())
        for cell, executed in zip(notebook.cells, sources[path.stem].cells):
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = executed.outputs, executed.execution_count
        store.cache_notebook_bundle(CacheBundleIn(notebook, str(path)), check_validity=False, overwrite=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory, executed_notebooks) -> tuple[Path, str, Path]:
    """(the site's html folder, what `make site` printed, its jupyter-cache folder)."""
    if shutil.which("make") is None:
        pytest.skip("needs make")
    out, cache = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("site-cache")
    fill(cache / "tiny", executed_notebooks[2])
    done = subprocess.run(
        ["make", "--no-print-directory", "site", "SITE_PROFILE=tiny", f"SITE_OUT={out}", f"SITE_CACHE={cache}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "GPTNB_PROFILE": "cpu"},  # make site's SITE_PROFILE must win
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return out / "html", done.stdout + done.stderr, cache


def page(site, name: str) -> str:
    return (site[0] / name).read_text()


def test_the_readme_is_the_landing_page_with_every_notebook_in_the_navigation(site):
    assert 'url=README.html"' in page(site, "index.html")
    landing = page(site, "README.html")
    assert "how GPT models work" in landing and "tiny profile" in landing
    for path in NOTEBOOKS:
        assert f'href="notebooks/{path.stem}.html"' in landing, path.stem


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_has_a_page_with_its_outputs_run_in_the_tiny_profile(site, path):
    html = page(site, f"notebooks/{path.stem}.html")
    title = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0].lstrip("# ").strip()
    assert re.sub(r"[`*]", "", title).split(":")[0] in html, title
    assert html.count('class="cell_output') >= 3
    assert "profile tiny:" in html, "the banner does not say the tiny profile"
    assert 'href="../README.html#how-the-notebooks-work"' in html, "the title cell's README link does not resolve"


def test_figures_are_images_of_the_pages(site):
    images = [
        (name, source)
        for path in NOTEBOOKS
        for name in [f"notebooks/{path.stem}.html"]
        for source in re.findall(r'<img[^>]+src="(\.\./_images/[^"]+\.png)"', page(site, name))
    ]
    assert images, "no figure on any notebook page"
    for name, source in images:
        assert (site[0] / "notebooks" / source).resolve().is_file(), f"{name}: {source}"


def test_search_index_knows_the_notebooks(site):
    index = page(site, "searchindex.js")
    assert (site[0] / "search.html").is_file()
    for path in NOTEBOOKS:
        assert f'"notebooks/{path.stem}"' in index, path.stem
    assert '"attent' in index


def test_the_build_took_every_notebook_from_the_cache_and_would_again(site):
    from jupyter_cache import get_cache

    printed, cache, reader = site[1], get_cache(str(site[2] / "tiny")), notebook_reader()
    assert printed.count("Using cached notebook") == len(NOTEBOOKS) and "Executing notebook" not in printed, printed
    for path in NOTEBOOKS:  # as make site reads them
        assert cache.match_cache_notebook(reader.read(path.read_text())), f"{path.name} is not in the cache"


def test_reference_answers_stay_collapsed(site):
    html = page(site, "notebooks/02_prompting.html")
    answers = [found.start() for found in re.finditer("BEGIN SOLUTION", html)]
    assert answers, "no answer cell on the page"
    for at in answers:
        assert html.rfind("<details", 0, at) > html.rfind("</details>", 0, at), "a reference answer is shown open"


def test_quizzes_show_each_choice_with_why_without_a_kernel(site):
    from gptnb.exercises import nb02

    html = page(site, "notebooks/02_prompting.html")
    for question, choices in (nb02.QUIZ_ONE_PROMPT, nb02.QUIZ_CALIBRATION, nb02.QUIZ_VALIDATION):
        assert quiz_html(question, choices) in html, question
    assert "VBox(children=" not in html, "a quiz is shown as its widget's text"


def test_the_playground_shows_what_it_wrote_without_a_kernel(site):
    html = page(site, "notebooks/03_generation.html")
    assert re.search(r'<div class="gptnb-playground"><p><b>Playground\.</b>.*?<pre[^>]*>\S.*?</pre></div>', html, re.S)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_widgets_without_a_static_form_leave_no_text(site, path):
    html = page(site, f"notebooks/{path.stem}.html")
    for text in ("VBox(children=", "HBox(children=", "interactive(children=", "&lt;?, ?it/s]"):
        assert text not in html, f"a widget shows its text: {text}"


def test_no_page_loads_a_script_from_the_internet(site):
    for path in site[0].rglob("*.html"):
        html = path.read_text()
        sources = re.findall(r"<script[^>]*\ssrc=[\"']([^\"']+)", html)
        assert not [source for source in sources if re.match(r"(https?:)?//", source)], path.name
        assert "cdnjs" not in html and "jsdelivr" not in html, path.name


def test_no_page_loads_an_image_from_the_internet_and_the_colab_links_stay(site):
    for path in site[0].rglob("*.html"):
        sources = re.findall(r"<img[^>]*\ssrc=[\"']([^\"']+)", path.read_text())
        assert not [source for source in sources if re.match(r"(https?:)?//", source)], path.name
    colab = r'<a class="reference external" href="https://colab\.research\.google\.com/[^"]+01_gpt_family\.ipynb"[^>]*>'
    for name in ("README.html", "notebooks/01_gpt_family.html"):
        assert re.search(colab + r"Open In Colab</a>", page(site, name)), name


def test_formulas_are_images_drawn_at_build_time(site):
    html = page(site, "notebooks/01_gpt_family.html")
    images = re.findall(r'<img class="math" src="([^"]+)" alt="([^"]*)"', html)
    assert len(images) > 10 and any("softmax" in tex for _, tex in images), images
    for source, tex in images:
        assert (site[0] / "notebooks" / source).resolve().is_file(), tex
    assert '<code class="math">' not in html, "mathtext could not draw a formula"


def test_a_quizs_html_names_each_choice_right_or_not_with_why_escaped():
    choices = [Choice("<b>", False, "a tag & more"), Choice('"quoted"', True, "it's right")]
    shown = quiz_html("Is 1 < 2?", choices)
    assert "<b>Is 1 &lt; 2?</b>" in shown
    assert "<details><summary>&lt;b&gt;</summary><b>Not quite.</b> a tag &amp; more</details>" in shown
    assert "<details><summary>&quot;quoted&quot;</summary><b>Right.</b> it&#x27;s right</details>" in shown


def test_the_quiz_keeps_its_widget_for_jupyterlab_and_adds_the_html():
    choices = [Choice("yes", True, "so"), Choice("no", False, "not so")]
    with mock.patch("IPython.display.display") as display:
        quiz("Q?", choices)
    (bundle,), options = display.call_args
    assert options == {"raw": True} and "model_id" in bundle["application/vnd.jupyter.widget-view+json"]
    assert bundle["text/html"] == quiz_html("Q?", choices) and bundle["text/plain"].startswith("VBox(")
