"""gptnb.finetune and `gptnb finetune`: masking, formats, training, LoRA, the CLI's errors and outputs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

import gptnb
from gptnb import collate, evaluate, lora, prompts
from gptnb import finetune as ft
from gptnb.cli import main
from gptnb.data import load_tweets, read_labelled_csv

LABELS = ("negative", "positive")
PAIRS = [
    ("Tweet: I love this so much\nSentiment:", " positive"),
    ("Tweet: worst day ever, everything broke\nSentiment:", " negative"),
    ("Tweet: ok\nSentiment:", " positive"),
]


@pytest.fixture
def fresh_tiny():
    """A tiny GPT-2 of its own (training changes the weights, so the shared fixture is not used)."""
    return gptnb.load_model("tiny-gpt2", device="cpu", training=True)


@pytest.fixture(scope="module")
def tokenizer():
    return gptnb.load_tokenizer("tiny-gpt2")


@pytest.fixture(scope="module")
def sample():
    return load_tweets("sample", n_train=48, n_val=16, n_test=16, verbose=False)


def test_collator_masks_padding_and_prompt(tokenizer):
    examples = collate.encode_pairs(tokenizer, PAIRS, max_length=64)
    batch = collate.CompletionCollator(tokenizer.pad_token_id, "completion")(examples)
    width = batch["input_ids"].shape[1]
    keep = batch["logits_to_keep"]
    for row, example in enumerate(examples):
        n, prompt = len(example["input_ids"]), example["prompt_length"]
        assert batch["attention_mask"][row].tolist() == [0] * (width - n) + [1] * n  # left padding
        assert batch["input_ids"][row, width - n :].tolist() == example["input_ids"]
        full_labels = [-100] * (width - n) + [-100] * prompt + example["input_ids"][prompt:]
        assert batch["labels"][row].tolist() == full_labels[width - keep :]
        assert batch["labels"][row, -1].item() == tokenizer.eos_token_id  # kept, though pad == eos
    assert keep < width  # the output layer runs on the label columns only


def test_collator_whole_sequence_masks_only_padding(tokenizer):
    examples = collate.encode_pairs(tokenizer, PAIRS, max_length=64)
    batch = collate.CompletionCollator(tokenizer.pad_token_id, "all")(examples)
    width = batch["input_ids"].shape[1]
    assert batch["logits_to_keep"] == width
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        # every real token except the first (nothing predicts it) is a label; padding never is
        assert batch["labels"][row].tolist() == [-100] * (width - n + 1) + example["input_ids"][1:]


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-gpt-neo"])
@pytest.mark.parametrize("loss_on", collate.LOSS_ON)
def test_batched_loss_equals_loss_of_each_example_alone(tokenizer, name, loss_on):
    """Padding, position ids and the kept logits change nothing: the batch's loss is the unpadded one."""
    model, _ = gptnb.load_model(name, device="cpu")
    examples = collate.encode_pairs(tokenizer, PAIRS, max_length=64)
    with torch.no_grad():
        batched = model(**collate.CompletionCollator(tokenizer.pad_token_id, loss_on)(examples)).loss
        total = count = 0
        for example in examples:
            ids = torch.tensor(example["input_ids"])
            targets = ids[1:].clone()
            if loss_on == "completion":
                targets[: example["prompt_length"] - 1] = -100
            logits = model(input_ids=ids[None]).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            count += int((targets != -100).sum())
    assert batched.item() == pytest.approx(total / count, rel=1e-4)


def test_length_grouped_batches_have_similar_lengths(tokenizer, sample):
    examples = collate.encode_pairs(tokenizer, prompts.tweet_pairs(sample.train, sample.labels), 64)
    ordered = ft.length_grouped(examples, batch_size=8, seed=1)
    assert sorted(map(id, ordered)) == sorted(map(id, examples))
    batches = [ordered[i : i + 8] for i in range(0, len(ordered), 8)]
    ranges = [(min(len(e["input_ids"]) for e in b), max(len(e["input_ids"]) for e in b)) for b in batches]
    assert all(
        high <= low_next or low >= high_next
        for (low, high), (low_next, high_next) in [(a, b) for a in ranges for b in ranges if a is not b]
    )  # batches do not overlap in length
    assert ranges != sorted(ranges)  # and come in a shuffled order


