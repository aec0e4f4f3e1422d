"""Evaluating a tweet classifier: label scoring or generation on the test tweets, metrics, the worst mistakes."""

from __future__ import annotations

import torch

from .device import padding_safe_attention
from .generation import generate_text
from .prompts import label_logprobs, parse_label, tweet_format


def classify(model, tokenizer, texts, labels, batch_size: int = 16) -> torch.Tensor:
    """(n_texts, n_labels) probabilities of each label, by scoring every label word after the prompt."""
    fmt = tweet_format(labels)
    scores = label_logprobs(model, tokenizer, [fmt.render(text) for text in texts], list(fmt.label_words), batch_size)
    return scores.softmax(-1)


def generate_labels(model, tokenizer, texts, labels, batch_size: int = 16, max_new_tokens: int = 3) -> list[int]:
    """The label each text gets by greedy generation, parsed from the words written; -1 when none is named."""
    fmt = tweet_format(labels)
    prompts = [fmt.render(text) for text in texts]
    predictions = []
    with padding_safe_attention(model.device):  # `generate_text` pads on the left
        for start in range(0, len(prompts), batch_size):
            generated = generate_text(
                model, tokenizer, prompts[start : start + batch_size], max_new_tokens, do_sample=False
            )
            predictions += [-1 if (found := parse_label(text, labels)) is None else found for text in generated]
    return predictions


def classification_metrics(y_true, y_pred, labels) -> dict:
    """Accuracy, macro-F1 and sklearn's per-class report (precision, recall, F1, support)."""
    from sklearn.metrics import classification_report

    from .results import score

    report = classification_report(
        y_true, y_pred, labels=list(range(len(labels))), target_names=list(labels), output_dict=True, zero_division=0
    )
    return {**score(y_true, y_pred), "per_class": {name: report[name] for name in labels}}


def worst_mistakes(frame, probabilities: torch.Tensor, labels, k: int = 8):
    """The `k` test tweets the model got wrong most confidently: text, true and predicted label, confidence."""
    confidence, predicted = probabilities.max(-1)
    table = frame.assign(predicted=[labels[i] for i in predicted.tolist()], confidence=confidence.tolist())
    wrong = table[predicted.numpy() != table["label"].to_numpy()]
    return wrong.sort_values("confidence", ascending=False).head(k)[["text", "label_name", "predicted", "confidence"]]
