"""Capitals: short factual questions with aliases ("What is the capital of Kenya?"), from two shipped tables.

Why this task: SmolLM2-135M-Instruct sits at 9% on NQ-open and 0% on GSM8K and on arithmetic with a two-digit
operand, so a review there has almost nothing to fix and nothing to lose. World capitals are facts a small model
half knows: it names Paris and Tokyo but not Ngerulmud, so the same model lands in a range where a review can
move answers both ways (docs/real-model.md, section C, has where SmolLM2 sits).

Three kinds of question, each from a hand-written table under `data/capitals/` (facts, no upstream file):
`capital-of-country` ("What is the capital of Kenya?"), `country-of-capital` ("Nairobi is the capital of which
country?") and `capital-of-state` ("What is the capital of the US state of Texas?"). Every name carries its
aliases (Kyiv/Kiev, Myanmar/Burma, Bogotá/Bogota), and countries with several capitals accept each (Bolivia:
Sucre or La Paz). Scoring is in-accuracy, STaSC's reward on NQ-open: right when a gold alias appears as a token
run anywhere in the reply.

Two kinds of question are left out, because the inclusion score could not judge them:
- one whose text already holds a gold alias ("What is the capital of Singapore?": echoing the question scores);
- one whose gold alias lies inside the gold of another question of its kind (Guinea inside "Papua New Guinea",
  Sudan inside "South Sudan"): a reply naming the other answer would score as right.

Splits. A country's two questions, or a state's one, go to one split by a seeded hash of its name: 50% train,
25% validation, 25% test, so no fact is in two splits; within a split, questions come in hash order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from selfcorrect.errors import SelfCorrectError
from selfcorrect.rewards import get_reward, mentions
from selfcorrect.tasks.base import SPLITS, Task
from selfcorrect.tasks.corruptions import MistakeKit, answer_swap_kit, first_alias
from selfcorrect.tasks.loaders import bundled
from selfcorrect.trajectory import Example, Trajectory, Verdict

#: Question wording per kind: {0} is the first name of the table row's asked column.
KINDS = {
    "capital-of-country": "What is the capital of {0}?",
    "country-of-capital": "{0} is the capital of which country?",
    "capital-of-state": "What is the capital of the US state of {0}?",
}
#: Hash buckets (of 4) per split: 50% train, 25% validation, 25% test of the entities.
SPLIT_BUCKETS = {"train": (0, 1), "validation": (2,), "test": (3,)}


@dataclass(frozen=True)
class Fact:
    """One table row: an entity (country or state) and its capital, each a list of names, the first canonical."""

    table: str
    entity: list[str]
    capital: list[str]


def read_table(name: str) -> list[Fact]:
    """`data/capitals/NAME.tsv`: `entity|alias...<TAB>capital|alias...` per line, `#` lines are comments."""
    path = bundled(f"capitals/{name}.tsv")
    facts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        columns = line.split("\t")
        names = [[alias.strip() for alias in column.split("|") if alias.strip()] for column in columns]
        if len(names) != 2 or not all(names):
            raise SelfCorrectError(f"{path}, line {number}: expected 'entity<TAB>capital', got {line!r}")
        facts.append(Fact(name, *names))
    return facts


def _asked(kind: str, fact: Fact) -> tuple[str, list[str]]:
    """The name a question of `kind` asks about, and the gold aliases it wants."""
    return (fact.capital[0], fact.entity) if kind == "country-of-capital" else (fact.entity[0], fact.capital)


def _ambiguous(question: str, gold: list[str], rivals: Sequence[list[str]]) -> bool:
    """Whether inclusion scoring cannot judge this question: the question holds a gold alias, or a gold alias lies
    inside another question's gold (its `rivals`)."""
    if any(mentions(question, alias) for alias in gold):
        return True
    return any(mentions(other, alias) for alias in gold for names in rivals for other in names)


