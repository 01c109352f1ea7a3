"""Logic puzzles with computed gold labels and step-by-step thoughts: the ``puzzte`` task's own data.

Three families, after the puzzle types of Szomiu & Groza's puzzte dataset (arXiv 2112.05742):
comparison (3-5 people ordered by height, age, a race or books owned), knights and knaves (2-3
islanders' claims) and a zebra grid (three houses, names plus 1-2 more attributes).

A puzzle is a hidden world and clues that are true in it, so at least one world fits. Clues are
added one at a time, each ruling out a world still possible (no idle clue), until few worlds fit.
The gold label is computed by brute force over every world: ``entailment`` if the statement holds
in every world that fits the clues, ``contradiction`` if in none, ``ambiguous`` otherwise. A
statement that merely restates a clue or its negation is never asked. Families and labels take
turns row by row, so both are balanced. People's names come from the NLI generator's disjoint
per-split pools, so no puzzle text is shared between train, dev and test. The thought lists what
the solver did: the worlds left (knights and knaves: every case and the claim that rules it out),
the statement checked in each, the verdict.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from datagen.synthetic.nli import SPLIT_FRACTIONS, split_names

LABELS = ("entailment", "contradiction", "ambiguous")
ATTEMPTS = 500  # draws per row; a label a family can reach comes within a few draws
MAX_FITTING = 4  # clues are added until at most this many worlds fit: the thought lists them
LETTERS = "abcdefgh"


@dataclass(frozen=True)
class Fact:
    """A clue or a statement: a sentence of the puzzle and whether it holds in a world."""

    text: str
    holds: Callable
    group: object = None
    """at most one clue per group (knights and knaves: one claim per islander)"""
    broken: Callable | None = None
    """why a world breaks this clue, for the thought (knights and knaves)"""


@dataclass
class Draw:
    """One family's material for a puzzle: worlds, the hidden one, candidate clues and statements."""

    intro: str
    worlds: list
    hidden: object
    clues: list[Fact]
    statements: list[Fact]
    method: str  # the thought's first step: how the worlds are searched
    noun: str  # a world, in words: "order", "case", "arrangement"
    show: Callable  # a world in words
    legend: str = ""  # how to read show()
    min_clues: int = 2
    max_fitting: int = MAX_FITTING
    every_case: bool = False  # the thought checks each world in the open (few worlds)


def verdict(truths: Sequence[bool]) -> str:
    """The label of a statement from its truth in each world that fits the clues."""
    if all(truths):
        return "entailment"
    return "ambiguous" if any(truths) else "contradiction"


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


# --- comparison: an order of 3-5 people ---------------------------------------------------------

@dataclass(frozen=True)
class Dimension:
    intro: str
    more: str
    less: str
    top: str
    bottom: str
    not_top: str
    not_bottom: str
    order: str


DIMENSIONS = (
    Dimension("{names} are all of different heights.", "{x} is taller than {y}", "{x} is shorter than {y}",
              "{x} is the tallest", "{x} is the shortest", "{x} is not the tallest", "{x} is not the shortest",
              "tallest to shortest"),
    Dimension("{names} were all born in different years.", "{x} is older than {y}", "{x} is younger than {y}",
              "{x} is the oldest", "{x} is the youngest", "{x} is not the oldest", "{x} is not the youngest",
              "oldest to youngest"),
    Dimension("{names} ran a race in which no two of them finished together.", "{x} finished ahead of {y}",
              "{x} finished behind {y}", "{x} finished first", "{x} finished last", "{x} did not finish first",
              "{x} did not finish last", "first to last"),
    Dimension("{names} each own a different number of books.", "{x} owns more books than {y}",
              "{x} owns fewer books than {y}", "{x} owns the most books", "{x} owns the fewest books",
              "{x} does not own the most books", "{x} does not own the fewest books", "most books to fewest"),
)


