"""The site's math renderer (site/conf.py's html_math_renderer): each formula drawn by matplotlib's mathtext into an
SVG file under ``_images/math/``, so that a page loads no script from the internet (Sphinx's default, MathJax, comes
from a CDN). The formulas of notebooks 01 and 02 are within mathtext's TeX; one it cannot draw is shown as its TeX
source, with a warning."""

import hashlib
import html
import re
from pathlib import Path

from docutils import nodes
from matplotlib import rc_context
from matplotlib.font_manager import FontProperties
from matplotlib.mathtext import math_to_image
from sphinx.util import logging

logger = logging.getLogger(__name__)

ALIASES = {"le": "leq", "ge": "geq", "ne": "neq"}  # TeX's short names that mathtext lacks
SIZES = {"inline": 14, "display": 16}  # points: Computer Modern at 14 pt looks as big as the theme's 16 px text


def image(translator, latex: str, size: int) -> str:
    """`latex` at `size` points as an ``<img>`` of its SVG (written next to the site's other images), set on the
    text's baseline, with the TeX as its alternative text; as ``<code>`` when mathtext cannot draw it."""
    drawable = re.sub(r"\\(le|ge|ne)(?![A-Za-z])", lambda short: "\\" + ALIASES[short[1]], latex)
    name = hashlib.sha1(f"{size} {drawable}".encode()).hexdigest()[:16] + ".svg"
    target = Path(translator.builder.outdir, "_images", "math", name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tex = html.escape(latex)
    try:
        with rc_context({"mathtext.fontset": "cm"}):
            depth = math_to_image(f"${drawable}$", target, prop=FontProperties(size=size), format="svg")
    except ValueError as error:
        logger.warning(f"math {latex!r}: mathtext cannot draw it ({str(error).strip().splitlines()[-1]})")
        return f'<code class="math">{tex}</code>'
    source = f"{translator.builder.imgpath}/math/{name}"
    return f'<img class="math" src="{source}" alt="{tex}" style="vertical-align: -{depth:.1f}pt"/>'


def visit_math(translator, node: nodes.math) -> None:
    """An inline formula, on the line."""
    translator.body.append(image(translator, node.astext(), SIZES["inline"]))
    raise nodes.SkipNode


def visit_math_block(translator, node: nodes.math_block) -> None:
    """A displayed formula, in a block of its own."""
    block = translator.starttag(node, "div", CLASS="math", style="justify-content: center")
    translator.body.append(f"{block}{image(translator, node.astext(), SIZES['display'])}</div>\n")
    raise nodes.SkipNode


def setup(app) -> None:
    """Register the renderer as ``mathtext``."""
    app.add_html_math_renderer("mathtext", (visit_math, None), (visit_math_block, None))
