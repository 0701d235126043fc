"""The scripted backend: table lookup by conversation depth, ordering, n > 1, stop strings, call counting."""

from __future__ import annotations

import pytest

from selfcorrect.backends import build_backend, load_backend
from selfcorrect.backends.base import GenerationRequest, SamplingParams
from selfcorrect.backends.scripted import ScriptedBackend, truncate_at_stop
from selfcorrect.errors import SelfCorrectError

GREEDY = SamplingParams()


def chat(*contents: str, params: SamplingParams = GREEDY, request_id: str = "") -> GenerationRequest:
    """A conversation alternating user and assistant messages, starting with the user."""
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]
    return GenerationRequest(params=params, messages=messages, id=request_id)


@pytest.fixture
def table() -> ScriptedBackend:
    return ScriptedBackend(answers={"Q1": ["first", "second"]}, default="dunno")


def test_table_answers_follow_the_number_of_assistant_turns(table: ScriptedBackend) -> None:
    requests = [chat("Q1"), chat("Q1", "first", "Review."), chat("Q1", "first", "Review.", "second", "Again."),
                chat("Q2")]
    assert [g.text for g in table.generate(requests)] == ["first", "second", "second", "dunno"]


def test_table_keys_on_the_first_user_message_after_a_system_prompt(table: ScriptedBackend) -> None:
    request = GenerationRequest(params=GREEDY, messages=[{"role": "system", "content": "Be brief."},
                                                         {"role": "user", "content": "Q1"}])
    assert table.generate([request])[0].text == "first"


def test_raw_prompt_is_a_conversation_with_no_turns(table: ScriptedBackend) -> None:
    assert table.generate([GenerationRequest(params=GREEDY, prompt="Q1")])[0].text == "first"


def test_generations_are_ordered_by_request_then_sample() -> None:
    backend = ScriptedBackend(respond=lambda request, k: f"{request.id}:{k}")
    requests = [chat("x", params=SamplingParams(n=2, temperature=1.0), request_id="r0"), chat("y", request_id="r1")]
    outputs = backend.generate(requests)
    assert [(g.text, g.request_index, g.sample_index) for g in outputs] == [("r0:0", 0, 0), ("r0:1", 0, 1),
                                                                            ("r1:0", 1, 0)]
    assert all(g.finish_reason == "stop" for g in outputs)


def test_stop_strings_truncate_at_the_earliest_one() -> None:
    backend = ScriptedBackend(default="answer: 42\nQuestion: next")
    assert backend.generate([chat("q", params=SamplingParams(stop=("\nQuestion",)))])[0].text == "answer: 42"
    assert backend.generate([chat("q", params=SamplingParams(stop=("Q", ":")))])[0].text == "answer"
    assert backend.generate([chat("q", params=SamplingParams(stop=("zzz",)))])[0].text == "answer: 42\nQuestion: next"
    assert truncate_at_stop("abc", ("",)) == "abc"


def test_token_statistics_are_deterministic_pseudo_values() -> None:
    out = ScriptedBackend(default="hi").generate([chat("q")])[0]
    assert out.token_ids == [104, 105]
    assert len(out.token_logprobs) == 2 and all(lp < 0 for lp in out.token_logprobs)
    assert len(out.token_entropies) == 2 and all(h >= 0 for h in out.token_entropies)
    again = ScriptedBackend(default="hi").generate([chat("other question")])[0]
    assert again.token_logprobs == out.token_logprobs  # a function of (text, seed) only
    reseeded = ScriptedBackend(default="hi").generate([chat("q", params=SamplingParams(seed=7))])[0]
    assert reseeded.token_logprobs != out.token_logprobs


def test_calls_record_the_batch_size_of_each_call(table: ScriptedBackend) -> None:
    table.generate([chat("Q1"), chat("Q2"), chat("Q3")])
    table.generate([chat("Q1", "first", "Review.")])
    assert table.calls == [3, 1]


def test_script_must_be_one_thing() -> None:
    with pytest.raises(SelfCorrectError):
        ScriptedBackend(respond=lambda request, k: "", answers={"q": ["a"]})
    with pytest.raises(SelfCorrectError):
        ScriptedBackend(answers={"q": []})


def test_registry_builds_it_from_plain_options() -> None:
    backend = load_backend("scripted", answers={"Q1": ["yes"]}, default="no")
    assert isinstance(backend, ScriptedBackend)
    assert (backend.name, backend.supports_hidden_states) == ("scripted", False)
    assert [g.text for g in backend.generate([chat("Q1"), chat("Q9")])] == ["yes", "no"]


def test_a_backend_without_a_model_is_given_none_and_never_cached(tmp_path) -> None:
    """`has_model` False: build_backend drops the run's model (the scripted backend takes no `model=`) and skips
    the cache, whose keys could not see the script."""
    backend = build_backend("scripted", "sandbox", {"default": "no"}, cache=tmp_path / "cache.sqlite")
    assert type(backend) is ScriptedBackend
    assert not (tmp_path / "cache.sqlite").exists()
