import matplotlib.pyplot as plt
import pytest

from gptnb import plots
from gptnb.family import COLUMNS, architecture, family_csv, load_family_table
from gptnb.files import DataError
from gptnb.models import count_parameters, model_config

EXPECTED = [
    "openai-gpt",
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
    "gpt3-175b",
    "gpt-neo-125m",
    "gpt-neo-1.3b",
    "gpt-neo-2.7b",
    "gpt-j-6b",
    "smollm2-135m",
]


@pytest.fixture(scope="module")
def table():
    return load_family_table()


def test_csv_has_the_family_and_columns(table):
    assert list(table["gptnb_name"]) == EXPECTED
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert table.loc[table["gptnb_name"] == "gpt3-175b", "open_weights"].item() is False
    assert table["open_weights"].sum() == len(table) - 1


def test_reported_sizes_as_in_the_sources(table):
    reported = dict(zip(table["gptnb_name"], table["reported_params"]))
    assert reported["gpt2"] == 117_000_000  # GPT-2 paper, Table 2
    assert reported["gpt2-large"] == 762_000_000
    assert reported["gpt2-xl"] == 1_542_000_000
    assert reported["gpt3-175b"] == 175_000_000_000


def test_context_lengths_agree_with_the_registry_configs(table):
    for name, context in zip(table["gptnb_name"], table["context_length"]):
        assert model_config(name).max_position_embeddings == context, name


@pytest.mark.parametrize(
    "name, count",
    [("gpt2", 124_439_808), ("gpt-neo-125m", 125_198_592), ("smollm2-135m", 134_515_008), ("gpt-j-6b", 6_050_882_784)],
)
def test_computed_parameter_counts(name, count):
    assert count_parameters(name) == count


def test_table_carries_computed_counts(table):
    row = table.set_index("gptnb_name").loc["gpt2"]
    assert row["computed_params"] == 124_439_808
    assert row["difference"] == pytest.approx(124_439_808 / 117_000_000 - 1)


def test_bad_rows_are_named_by_line_and_field(tmp_path):
    text = family_csv().read_text().splitlines()
    bad_name = tmp_path / "bad_name.csv"
    bad_name.write_text("\n".join([text[0], text[1].replace("openai-gpt", "gpt-5", 1)]) + "\n")
    with pytest.raises(DataError, match=r"bad_name.csv:2: field 'gptnb_name': 'gpt-5'"):
        load_family_table(bad_name, computed=False)
    no_column = tmp_path / "no_column.csv"
    no_column.write_text("model,year\nGPT-1,2018\n")
    with pytest.raises(DataError, match=r"no_column.csv:1: header lacks gptnb_name"):
        load_family_table(no_column, computed=False)
    bad_number = tmp_path / "bad_number.csv"
    bad_number.write_text("\n".join([text[0], text[1].replace(",117000000,", ",117M,", 1)]) + "\n")
    with pytest.raises(DataError, match=r"bad_number.csv:2: field 'reported_params': '117M'"):
        load_family_table(bad_number, computed=False)
    with pytest.raises(DataError, match="no such file"):
        load_family_table(tmp_path / "missing.csv")


def test_architecture_reads_the_differences_from_the_configs():
    gpt2, neo, gptj, smol = (architecture(n) for n in ["gpt2", "gpt-neo-125m", "gpt-j-6b", "smollm2-135m"])
    assert (gpt2["positions"], gpt2["norm"], gpt2["kv_heads"], gpt2["mlp_width"]) == (
        "learned table",
        "LayerNorm",
        12,
        3072,
    )
    assert neo["attention"] == "global/local alternating, local window 256"
    assert gptj["positions"] == "rotary on 64 of 256 dims per head" and gptj["tied_embeddings"] is False
    assert smol["positions"].startswith("rotary") and smol["norm"] == "RMSNorm"
    assert smol["mlp"] == "gated silu (SwiGLU)" and (smol["heads"], smol["kv_heads"]) == (9, 3)


def test_plots_are_labelled(table):
    ax = plots.family_sizes(table)
    assert ax.get_yscale() == "log" and ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert {text.get_text() for text in ax.texts} == set(table["model"])
    ax = plots.attention_map([[1, 0], [1, 1]], ["a", "b"], title="mask")
    assert ax.get_title() == "mask" and ax.get_xlabel() and ax.get_ylabel()
    assert [label.get_text() for label in ax.get_yticklabels()] == ["a", "b"]
    plt.close("all")