def _bucket(seed: int, fact: Fact) -> tuple[int, int]:
    """(split bucket, order key) of a fact, from a seeded hash of its table and canonical name."""
    digest = hashlib.blake2b(f"{seed}:{fact.table}:{fact.entity[0]}".encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big")
    return key % 4, key


class CapitalsTask(Task):
    """World and US-state capitals; `kinds` picks the question kinds (all three by default) and `seed` the split."""

    name = "capitals"
    description = ("short factual questions with aliases: capitals of countries and US states, and the country "
                   "of a capital; reward in_accuracy")
    max_new_tokens: ClassVar[int] = 64
    measures = "accuracy"

    def __init__(self, kinds: Sequence[str] = tuple(KINDS), seed: int = 0, reward: str = "in_accuracy") -> None:
        unknown = [kind for kind in kinds if kind not in KINDS]
        if unknown or not kinds:
            raise SelfCorrectError(f"capitals: unknown kinds {unknown or list(kinds)}; known: {', '.join(KINDS)}")
        self.kinds, self.seed, self.reward_name = list(kinds), seed, reward
        self._reward = get_reward(reward)
        self._examples: dict[str, list[Example]] | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kinds": self.kinds, "seed": self.seed, "reward": self.reward_name}

    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        if split not in SPLITS:
            raise SelfCorrectError(f"capitals: unknown split {split!r}; known: {', '.join(SPLITS)}")
        if self._examples is None:
            self._examples = self._carve()
        return self._examples[split][:limit]

    def _questions(self) -> Iterator[tuple[str, Fact, str, list[str]]]:
        """(kind, fact, question, gold) for every question the task can ask, ambiguous ones left out."""
        tables = {"capital-of-state": "us_states"}
        for kind in self.kinds:
            facts = read_table(tables.get(kind, "countries"))
            golds = [_asked(kind, fact)[1] for fact in facts]
            for index, fact in enumerate(facts):
                asked, gold = _asked(kind, fact)
                question = KINDS[kind].format(asked)
                if not _ambiguous(question, gold, golds[:index] + golds[index + 1:]):
                    yield kind, fact, question, gold

    def _carve(self) -> dict[str, list[Example]]:
        rows: dict[str, list[tuple[int, Example]]] = {split: [] for split in SPLITS}
        for kind, fact, question, gold in self._questions():
            bucket, key = _bucket(self.seed, fact)
            split = next(name for name, buckets in SPLIT_BUCKETS.items() if bucket in buckets)
            example = Example(id=f"{kind}:{fact.entity[0]}", gold=gold, fields={"question": question},
                              metadata={"split": split, "kind": kind, "entity": fact.entity[0]})
            rows[split].append((key, example))
        return {split: [example for _, example in sorted(pairs, key=lambda pair: (pair[0], pair[1].id))]
                for split, pairs in rows.items()}

    def question(self, example: Example) -> str:
        return example.fields["question"]

    def score(self, example: Example, text: str) -> Verdict:
        return self._reward(example, text)

    def extras(self, trajectories: Sequence[Trajectory]) -> dict[str, Any]:
        """Accuracy of the first and the last answer per question kind: the kinds differ in difficulty (a capital
        named from its country, or the reverse), so a pooled number can hide where a review moved answers."""
        rows: dict[str, list[tuple[float, float]]] = {}
        for trajectory in trajectories:
            verdicts = [turn.verdict for turn in trajectory.model_turns() if turn.verdict is not None]
            if verdicts:
                rows.setdefault(trajectory.example.metadata["kind"], []).append(
                    (verdicts[0].score, verdicts[-1].score))
        return {"accuracy_by_kind": {kind: {"n": len(pairs), "first": sum(p[0] for p in pairs) / len(pairs),
                                            "last": sum(p[1] for p in pairs) / len(pairs)}
                                     for kind, pairs in sorted(rows.items())}}

    @classmethod
    def mistake_kit(cls, pool: Sequence[Example]) -> MistakeKit:
        return answer_swap_kit(pool, first_alias)