def test_truncation_keeps_the_completion(tokenizer):
    long_prompt = "Tweet: " + "very " * 100 + "good\nSentiment:"
    [example] = collate.encode_pairs(tokenizer, [(long_prompt, " positive")], max_length=16)
    assert len(example["input_ids"]) == 16
    assert tokenizer.decode(example["input_ids"][example["prompt_length"] :]) == " positive<|endoftext|>"
    assert tokenizer.decode(example["input_ids"][: example["prompt_length"]]).endswith("good\nSentiment:")


def test_training_and_testing_use_one_format(monkeypatch, fresh_tiny, sample):
    """`classify` scores exactly the prompts and completions `tweet_pairs` trains on."""
    model, tokenizer = fresh_tiny
    seen = {}

    def fake_label_logprobs(model, tokenizer, prompts, labels, batch_size=16):
        seen.update(prompts=prompts, labels=labels)
        return torch.zeros(len(prompts), len(labels))

    monkeypatch.setattr(evaluate, "label_logprobs", fake_label_logprobs)
    evaluate.classify(model, tokenizer, sample.test["text"].tolist(), sample.labels)
    pairs = prompts.tweet_pairs(sample.test, sample.labels)
    assert seen["prompts"] == [prompt for prompt, _ in pairs]
    assert {completion for _, completion in pairs} <= set(seen["labels"])
    assert [seen["labels"].index(completion) for _, completion in pairs] == sample.test["label"].tolist()


def _loss(model, tokenizer, pairs) -> float:
    batch = collate.CompletionCollator(tokenizer.pad_token_id)(collate.encode_pairs(tokenizer, pairs, 64))
    with torch.no_grad():
        return model(**batch).loss.item()


def test_a_few_steps_lower_the_loss_and_report(fresh_tiny, sample):
    model, tokenizer = fresh_tiny
    pairs = prompts.tweet_pairs(sample.train, sample.labels)
    before = _loss(model, tokenizer, pairs)
    seen = []
    result = ft.finetune(
        model,
        tokenizer,
        pairs,
        pairs[:16],
        epochs=2,
        batch_size=16,
        learning_rate=1e-3,
        progress=False,
        on_step=seen.append,
        logging_steps=2,
    )
    assert _loss(result.model, tokenizer, pairs) < before - 0.5
    assert [entry["step"] for entry in seen if "loss" in entry] == [1, 2, 4, 6]  # the first step, then every 2nd
    assert sum("eval_loss" in entry for entry in seen) == 2  # one evaluation per epoch
    assert result.trainable_params == result.total_params > 0
    assert result.tokens_per_second > 0 and result.train_seconds > 0 and result.peak_memory_gib > 0
    assert 0 <= result.padding_share < 0.10
    assert result.best_eval_loss == min(entry["eval_loss"] for entry in seen if "eval_loss" in entry)
    assert result.model.lm_head.weight is result.model.transformer.wte.weight  # still tied after loading the best
    assert not result.model.training


def test_should_stop_ends_training(fresh_tiny):
    model, tokenizer = fresh_tiny
    result = ft.finetune(model, tokenizer, PAIRS * 10, epochs=3, batch_size=2, progress=False, should_stop=lambda: True)
    assert result.stopped and result.details["steps"] == 1