def comparison(rng: random.Random, names: list[str]) -> Draw:
    """Worlds: orders of the people, first = most (tallest, oldest, first across the line)."""
    people, dim = rng.sample(names, rng.choice([3, 4, 5])), rng.choice(DIMENSIONS)
    last = len(people) - 1

    def pair(x, y):  # "x before y", written either way round
        text = dim.more.format(x=x, y=y) if rng.random() < 0.5 else dim.less.format(x=y, y=x)
        return Fact(_cap(text) + ".", lambda w: w.index(x) < w.index(y))

    pairs = [pair(x, y) for x, y in itertools.permutations(people, 2)]
    ends = [Fact(dim.top.format(x=x) + ".", lambda w, x=x: w[0] == x) for x in people]
    ends += [Fact(dim.bottom.format(x=x) + ".", lambda w, x=x: w[last] == x) for x in people]
    not_ends = [Fact(dim.not_top.format(x=x) + ".", lambda w, x=x: w[0] != x) for x in people]
    not_ends += [Fact(dim.not_bottom.format(x=x) + ".", lambda w, x=x: w[last] != x) for x in people]
    worlds = list(itertools.permutations(people))
    return Draw(intro=dim.intro.format(names=_names(people)), worlds=worlds, hidden=rng.choice(worlds),
                clues=pairs + ends + not_ends, statements=pairs + ends,
                method=f"Each of the {len(worlds)} orders of the {len(people)} people, {dim.order}, is possible "
                       "unless a clue rules it out; I check every order against every clue.",
                noun="order", show=", ".join, legend=dim.order)


# --- knights and knaves: 2-3 islanders, a world says who is a knight -----------------------------

def _claims(speaker: str, people: list[str]) -> list[tuple[str, Callable]]:
    """What ``speaker`` may say: (words, truth over {name: is_knight}). Never about only themself:
    "I am a knight" rules nothing out and "I am a knave" no islander can say."""
    out = []
    others = [p for p in people if p != speaker]
    for x in others:
        out += [(f"{x} is a knight", lambda k, x=x: k[x]), (f"{x} is a knave", lambda k, x=x: not k[x]),
                (f"{x} and I are of the same kind", lambda k, x=x: k[x] == k[speaker]),
                (f"{x} and I are of different kinds", lambda k, x=x: k[x] != k[speaker]),
                (f"{x} and I are both knights", lambda k, x=x: k[x] and k[speaker]),
                (f"{x} and I are both knaves", lambda k, x=x: not k[x] and not k[speaker]),
                (f"at least one of {x} and me is a knave", lambda k, x=x: not (k[x] and k[speaker]))]
    for x, y in itertools.combinations(others, 2):
        out += [(f"{x} and {y} are of the same kind", lambda k, x=x, y=y: k[x] == k[y]),
                (f"{x} and {y} are of different kinds", lambda k, x=x, y=y: k[x] != k[y]),
                (f"{x} and {y} are both knights", lambda k, x=x, y=y: k[x] and k[y]),
                (f"at least one of {x} and {y} is a knave", lambda k, x=x, y=y: not (k[x] and k[y])),
                (f"at least one of {x} and {y} is a knight", lambda k, x=x, y=y: k[x] or k[y])]
    out += [("exactly one of us is a knight", lambda k: sum(k.values()) == 1),
            ("all of us are knaves", lambda k: not any(k.values()))]
    return out


