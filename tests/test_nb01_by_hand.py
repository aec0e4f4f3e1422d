"""Notebook 01's by-hand checks can fail. The cells tagged `by-hand-check` compare GPT-2's attention, first block and
forward pass written in torch with the library (`torch.testing.assert_close`); each must raise once one weight that
the hand-written code reads differs from the library's."""

import copy
from pathlib import Path

import matplotlib
import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_gpt_family.ipynb"
TAG = "by-hand-check"
FUNCTIONS = ("attention_by_hand", "block_by_hand", "forward_by_hand")


@pytest.fixture(scope="module")
def notebook():
    """(namespace, {hand-written function: the check cell calling it}): the notebook's code cells run in order up to
    its last by-hand check, in the tiny profile, as a kernel would run them."""
    import matplotlib.pyplot as plt

    cells = [cell for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code"]
    tagged = [index for index, cell in enumerate(cells) if TAG in cell.metadata.get("tags", [])]
    checks = {name: cells[i].source for i in tagged for name in FUNCTIONS if f"{name}(" in cells[i].source}
    namespace = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GPTNB_PROFILE", "tiny")
        matplotlib.use("Agg")
        patch.setattr(plt, "show", lambda *args, **kwargs: None)
        for cell in cells[: max(tagged) + 1]:
            exec(compile(cell.source, f"{NOTEBOOK.name}, cell {cell.id}", "exec"), namespace)
        yield namespace, checks


def with_one_weight_changed(function, weight):
    """`function`, called with a copy of its module argument in which the first entry of `weight` is 1 larger."""

    def changed(first, module, *rest):
        module = copy.deepcopy(module)
        with torch.no_grad():
            module.get_parameter(weight).view(-1)[0] += 1.0
        return function(first, module, *rest)

    return changed


def test_each_function_has_one_check_and_the_checks_pass_as_written(notebook):
    namespace, checks = notebook
    assert sorted(checks) == sorted(FUNCTIONS)
    for source in checks.values():
        exec(source, namespace)
    assert sorted(namespace["differences"]) == ["attention", "block 0", "logits"]


@pytest.mark.parametrize(
    "function, weight",
    [
        ("attention_by_hand", "c_attn.weight"),  # the first query column of head 0
        ("attention_by_hand", "c_proj.bias"),
        ("block_by_hand", "mlp.c_fc.weight"),
        ("block_by_hand", "ln_2.bias"),
        ("forward_by_hand", "transformer.wpe.weight"),
        ("forward_by_hand", "transformer.h.1.mlp.c_proj.weight"),  # the last block of the tiny GPT-2
        ("forward_by_hand", "transformer.ln_f.weight"),
    ],
)
def test_a_changed_weight_fails_the_check(notebook, function, weight):
    namespace, checks = notebook
    original = namespace[function]
    namespace[function] = with_one_weight_changed(original, weight)
    try:
        with pytest.raises(AssertionError, match="not close"):
            exec(checks[function], namespace)
    finally:
        namespace[function] = original