def test_a_diverging_loss_stops_training_with_one_clear_line(fresh_tiny):
    """The GPU run's NaN: training went on and returned a model that only said "negative"."""
    model, tokenizer = fresh_tiny
    seen = []
    with pytest.raises(ft.TrainingDiverged) as caught:
        ft.finetune(
            model, tokenizer, PAIRS * 8, epochs=2, batch_size=4, learning_rate=1e6, progress=False, logging_steps=1,
            on_step=seen.append,
        )  # fmt: skip
    message = str(caught.value)
    step = len(seen) + 1  # the first entry with a non-finite loss is refused, not passed on
    assert "\n" not in message
    assert f"the training loss is nan at step {step} of 12" in message
    assert "lower learning rate (it was 1e+06)" in message and "mixed_precision=False" in message
    assert all(math.isfinite(entry["loss"]) for entry in seen)


def test_a_non_finite_validation_loss_stops_training(fresh_tiny):
    model, tokenizer = fresh_tiny

    def nan_when_evaluating(module, inputs, output):
        return output if module.training else output * float("nan")

    model.lm_head.register_forward_hook(nan_when_evaluating)
    with pytest.raises(ft.TrainingDiverged, match="the validation loss is nan at step 2 of 4"):
        ft.finetune(model, tokenizer, PAIRS * 2, PAIRS, epochs=2, batch_size=4, progress=False)


def test_training_runs_under_padding_safe_attention(fresh_tiny, monkeypatch):
    model, tokenizer = fresh_tiny
    entered = []

    @contextlib.contextmanager
    def recording(device):
        entered.append(device)
        yield

    monkeypatch.setattr(ft, "padding_safe_attention", recording)
    ft.finetune(model, tokenizer, PAIRS, epochs=1, batch_size=4, progress=False)
    assert entered == [torch.device("cpu")]


def test_bad_arguments_are_refused(fresh_tiny):
    model, tokenizer = fresh_tiny
    with pytest.raises(ValueError, match="loss_on"):
        ft.finetune(model, tokenizer, PAIRS, loss_on="prompt")
    with pytest.raises(ValueError, match="at least one"):
        ft.finetune(model, tokenizer, [])


def test_lora_wraps_trains_saves_and_loads(fresh_tiny, tmp_path):
    model, tokenizer = fresh_tiny
    result = ft.finetune(
        model, tokenizer, PAIRS * 4, epochs=1, batch_size=4, learning_rate=1e-2, lora_rank=4, progress=False
    )
    trainable = {name for name, p in result.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert result.trainable_params < result.total_params / 20
    batch = collate.CompletionCollator(tokenizer.pad_token_id)(collate.encode_pairs(tokenizer, PAIRS, 64))
    batch.pop("labels")
    with torch.no_grad():
        expected = result.model(**batch).logits
    lora.save_finetuned(result.model, tokenizer, tmp_path / "adapter", merge=False)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size < 1_000_000  # the adapter only
    reloaded, _ = lora.load_finetuned(tmp_path / "adapter", device="cpu")
    lora.save_finetuned(result.model, tokenizer, tmp_path / "merged")
    merged, _ = lora.load_finetuned(tmp_path / "merged", device="cpu")
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-4, rtol=1e-4)


def test_fit_embeddings_grows_only_when_tokens_were_added(fresh_tiny):
    model, tokenizer = fresh_tiny
    assert not lora.fit_embeddings(model, tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|label|>"]})
    assert lora.fit_embeddings(model, tokenizer)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)


def test_generate_labels_gives_label_indices_or_minus_one(monkeypatch, tiny_gpt2):
    """Each generated text becomes the index of the label it names first, or -1; prompts go in batches."""
    model, tokenizer = tiny_gpt2
    written = iter([" positive!", " Negative, sadly", " meh", " so positive", " n/a"])
    batches = []

    def fake_generate_text(model, tokenizer, prompts, max_new_tokens, do_sample):
        batches.append(list(prompts))
        return [next(written) for _ in prompts]

    entered = []

    @contextlib.contextmanager
    def recording(device):
        entered.append(device)
        yield

    monkeypatch.setattr(evaluate, "generate_text", fake_generate_text)
    monkeypatch.setattr(evaluate, "padding_safe_attention", recording)  # generation pads on the left
    texts = ["a", "b", "c", "d", "e"]
    assert evaluate.generate_labels(model, tokenizer, texts, LABELS, batch_size=2) == [1, 0, -1, 1, -1]
    assert entered == [model.device]
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert batches[0][0] == prompts.tweet_format(LABELS).render("a")


