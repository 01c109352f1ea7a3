"""A project-written NLI task with gold labels and step-by-step thoughts.

Small, exact and learnable: quantifier syllogisms, negation, set membership, ordering and
conjunction, each with an entailed and a non-entailed hypothesis. People's names are split between
the splits, so the test split cannot be solved by remembering names seen in training. Each thought
derives what the premise gives, then compares it with the hypothesis word by word before the verdict.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

NAMES = """Ada Alan Alma Amir Anna Arlo Asha Ayla Basil Bea Boris Bruno Carla Cyrus Dara Dante Delia Dev
Edda Egon Elif Emil Enzo Esme Ezra Fay Felix Fern Flora Gael Gemma Gus Hana Hugo Ida Igor Ines Ivo Jade
Jana Joel Juno Kai Kara Kofi Lars Lea Leon Lina Lotte Luca Mabel Malik Mara Milo Mina Nadia Nico Nils
Noor Oda Omar Oona Orla Otis Pia Pablo Quinn Rafa Rhea Rosa Rui Sami Sara Selma Silas Sofi Tara Teo
Theo Tove Uma Uri Vera Vito Wren Yara Yuki Zara Zeno Zoe""".split()

KINDS = [  # (singular, plural)
    ("baker", "bakers"), ("pilot", "pilots"), ("farmer", "farmers"), ("poet", "poets"),
    ("doctor", "doctors"), ("sailor", "sailors"), ("painter", "painters"), ("teacher", "teachers"),
    ("singer", "singers"), ("miner", "miners"), ("judge", "judges"), ("chef", "chefs"),
]
TRAITS = ["brave", "calm", "clever", "honest", "patient", "tall", "quiet", "kind", "strong", "careful"]
SKILLS = ["swim", "fly", "sing", "drive", "cook", "read maps", "ride horses", "play chess", "speak Greek"]
GROUPS = ["choir", "team", "club", "band", "crew", "committee", "jury", "panel"]
PLACES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Kyoto", "Quito", "Dublin", "Hanoi", "Tunis", "Lagos", "Riga"]
RELATIONS = ["older", "taller", "faster", "richer", "younger", "shorter"]


def vocabulary() -> list[str]:
    """Every word the families draw on (all splits), e.g. for generic text over the same words."""
    words = NAMES + PLACES + TRAITS + GROUPS + RELATIONS + ["can", "cannot"]
    words += [w for pair in KINDS for w in pair] + [w for skill in SKILLS for w in skill.split()]
    return sorted(set(words))

SPLIT_FRACTIONS = {"train": 0.7, "dev": 0.1, "test": 0.2}


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def check(word: str, candidates: list[str]) -> str:
    """Step 3's comparison, spelled out one pair at a time: "X and Y: same." or "... different."

    Written in the exact form of the base model's generic word-comparison text (tiny_pretrain.py), so a
    small model can reuse that skill instead of having to discover equality from a few thousand rows.
    """
    pairs = " ".join(f"{word} and {c}: {'same' if word == c else 'different'}." for c in candidates)
    return pairs + (" So it follows." if word in candidates else " So it does not follow.")


def syllogism(rng: random.Random, names: list[str], entailed: bool) -> tuple[str, str, str]:
    name = rng.choice(names)
    (kind, kinds), trait = rng.choice(KINDS), rng.choice(TRAITS)
    claimed = trait if entailed else rng.choice([t for t in TRAITS if t != trait])
    premise = f"All {kinds} are {trait}. {name} is {_article(kind)} {kind}."
    hypothesis = f"{name} is {claimed}."
    thought = (f"Step 1: Every {kind} is {trait}, and {name} is {_article(kind)} {kind}. "
               f"Step 2: So {name} is {trait}. Step 3: The hypothesis says {claimed}. {check(claimed, [trait])}")
    return premise, hypothesis, thought


def negation(rng: random.Random, names: list[str], entailed: bool) -> tuple[str, str, str]:
    name = rng.choice(names)
    (kind, kinds), skill = rng.choice(KINDS), rng.choice(SKILLS)
    claimed = "cannot" if entailed else "can"
    premise = f"No {kinds} can {skill}. {name} is {_article(kind)} {kind}."
    hypothesis = f"{name} {claimed} {skill}."
    thought = (f"Step 1: No {kind} can {skill}, and {name} is {_article(kind)} {kind}. "
               f"Step 2: So {name} cannot {skill}. Step 3: The hypothesis says {claimed}. "
               f"{check(claimed, ['cannot'])}")
    return premise, hypothesis, thought


def membership(rng: random.Random, names: list[str], entailed: bool) -> tuple[str, str, str]:
    members = rng.sample(names, 4)
    group, outsider = rng.choice(GROUPS), members.pop()
    member = rng.choice(members) if entailed else outsider
    premise = f"The {group} has three members: {members[0]}, {members[1]} and {members[2]}."
    hypothesis = f"{member} is in the {group}."
    thought = (f"Step 1: The {group} is {members[0]}, {members[1]} and {members[2]}. "
               f"Step 2: The hypothesis is about {member}. Step 3: {check(member, members)}")
    return premise, hypothesis, thought


def ordering(rng: random.Random, names: list[str], entailed: bool) -> tuple[str, str, str]:
    a, b, c = rng.sample(names, 3)
    rel = rng.choice(RELATIONS)
    premise = f"{a} is {rel} than {b}. {b} is {rel} than {c}."
    first, second = (a, c) if entailed else (c, a)
    hypothesis = f"{first} is {rel} than {second}."
    thought = (f"Step 1: {a} is {rel} than {b}, and {b} is {rel} than {c}. "
               f"Step 2: So {a} is {rel} than {c}. Step 3: The hypothesis starts with {first}. {check(first, [a])}")
    return premise, hypothesis, thought


def conjunction(rng: random.Random, names: list[str], entailed: bool) -> tuple[str, str, str]:
    name = rng.choice(names)
    x, y, z = rng.sample(PLACES, 3)
    place = rng.choice([x, y]) if entailed else z
    premise = f"{name} visited {x} and {y}."
    hypothesis = f"{name} visited {place}."
    thought = (f"Step 1: {name} visited exactly {x} and {y}. "
               f"Step 2: The hypothesis is about {place}. Step 3: {check(place, [x, y])}")
    return premise, hypothesis, thought


FAMILIES: dict[str, Callable[[random.Random, list[str], bool], tuple[str, str, str]]] = {
    "syllogism": syllogism, "negation": negation, "membership": membership,
    "ordering": ordering, "conjunction": conjunction,
}


def split_names(seed: int = 0) -> dict[str, list[str]]:
    """Disjoint name pools per split."""
    names = sorted(NAMES)
    random.Random(seed).shuffle(names)
    out, start = {}, 0
    for split, frac in SPLIT_FRACTIONS.items():
        n = max(4, round(frac * len(names)))
        out[split] = names[start : start + n]
        start += n
    return out


def generate(split: str, n: int, seed: int = 0) -> Iterator[dict]:
    """``n`` balanced rows for ``split`` (train/dev/test); same seed, same rows."""
    if split not in SPLIT_FRACTIONS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLIT_FRACTIONS)}")
    names = split_names(seed)[split]
    rng = random.Random(f"{seed}:{split}")
    families = list(FAMILIES)
    for i in range(n):
        family, entailed = families[i % len(families)], (i // len(families)) % 2 == 0
        premise, hypothesis, thought = FAMILIES[family](rng, names, entailed)
        yield {"id": f"{split}-{i}", "family": family, "premise": premise, "hypothesis": hypothesis,
               "label": int(entailed), "thought_process": thought}


def write_splits(out, sizes: dict[str, int], seed: int = 0, force: bool = False) -> dict:
    """``out/<split>.jsonl`` for each split with rows, and ``out/manifest.json``; split -> path."""
    from datagen.engine import split_files

    return split_files.write_splits(out, sizes, lambda split, n: list(generate(split, n, seed)),
                                    command="cotharness datagen synthetic", options={**sizes, "seed": seed},
                                    force=force)
