"""Answers grouped by meaning: clusters by bidirectional entailment under an NLI model (Kuhn et al. 2023).

Why: "Paris" and "The capital of France is Paris." are one answer. Grouping free-text samples by normalised string
counts them as two and inflates the answer-distribution entropy of open-ended tasks (NQ-open, GSM8K rationales,
refusals). Two answers share a cluster when each entails the other under an NLI classifier such as
`microsoft/deberta-large-mnli`; each answer is judged together with its question, as in the semantic-entropy paper.

Batching: greedy clustering is sequential, but the questions it asks are not. Every ordered pair of distinct texts
within a set is judged, for all the sets of a round at once, in minibatches: one pass of the classifier over the
round, never a loop over trajectories around the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from selfcorrect.errors import SelfCorrectError

Entails = Callable[[list[tuple[str, str]]], list[bool]]
"""Judges a batch of (premise, hypothesis) pairs: True where the premise entails the hypothesis."""


def entailment_label(id2label: Mapping[int, str], model: str) -> int:
    """The class index an NLI model uses for "entailment". Models order their labels differently (roberta-large-mnli
    and deberta-mnli put it last, others first), so it is read from the config, never assumed."""
    found = [int(i) for i, name in id2label.items() if "entail" in str(name).lower()
             and "not" not in str(name).lower()]
    if len(found) != 1:
        raise SelfCorrectError(f"NLI model {model}: its config's id2label {dict(id2label)} has no single "
                               "'entailment' label; use an NLI (MNLI-style) classifier")
    return found[0]


class NLIJudge:
    """An NLI sequence classifier loaded once (no remote code); `entails` judges pairs in minibatches."""

    def __init__(self, model: str, batch_size: int = 64, device: str | None = None) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from selfcorrect.models import check_model_source

        check_model_source(model)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForSequenceClassification.from_pretrained(model).eval()
        if device:
            self.model.to(device)
        self.entailment = entailment_label(self.model.config.id2label, model)
        self.batch_size = batch_size
        self.forward_calls = 0

    def entails(self, pairs: list[tuple[str, str]]) -> list[bool]:
        import torch

        verdicts: list[bool] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            inputs = self.tokenizer([p for p, _ in chunk], [h for _, h in chunk], padding=True, truncation=True,
                                    return_tensors="pt").to(self.model.device)
            with torch.no_grad():
                logits = self.model(**inputs).logits
            self.forward_calls += 1
            verdicts.extend((logits.argmax(-1) == self.entailment).tolist())
        return verdicts


def greedy_clusters(texts: Sequence[str], same: Callable[[str, str], bool]) -> list[int]:
    """A text joins the first cluster whose first member it is `same` as, else opens a new one (Kuhn et al.)."""
    representatives: list[str] = []
    labels = []
    for text in texts:
        for index, rep in enumerate(representatives):
            if same(text, rep):
                labels.append(index)
                break
        else:
            representatives.append(text)
            labels.append(len(representatives) - 1)
    return labels


def semantic_clusters(text_sets: Sequence[Sequence[str]], entails: Entails) -> list[list[int]]:
    """Cluster labels for every set, from one batched `entails` call over all the ordered pairs the sets need.
    Identical texts are one answer without asking the model."""
    pairs = sorted({(a, b) for texts in text_sets for a in set(texts) for b in set(texts) if a != b})
    verdict: dict[tuple[str, str], bool] = dict(zip(pairs, entails(pairs), strict=True)) if pairs else {}

    def same(a: str, b: str) -> bool:
        return a == b or (verdict[(a, b)] and verdict[(b, a)])

    return [greedy_clusters(texts, same) for texts in text_sets]