def test_metrics_and_worst_mistakes():
    metrics = evaluate.classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], LABELS)
    assert metrics["accuracy"] == 0.75
    assert metrics["per_class"]["negative"]["recall"] == 0.5 and metrics["per_class"]["positive"]["precision"] == 2 / 3
    frame = pd.DataFrame(
        {"text": ["a", "b", "c"], "label": [0, 1, 1], "label_name": ["negative", "positive", "positive"]}
    )
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.95, 0.05]])
    table = evaluate.worst_mistakes(frame, probabilities, LABELS)
    assert table["text"].tolist() == ["c", "b"] and table["predicted"].tolist() == ["negative", "negative"]


# --- one place for training settings ----------------------------------------------------------


def test_the_cli_and_a_job_get_their_settings_from_one_function(monkeypatch):
    """`gptnb finetune --lora` and a fine-tuning job with every hyperparameter "auto" train alike: LoRA at the
    profile's rank and lora_learning_rate (not its full-training learning_rate), the job's epochs by OpenAI's rule."""
    from gptnb.serve.jobs.runner import job_settings, resolve_hyperparameters
    from gptnb.training_settings import default_epochs, training_settings

    profile = gptnb.get_profile("tiny")
    auto = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    job = job_settings(auto, 40, profile)
    assert job == job_settings({}, 40, profile) == training_settings(profile, 40, epochs="auto", lora=True)
    assert job.lora_rank == profile.lora_rank and job.learning_rate == profile.lora_learning_rate
    assert job.epochs == default_epochs(40) and job.batch_size == min(profile.batch_size, 40)
    assert resolve_hyperparameters(auto, 40, profile) == {
        "n_epochs": job.epochs, "batch_size": job.batch_size, "learning_rate_multiplier": 1.0,
    }  # fmt: skip
    doubled = job_settings({"learning_rate_multiplier": 2.0, "n_epochs": 3, "batch_size": 2}, 40, profile)
    assert (doubled.learning_rate, doubled.epochs, doubled.batch_size) == (2 * profile.lora_learning_rate, 3, 2)
    full = training_settings(profile, 40)
    assert full.lora_rank is None and full.learning_rate == profile.learning_rate and full.epochs == profile.epochs
    assert training_settings(profile, 40, lora=8, learning_rate=1e-3).as_dict() == {
        "epochs": profile.epochs, "batch_size": min(profile.batch_size, 40), "learning_rate": 1e-3, "lora_rank": 8,
        "max_length": profile.max_length,
    }  # fmt: skip

    seen = []

    def settings_only(*args, **settings):
        seen.append(settings)
        raise _Stop

    monkeypatch.setattr(ft, "finetune", settings_only)
    from gptnb import finetune_cli

    with pytest.raises(_Stop):
        finetune_cli._finetune(finetune_cli_args(["--lora"]))
    chosen = {key: seen[0][key] for key in ("epochs", "batch_size", "learning_rate", "lora_rank", "max_length")}
    assert chosen == training_settings(profile, 32, lora=True, epochs=1).as_dict()


class _Stop(Exception):
    """Raised in place of training, once the settings it was given are seen."""


def finetune_cli_args(extra: list[str]):
    """`gptnb finetune`'s parsed arguments for a small tiny-profile run, plus `extra`."""
    import argparse

    from gptnb import finetune_cli

    parser = argparse.ArgumentParser()
    finetune_cli._add_arguments(parser)
    data = str(gptnb.paths.data_dir() / "tweets_sample.csv")
    return parser.parse_args(["--data", data, "--out", "/nonexistent/run", *SMALL_RUN, *extra])


# --- the command line ----------------------------------------------------------------------


# A small run of the tiny profile: 32 training tweets, one epoch.
SMALL_RUN = ("--profile", "tiny", "--quiet", "--max-examples", "32", "--n-val", "8", "--n-test", "16", "--epochs", "1")