def knights_knaves(rng: random.Random, names: list[str]) -> Draw:
    people = rng.sample(names, rng.choice([2, 3]))
    worlds = [dict(zip(people, kinds, strict=True)) for kinds in itertools.product([True, False], repeat=len(people))]

    def said(s, words, truth):
        return Fact(f'{s} says, "{_cap(words)}."', lambda k: k[s] == truth(k), group=s,
                    broken=lambda k: f"{s} would be a {'knight' if k[s] else 'knave'} making a "
                                     f"{'false' if k[s] else 'true'} claim")

    clues = [said(s, words, truth) for s in people for words, truth in _claims(s, people)]
    statements = [Fact(f"{x} is a knight.", lambda k, x=x: k[x]) for x in people]
    statements += [Fact(f"{x} is a knave.", lambda k, x=x: not k[x]) for x in people]
    for x, y in itertools.combinations(people, 2):
        statements += [Fact(f"{x} and {y} are of the same kind.", lambda k, x=x, y=y: k[x] == k[y]),
                       Fact(f"{x} and {y} are of different kinds.", lambda k, x=x, y=y: k[x] != k[y])]
    return Draw(
        intro=f"On this island every inhabitant is either a knight, who always tells the truth, or a knave, "
              f"who always lies. {_names(people)} live here.",
        worlds=worlds, hidden=rng.choice(worlds), clues=clues, statements=statements,
        method="A knight's claim is true and a knave's claim is false; I check every case.",
        noun="case", show=lambda k: ", ".join(f"{p} {'knight' if kind else 'knave'}" for p, kind in k.items()),
        min_clues=rng.randint(1, len(people)), max_fitting=len(worlds), every_case=True)


# --- zebra: three houses, names plus 1-2 attributes ----------------------------------------------

@dataclass(frozen=True)
class Attribute:
    values: tuple[str, ...]
    intro: str  # "{values}": the three in play
    who: str  # the person with value v
    has: str  # ... has value v
    has_not: str
    place: str  # the house of value v
    at: str  # value v is in house i
    not_at: str


NAME = Attribute((), "", "{v}", "", "", "{v}'s house", "{v} lives in house {i}", "{v} does not live in house {i}")
ATTRIBUTES = {
    "colour": Attribute(("red", "green", "blue", "white", "yellow"), "each house has a different colour ({values})",
                        "the person in the {v} house", "lives in the {v} house", "does not live in the {v} house",
                        "the {v} house", "the {v} house is house {i}", "the {v} house is not house {i}"),
    "pet": Attribute(("cat", "dog", "fish", "parrot", "rabbit"), "each person keeps a different pet ({values})",
                     "the owner of the {v}", "keeps the {v}", "does not keep the {v}", "the house of the {v}",
                     "the {v} lives in house {i}", "the {v} does not live in house {i}"),
    "drink": Attribute(("tea", "coffee", "milk", "juice", "water"), "each person drinks something different ({values})",
                       "the {v} drinker", "drinks {v}", "does not drink {v}", "the {v} drinker's house",
                       "the {v} drinker lives in house {i}", "the {v} drinker does not live in house {i}"),
}


