"""Named prompt templates (Jinja) that turn a trajectory into the next user message.

Every template has a name, and the name is recorded on the turn it produced, so a run says exactly which
instruction was used. Templates see `question` (the task's rendering of the example), `fields` (the example's raw
fields) and `round`. The papers' prompts ship as YAML files in `prompt_library/` (provenance in their comments);
users add their own from a YAML file of `name: template` pairs, which override both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selfcorrect.errors import SelfCorrectError, suggest


@dataclass(frozen=True)
class Prompt:
    name: str
    template: str

    def variables(self) -> set[str]:
        """The names the template reads, so the records that fill it can be checked before any model runs."""
        from jinja2 import TemplateSyntaxError, meta
        from jinja2.sandbox import SandboxedEnvironment

        try:
            return meta.find_undeclared_variables(SandboxedEnvironment().parse(self.template))
        except TemplateSyntaxError as exc:
            raise SelfCorrectError(f"prompt {self.name!r}: {exc}") from None

    def render(self, **variables: object) -> str:
        from jinja2 import StrictUndefined, TemplateError
        from jinja2.sandbox import SandboxedEnvironment

        env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False)
        try:
            return env.from_string(self.template).render(**variables)
        except TemplateError as exc:
            raise SelfCorrectError(f"prompt {self.name!r}: {exc}") from None


BUILTIN: dict[str, str] = {
    # Round 1: the task's own question, optionally followed by an instruction (see `question_with`).
    "question": "{{ question }}",
    # The plain review instruction of the foundation's `eval` and of Huang et al.'s intrinsic baseline.
    "review": "Review your previous answer and correct it if needed.",
}


LIBRARY = Path(__file__).parent / "prompt_library"


def _read_prompt_file(path: Path) -> dict[str, Prompt]:
    from selfcorrect.config import read_yaml

    prompts = {}
    for name, text in read_yaml(path).items():
        if not isinstance(text, str):
            raise SelfCorrectError(f"{path}: prompt {name!r} must be a string template")
        prompts[str(name)] = Prompt(str(name), text)
    return prompts


def load_prompts(path: str | Path | None = None) -> dict[str, Prompt]:
    """The built-in prompts and the library's, plus (overriding them) those of a user YAML file of
    `name: template` pairs."""
    prompts = {name: Prompt(name, text) for name, text in BUILTIN.items()}
    for library_file in sorted(LIBRARY.glob("*.yaml")):
        prompts.update(_read_prompt_file(library_file))
    if path is not None:
        prompts.update(_read_prompt_file(Path(path)))
    return prompts


def get_prompt(prompts: dict[str, Prompt], name: str) -> Prompt:
    if name not in prompts:
        raise SelfCorrectError(f"unknown prompt {name!r}{suggest(name, sorted(prompts))}; "
                               f"known: {', '.join(sorted(prompts))}")
    return prompts[name]