def _cli(tmp_path, *extra, data=None, out="run"):
    data = data or str(gptnb.paths.data_dir() / "tweets_sample.csv")
    return main(["finetune", "--data", data, "--out", str(tmp_path / out), *SMALL_RUN, *extra])


def _leftovers(tmp_path):
    return [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_writes_model_and_metrics(tmp_path, capsys):
    assert _cli(tmp_path) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "train_seconds", "tokens_per_second", "peak_memory_gib", "trainable_params"):
        assert isinstance(metrics[key], (int, float)), key
    assert set(metrics["per_class"]) == {"negative", "positive"}
    assert sum(row["support"] for row in metrics["per_class"].values()) == metrics["n_test"] == 16
    assert "tweets_sample.csv" in metrics["data"] and metrics["n_train"] == 32
    assert metrics["learning_rate"] == gptnb.get_profile("tiny").learning_rate
    assert json.loads((tmp_path / "run" / "log_history.json").read_text())
    model, _ = lora.load_finetuned(tmp_path / "run", device="cpu")
    assert model.config.model_type == "gpt2"
    assert "macro-F1" in capsys.readouterr().out and not _leftovers(tmp_path)

    # A finished run is never overwritten by accident; --overwrite replaces it.
    assert _cli(tmp_path) == 2
    assert "already exists (a finished run)" in capsys.readouterr().err
    assert _cli(tmp_path, "--overwrite", "--lora", "2") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["lora_rank"] == 2 and metrics["learning_rate"] == gptnb.get_profile("tiny").lora_learning_rate
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "the file is empty"),
        ("text,stars\nhello,5\n", ":1: header 'text,stars' has a text column but no label column"),
        ("text,label\nhello,positive\nbye,angry\n", ":3: field 'label': unknown label 'angry'"),
    ],
)
def test_cli_bad_csv_gives_one_clear_line(tmp_path, capsys, content, message):
    path = tmp_path / "tweets.csv"
    path.write_text(content)
    assert _cli(tmp_path, data=str(path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("gptnb finetune: error: ") and message in err and "Traceback" not in err
    assert str(path) in err and not (tmp_path / "run").exists()


def test_cli_other_bad_inputs(tmp_path, capsys):
    assert _cli(tmp_path, data=str(tmp_path / "missing.csv")) == 2
    assert "no such file" in capsys.readouterr().err
    small = tmp_path / "small.csv"
    small.write_text("text,label\n" + "".join(f"tweet {i},{i % 2}\n" for i in range(10)))
    assert _cli(tmp_path, data=str(small)) == 2
    assert "--n-test" in capsys.readouterr().err
    assert _cli(tmp_path, "--lr", "-1") == 2
    assert "--lr must be a positive number" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert _cli(tmp_path, out="file") == 2
    assert "is a file" in capsys.readouterr().err


def test_a_csv_mixing_utf8_and_latin1_rows_keeps_both(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes("text,label\nnaïve one,positive\n".encode() + "café two,negative\n".encode("latin-1"))
    assert read_labelled_csv(path)["text"].tolist() == ["naïve one", "café two"]


def test_cli_crash_leaves_no_output_dir(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lora, "save_finetuned", interrupted)
    assert _cli(tmp_path) == 130
    assert "nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not _leftovers(tmp_path)


def test_cli_runs_data_parallel_under_torchrun(tmp_path):
    """Two processes (gloo on the CPU, as NCCL would be on GPUs): each step takes a batch per process."""
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command = [
        *launcher,
        "-m",
        "gptnb.finetune_cli",
        "--data",
        "sample",
        "--out",
        str(out),
        *SMALL_RUN,
        "--batch-size",
        "8",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["details"]["steps"] == 2 and metrics["details"]["epochs"] == 1.0  # 32 tweets / (8 x 2 processes)
    assert done.stdout.count("macro-F1") == 1 and not _leftovers(
        tmp_path
    )  # only the first process evaluates and writes
