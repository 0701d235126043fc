"""The shared config blocks: each setting that several commands share is declared once, keys stay flat, and a
config.yaml saved before the blocks existed still loads, with the same values, and still resumes its run."""

from pathlib import Path

import pytest
import yaml

from selfcorrect.backends.base import SamplingParams
from selfcorrect.config import build_config
from selfcorrect.config_blocks import ModelBlock, PromptsBlock, SamplingBlock, SeedBlock, TaskBlock, block_values
from selfcorrect.methods.insec import InSeCConfig
from selfcorrect.methods.session import EvalConfig
from selfcorrect.methods.stasc import STaSCConfig
from selfcorrect.runs import RunFolder
from selfcorrect.select import SelectConfig
from selfcorrect.tasks import get_task

SAVED = Path(__file__).parent / "fixtures" / "saved_configs"  # written by the configs as they were before the blocks
BLOCKS = (TaskBlock, PromptsBlock, ModelBlock, SamplingBlock, SeedBlock)
#: config -> the blocks it shares (select asks a corpus, not a task; InSeC sets its temperatures per use).
SHARES = {EvalConfig: BLOCKS, STaSCConfig: BLOCKS, InSeCConfig: (TaskBlock, PromptsBlock, ModelBlock, SeedBlock),
          SelectConfig: (PromptsBlock, ModelBlock, SamplingBlock, SeedBlock)}
#: config -> the fields of its blocks it re-declares for another default or type; nothing else is re-declared.
#: (InSeC's own `max_new_tokens` is not SamplingBlock's: None there means room for a rewrite.)
OVERRIDES = {EvalConfig: set(), STaSCConfig: {"model", "temperature"}, InSeCConfig: {"model"},
             SelectConfig: {"temperature", "max_new_tokens"}}
REQUIRED = {SelectConfig: {"corpus": "corpus.jsonl"}}
FIXTURE = {EvalConfig: "eval", STaSCConfig: "stasc", InSeCConfig: "insec", SelectConfig: "select"}


@pytest.mark.parametrize("config", list(SHARES), ids=lambda c: c.__name__)
def test_each_config_declares_its_shared_settings_only_in_the_blocks(config):
    for block in SHARES[config]:
        assert issubclass(config, block)
    own = set(vars(config).get("__annotations__", {}))
    shared = {name for block in SHARES[config] for name in block.model_fields}
    assert own & shared == OVERRIDES[config]
    assert shared <= set(config.model_fields)


@pytest.mark.parametrize("config", list(SHARES), ids=lambda c: c.__name__)
def test_a_config_saved_before_the_blocks_loads_to_the_same_flat_values(config):
    saved = yaml.safe_load((SAVED / f"{FIXTURE[config]}.yaml").read_text())
    loaded = build_config(config, saved, source="saved config.yaml").model_dump()
    now = config(**REQUIRED.get(config, {})).model_dump()
    assert set(saved) <= set(now)  # no key renamed, removed or nested
    assert {key: loaded[key] for key in saved} == saved
    assert {key: now[key] for key in saved if key != "finetune"} == {k: v for k, v in saved.items() if k != "finetune"}


def test_a_run_started_before_the_blocks_resumes(tmp_path):
    (tmp_path / "config.yaml").write_text((SAVED / "eval.yaml").read_text())
    (tmp_path / "samples.jsonl").write_text("")
    assert RunFolder.open(tmp_path, EvalConfig().model_dump(), resume=True).path == tmp_path


def test_the_defaults_each_method_needs_are_kept():
    """Eval decodes greedily; STaSC and select sample at 1.0; select's answers are short; training needs a model."""
    assert (EvalConfig().temperature, STaSCConfig().temperature, SelectConfig(corpus="c").temperature) == (0, 1, 1)
    assert EvalConfig().max_new_tokens is None and SelectConfig(corpus="c").max_new_tokens == 16
    with pytest.raises(ValueError):
        SelectConfig(corpus="c", max_new_tokens=None)
    for trainer in (STaSCConfig, InSeCConfig):
        with pytest.raises(ValueError):
            trainer(model=None)
    assert EvalConfig(model=None).model is None


def test_one_sampling_method_turns_a_config_into_sampling_params():
    task = get_task("sandbox-chain", n_digits=5)
    for config in (EvalConfig, STaSCConfig, SelectConfig):
        assert config.sampling is SamplingBlock.sampling
    assert STaSCConfig(top_p=0.9).sampling(task, 3) == SamplingParams(temperature=1.0, top_p=0.9, n=3,
                                                                      max_new_tokens=task.max_new_tokens)
    assert EvalConfig(max_new_tokens=7).sampling(task).max_new_tokens == 7


def test_block_values_carry_a_methods_task_model_and_seed_into_another_config():
    stasc = STaSCConfig(task_options={"n_digits": 3}, backend="scripted", seed=5, prompts_file="p.yaml",
                        question_prompt="q2", temperature=0.5)
    carried = block_values(stasc, TaskBlock, ModelBlock, SeedBlock)
    assert set(carried) == {"task", "task_options", "question_prompt", "prompts_file", "backend", "model",
                            "backend_options", "seed"}
    evaluation = EvalConfig(**carried)
    assert (evaluation.task_options, evaluation.backend, evaluation.seed, evaluation.prompts_file) == (
        {"n_digits": 3}, "scripted", 5, "p.yaml")
    assert evaluation.temperature == 0.0  # sampling is not carried: each evaluation sets its own temperature