def zebra(rng: random.Random, names: list[str]) -> Draw:
    """Worlds: for each attribute, which value is in house 1, 2, 3."""
    extra = rng.sample(sorted(ATTRIBUTES), rng.choice([1, 2]))
    kinds = [NAME, *(ATTRIBUTES[a] for a in extra)]
    values = [rng.sample(names, 3)] + [sorted(rng.sample(k.values, 3), key=k.values.index) for k in kinds[1:]]
    items = [(a, v) for a, vs in enumerate(values) for v in vs]  # (attribute index, value)

    def house(w, item):
        return w[item[0]].index(item[1])

    def fill(template, item, **kw):
        return template.format(v=item[1], **kw)

    clues, statements = [], []
    for p, q in itertools.combinations(items, 2):
        if p[0] != q[0]:  # the earlier attribute is the subject: "Ada keeps the cat"
            same = Fact(_cap(f"{fill(kinds[p[0]].who, p)} {fill(kinds[q[0]].has, q)}."),
                        lambda w, p=p, q=q: house(w, p) == house(w, q))
            clues += [same, Fact(_cap(f"{fill(kinds[p[0]].who, p)} {fill(kinds[q[0]].has_not, q)}."),
                                 lambda w, p=p, q=q: house(w, p) != house(w, q))]
            statements.append(same)
        clues.append(Fact(_cap(f"{fill(kinds[p[0]].place, p)} is next to {fill(kinds[q[0]].place, q)}."),
                          lambda w, p=p, q=q: abs(house(w, p) - house(w, q)) == 1))
    for p, q in itertools.permutations(items, 2):
        clues.append(Fact(_cap(f"{fill(kinds[p[0]].place, p)} is directly left of {fill(kinds[q[0]].place, q)}."),
                          lambda w, p=p, q=q: house(w, p) + 1 == house(w, q)))
    for item in items:
        for i in range(3):
            at = Fact(_cap(fill(kinds[item[0]].at, item, i=i + 1)) + ".", lambda w, item=item, i=i: house(w, item) == i)
            clues += [at, Fact(_cap(fill(kinds[item[0]].not_at, item, i=i + 1)) + ".",
                               lambda w, item=item, i=i: house(w, item) != i)]
            statements.append(at)
    worlds = list(itertools.product(*(itertools.permutations(vs) for vs in values)))
    described = " and ".join(k.intro.format(values=f"{vs[0]}, {vs[1]} or {vs[2]}")
                             for k, vs in zip(kinds[1:], values[1:], strict=True))
    legend = ["name", *extra]
    return Draw(
        intro=f"Three houses stand in a row, numbered 1 to 3 from left to right. {_names(values[0])} live in them, "
              f"one to a house; {described}.",
        worlds=worlds, hidden=rng.choice(worlds), clues=clues, statements=statements,
        method=f"Each of the {len(worlds)} ways to place the {_names([a + 's' for a in legend])} in the three "
               "houses is possible unless a clue rules it out; I check every way against every clue.",
        noun="arrangement", legend=f"houses 1 to 3, each as {'/'.join(legend)}",
        show=lambda w: ", ".join("/".join(w[a][h] for a in range(len(values))) for h in range(3)))


FAMILIES: dict[str, Callable[[random.Random, list[str]], Draw]] = {
    "comparison": comparison, "knights_knaves": knights_knaves, "zebra": zebra}


# --- posing a puzzle and writing the thought ------------------------------------------------------

def _table(fact: Fact, worlds: list) -> tuple[bool, ...]:
    return tuple(bool(fact.holds(w)) for w in worlds)


def pose(rng: random.Random, draw: Draw, label: str) -> tuple[list[Fact], list, Fact] | None:
    """(clues, the worlds that fit them, a statement with gold ``label``), or None for this draw."""
    pool = [c for c in draw.clues if c.holds(draw.hidden)]
    rng.shuffle(pool)
    clues, fitting, groups = [], draw.worlds, set()
    for clue in pool:
        if len(clues) >= draw.min_clues and len(fitting) <= draw.max_fitting:
            break
        if clue.group is not None and clue.group in groups:
            continue
        narrowed = [w for w in fitting if clue.holds(w)]
        if len(narrowed) < len(fitting):
            clues.append(clue)
            fitting, groups = narrowed, groups | {clue.group}
    if len(fitting) > draw.max_fitting or len(clues) < draw.min_clues:
        return None
    said = {_table(c, draw.worlds) for c in clues}
    said |= {tuple(not t for t in table) for table in said}
    options = [s for s in draw.statements
               if verdict([s.holds(w) for w in fitting]) == label and _table(s, draw.worlds) not in said]
    return (clues, fitting, rng.choice(options)) if options else None


def _letters(indices) -> str:
    marks = [f"({LETTERS[i]})" for i in indices]
    return marks[0] if len(marks) == 1 else ", ".join(marks[:-1]) + " and " + marks[-1]


