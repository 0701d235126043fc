"""Semantic grouping of samples: entailment label from the config, one batched judge call per round, clusters and
answer entropy by meaning, a real (tiny, random) NLI classifier end to end, a bad model refused before generating."""

import math

import pytest

from selfcorrect.analysis.nli import NLIJudge, entailment_label, semantic_clusters
from selfcorrect.analysis.round_uncertainty import nli_grouping
from selfcorrect.errors import SelfCorrectError

LABELS = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}


def test_entailment_label_is_read_from_the_config_not_assumed():
    assert entailment_label(LABELS, "m") == 2
    assert entailment_label({0: "entailment", 1: "neutral", 2: "contradiction"}, "m") == 0
    assert entailment_label({0: "not_entailment", 1: "entailment"}, "m") == 1
    with pytest.raises(SelfCorrectError, match="no single 'entailment' label"):
        entailment_label({0: "NEGATIVE", 1: "POSITIVE"}, "sentiment-model")


class Judge:
    """Entailment = every capitalised word of the hypothesis occurs in the premise; records every batch asked."""

    def __init__(self):
        self.batches = []

    def __call__(self, pairs):
        self.batches.append(list(pairs))
        return [{w for w in h.split() if w[0].isupper()} <= set(p.split()) for p, h in pairs]


def test_one_judge_call_for_all_sets_and_no_question_about_identical_texts():
    judge = Judge()
    sets = [["Paris", "it is Paris", "Rome", "Paris"], ["a", "a"], ["Ann met Bob", "Bob"]]
    labels = semantic_clusters(sets, judge)
    assert len(judge.batches) == 1
    asked = judge.batches[0]
    assert all(p != h for p, h in asked) and len(asked) == len(set(asked)) == 6 + 0 + 2
    # "Paris" <-> "it is Paris" entail each other, "Rome" neither; "Ann met Bob" ⊨ "Bob" but not the reverse
    assert labels == [[0, 0, 1, 0], [0, 0], [0, 1]]


def test_grouping_by_meaning_changes_answer_entropy_as_computed_by_hand():
    judge = Judge()
    group = nli_grouping(judge)
    [labels] = group([("Capital?", ["Paris", "it is Paris", "Rome"])])
    assert labels[0] == labels[1] != labels[2]
    assert judge.batches[0][0][0].startswith("Capital? ")  # judged together with the question
    from selfcorrect.analysis.uncertainty import answer_entropy

    by_meaning = answer_entropy([str(x) for x in labels], normalize=lambda s: s)
    assert by_meaning == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert answer_entropy(["Paris", "it is Paris", "Rome"]) == pytest.approx(math.log(3))


def _tiny_nli(folder, verdict: int):
    """A tiny random BERT sequence classifier with MNLI labels whose classifier always says `verdict`."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "paris", "rome", "it", "is", "capital", "?"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=3,
                                                     id2label=LABELS, label2id={v: k for k, v in LABELS.items()}))
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0 if i == verdict else 0.0 for i in range(3)]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_a_real_classifier_loads_offline_and_judges_in_minibatches(tmp_path):
    always = NLIJudge(_tiny_nli(tmp_path / "yes", verdict=2), batch_size=4)
    never = NLIJudge(_tiny_nli(tmp_path / "no", verdict=0), batch_size=4)
    sets = [["Paris", "it is Paris", "Rome"], ["Rome", "Rome"]]
    assert semantic_clusters(sets, always.entails) == [[0, 0, 0], [0, 0]]
    assert always.forward_calls == 2  # 6 ordered pairs in batches of 4
    assert semantic_clusters(sets, never.entails) == [[0, 1, 2], [0, 0]]  # only identical texts merge


def test_eval_groups_samples_by_meaning_and_a_bad_nli_model_fails_before_generating(tmp_path):
    from selfcorrect.backends.scripted import ScriptedBackend
    from selfcorrect.methods.evaluate import EvalConfig, run_eval

    config = {"task": "sandbox-chain", "task_options": {"n_digits": 4, "sizes": {"train": 4, "validation": 4,
                                                                                   "test": 6}},
              "backend": "scripted", "rounds": 1, "samples": 2}

    def respond(request, sample):
        return ["1111", "2222", "3333"][sample]

    by_string = run_eval(EvalConfig(**config), tmp_path / "plain", quiet=True, backend=ScriptedBackend(respond))
    model = _tiny_nli(tmp_path / "nli", verdict=2)
    by_meaning = run_eval(EvalConfig(**config, nli_model=model), tmp_path / "nli-run", quiet=True,
                          backend=ScriptedBackend(respond))
    assert [r["answer_entropy"] for r in by_string["uncertainty"]["by_round"]] == pytest.approx([math.log(3)] * 2)
    assert [r["answer_entropy"] for r in by_meaning["uncertainty"]["by_round"]] == [0.0, 0.0]
    assert by_meaning["uncertainty"]["answer_grouping"] == f"nli:{model}"

    (tmp_path / "no-tokenizer").mkdir()
    backend = ScriptedBackend(respond)
    with pytest.raises(SelfCorrectError, match="no tokenizer files"):
        run_eval(EvalConfig(**config, nli_model=str(tmp_path / "no-tokenizer")), tmp_path / "bad", quiet=True,
                 backend=backend)
    assert backend.calls == [] and not (tmp_path / "bad").exists()


def test_an_nli_model_without_samples_is_refused():
    from selfcorrect.methods.evaluate import EvalConfig, resolve

    with pytest.raises(SelfCorrectError, match="set --samples"):
        resolve(EvalConfig(task="sandbox-chain", backend="scripted", nli_model="some/nli"))
