"""gptnb.head: a classification head on a GPT's body, trained and evaluated like the label-word runs."""

import pytest
import torch

from gptnb.head import HeadCollator, encode_prompts, head_model, head_pairs, predict_head, train_head

LABELS = ["negative", "positive"]
PAIRS = [
    ("Tweet: ok\nSentiment:", 1),
    ("Tweet: the train was late again and nobody told us why\nSentiment:", 0),
    ("Tweet: lovely lunch with my sister\nSentiment:", 1),
    ("Tweet: rain all day, stuck inside\nSentiment:", 0),
]


def pooled_by_hand(head, batch, last):
    """The notebook's head by hand: the body's last hidden state at column `last` of each row, times the head."""
    with torch.no_grad():
        hidden = head.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = hidden.last_hidden_state[torch.arange(len(last)), last] @ head.score.weight.T
    return logits, torch.nn.functional.cross_entropy(logits, batch["labels"])


@pytest.fixture(scope="module")
def gpt2_head(tiny_gpt2):
    model, tokenizer = tiny_gpt2
    return head_model(model, tokenizer, LABELS), tokenizer


def test_head_model_keeps_the_body_and_adds_a_small_head(tiny_gpt2, gpt2_head):
    model, _ = tiny_gpt2
    head, tokenizer = gpt2_head
    assert type(head).__name__ == "GPT2ForSequenceClassification"
    assert head.config.pad_token_id == tokenizer.pad_token_id and head.config.id2label == {0: "negative", 1: "positive"}
    assert tuple(head.score.weight.shape) == (2, model.config.n_embd)
    torch.testing.assert_close(head.transformer.h[0].attn.c_attn.weight, model.transformer.h[0].attn.c_attn.weight)


def test_the_notebooks_pooling_by_hand_check_can_fail(gpt2_head):
    """The last real token's hidden state times the head gives the library's logits and loss; the last column,
    padding in the shorter rows, does not."""
    head, tokenizer = gpt2_head
    batch = HeadCollator(tokenizer.pad_token_id)(encode_prompts(tokenizer, PAIRS, 64))
    assert (batch["attention_mask"] == 0).any(), "the test needs padded rows"
    with torch.no_grad():
        outputs = head(**batch)
    logits, loss = pooled_by_hand(head, batch, batch["attention_mask"].sum(-1) - 1)
    torch.testing.assert_close(logits, outputs.logits)
    torch.testing.assert_close(loss, outputs.loss)
    wrong, _ = pooled_by_hand(head, batch, torch.full((len(PAIRS),), batch["input_ids"].shape[1] - 1))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(wrong, outputs.logits)


def test_a_llama_style_model_gets_a_head_too(tiny_gpt2, make_tiny_llama):
    _, tokenizer = tiny_gpt2
    head = head_model(make_tiny_llama(tokenizer), tokenizer, LABELS)
    assert type(head).__name__ == "LlamaForSequenceClassification"
    batch = HeadCollator(tokenizer.pad_token_id)(encode_prompts(tokenizer, PAIRS, 64))
    with torch.no_grad():
        outputs = head(**batch)
    torch.testing.assert_close(pooled_by_hand(head, batch, batch["attention_mask"].sum(-1) - 1)[0], outputs.logits)


def test_a_model_without_a_matching_body_is_one_clear_error(tiny_gpt2, make_tiny_llama):
    model, tokenizer = tiny_gpt2
    llama = make_tiny_llama(tokenizer)
    llama.config = model.config  # a GPT-2 config over Llama weights: nothing fits
    with pytest.raises(ValueError, match="do not fit GPT2ForSequenceClassification"):
        head_model(llama, tokenizer, LABELS)


def test_long_prompts_keep_their_end():
    class Tokenizer:
        def __call__(self, texts):
            return {"input_ids": [list(range(len(text))) for text in texts]}

    examples = encode_prompts(Tokenizer(), [("abcdefgh", 1)], max_length=3)
    assert examples == [{"input_ids": [5, 6, 7], "labels": 1}]


def test_train_head_keeps_the_best_epoch_and_predicts_probabilities(tiny_gpt2):
    import pandas as pd

    model, tokenizer = tiny_gpt2
    frame = pd.DataFrame({"text": ["so good", "awful day", "love it", "hate this"] * 4, "label": [1, 0, 1, 0] * 4})
    pairs = head_pairs(frame, LABELS)
    assert pairs[0] == ("Tweet: so good\nSentiment:", 1)
    head = head_model(model, tokenizer, LABELS)
    result = train_head(head, tokenizer, pairs, pairs[:8], epochs=2, batch_size=8, learning_rate=1e-3, progress=False)
    evals = [entry["eval_loss"] for entry in result.log_history if "eval_loss" in entry]
    assert len(evals) == 2 and result.best_eval_loss == min(evals)
    assert result.trainable_params == sum(p.numel() for p in head.parameters())
    assert result.summary()["details"]["n_train"] == 16 and "model" not in result.summary()
    probabilities = predict_head(result.model, tokenizer, [prompt for prompt, _ in pairs[:5]], batch_size=2)
    assert probabilities.shape == (5, 2)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(5))
    with pytest.raises(ValueError, match="at least one"):
        train_head(head, tokenizer, [])