def thought(draw: Draw, clues: list[Fact], fitting: list, statement: Fact, label: str) -> str:
    steps = [draw.method]
    if draw.every_case:
        cases = []
        for w in draw.worlds:
            bad = next((c for c in clues if not c.holds(w)), None)
            cases.append(f"{draw.show(w)}: " + ("fits." if bad is None else f"no, {bad.broken(w)}."))
        steps.append(" ".join(cases))
    legend = f" ({draw.legend})" if draw.legend else ""
    if len(fitting) == 1:
        steps.append(f"Only one {draw.noun} fits every clue{legend}: {draw.show(fitting[0])}.")
    else:
        listed = "; ".join(f"({LETTERS[i]}) {draw.show(w)}" for i, w in enumerate(fitting))
        steps.append(f"{len(fitting)} {draw.noun}s fit every clue{legend}: {listed}.")
    said = f'"{statement.text.rstrip(".")}"'
    truths = [statement.holds(w) for w in fitting]
    if len(fitting) == 1:
        steps.append(f"In it, the statement {said} is {'true' if truths[0] else 'false'}.")
    elif label == "ambiguous":
        steps.append(f"The statement {said} is true in {_letters(i for i, t in enumerate(truths) if t)} "
                     f"but false in {_letters(i for i, t in enumerate(truths) if not t)}.")
    else:
        steps.append(f"The statement {said} is {'true' if truths[0] else 'false'} in all of them.")
    steps.append({"entailment": "So the statement follows from the clues.",
                  "contradiction": "So the clues rule the statement out.",
                  "ambiguous": "So the clues do not settle the statement either way."}[label])
    return " ".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))


def puzzle(rng: random.Random, family: str, names: list[str], label: str, seen: set | None = None) -> dict:
    """One row ``{family, premise, hypothesis, label, thought_process}`` whose gold label is ``label``;
    ``seen`` holds the (premise, hypothesis) pairs already made, which are not made again."""
    seen = set() if seen is None else seen
    for _ in range(ATTEMPTS):
        draw = FAMILIES[family](rng, names)
        posed = pose(rng, draw, label)
        if posed is None:
            continue
        clues, fitting, statement = posed
        premise = " ".join([draw.intro, *(c.text for c in clues)])
        if (premise, statement.text) in seen:
            continue
        seen.add((premise, statement.text))
        return {"family": family, "premise": premise, "hypothesis": statement.text, "label": label,
                "thought_process": thought(draw, clues, fitting, statement, label)}
    raise RuntimeError(f"no {label} {family} puzzle in {ATTEMPTS} draws")


def generate(split: str, n: int, seed: int = 0) -> Iterator[dict]:
    """``n`` rows of ``split`` (train/dev/test); families and labels take turns; same seed, same rows,
    and the first rows of a longer run are the rows of a shorter one."""
    if split not in SPLIT_FRACTIONS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLIT_FRACTIONS)}")
    names = split_names(seed)[split]
    rng, seen, families = random.Random(f"puzzles:{seed}:{split}"), set(), list(FAMILIES)
    for i in range(n):
        family, label = families[i % len(families)], LABELS[(i // len(families)) % len(LABELS)]
        yield {"id": f"{split}-{i}", **puzzle(rng, family, names, label, seen)}


def balance(rows: list[dict]) -> dict[str, dict[str, int]]:
    """family -> label -> rows."""
    counts = Counter((r["family"], r["label"]) for r in rows)
    return {f: {lb: counts[f, lb] for lb in LABELS} for f in sorted({r["family"] for r in rows})}


def write(out: Path, sizes: dict[str, int], seed: int = 0, force: bool = False) -> dict[str, dict]:
    """``out/<split>.jsonl`` for each split with rows, and ``out/manifest.json`` (options, balance,
    versions); returns split -> the balance of its rows."""
    from datagen.engine.split_files import write_splits

    balances: dict[str, dict] = {}

    def report(rows: list[dict]) -> dict:
        balances[rows[0]["id"].split("-")[0]] = counts = balance(rows)  # ids are "<split>-<i>"
        return {"balance": counts}

    write_splits(out, sizes, lambda split, n: list(generate(split, n, seed)), command="cotharness datagen puzzles",
                 options={**sizes, "seed": seed}, force=force, report=report)
    return balances
