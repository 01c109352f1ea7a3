"""The puzzle generator's gold labels, checked by a second solver that shares nothing with it.

The checker here reads the puzzle TEXT: each sentence is parsed with its own patterns into a Python
predicate, every world (orders, knight/knave assignments, house arrangements) is enumerated, and the
label follows from the worlds that satisfy every clue. A wrong label, a clue that says something else
than the generator meant, or a sentence the checker cannot read fails the test.
"""

import itertools
import json
import re
from collections import Counter

import pytest
from typer.testing import CliRunner

from cotharness.cli import app
from datagen.synthetic.puzzles import balance, generate
from harness_tasks.puzzte.utils import SAMPLE_FILE

SENTENCE = re.compile(r'[^."]+"[^"]*"|[^."]+\.')  # a quoted claim keeps its own period


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE.findall(text)]


def people(listing: str) -> list[str]:
    head, last = listing.rsplit(" and ", 1)
    return head.split(", ") + [last]


def decide(worlds: list, clues: list, statement) -> tuple[str, int]:
    """(label, how many worlds fit) by brute force."""
    fitting = [w for w in worlds if all(c(w) for c in clues)]
    assert fitting, "no world fits the clues"
    truths = {statement(w) for w in fitting}
    label = {frozenset({True}): "entailment", frozenset({False}): "contradiction"}.get(frozenset(truths), "ambiguous")
    return label, len(fitting)


def one_of(patterns, sentence: str):
    """The predicate of the one pattern that reads ``sentence`` whole."""
    found = [(make, m) for pattern, make in patterns if (m := re.fullmatch(pattern, sentence, re.IGNORECASE))]
    assert len(found) == 1, f"{len(found)} readings of {sentence!r}"
    make, match = found[0]
    return make(*match.groups())


# --- comparison: a world maps each person to a rank, 0 = tallest / oldest / first / most books ----

MORE = r"is taller than|is older than|finished ahead of|owns more books than"
LESS = r"is shorter than|is younger than|finished behind|owns fewer books than"
FIRST = r"is the tallest|is the oldest|finished first|owns the most books"
LAST = r"is the shortest|is the youngest|finished last|owns the fewest books"
NOT_FIRST = r"is not the tallest|is not the oldest|did not finish first|does not own the most books"
NOT_LAST = r"is not the shortest|is not the youngest|did not finish last|does not own the fewest books"
INTRO = (r"(.+) (?:are all of different heights|were all born in different years|"
         r"ran a race in which no two of them finished together|each own a different number of books)\.")


def comparison(premise: str, hypothesis: str):
    first, *rest = sentences(premise)
    names = people(re.fullmatch(INTRO, first).group(1))
    last = len(names) - 1
    patterns = [
        (rf"(\w+) (?:{MORE}) (\w+)\.", lambda x, y: lambda r: r[x] < r[y]),
        (rf"(\w+) (?:{LESS}) (\w+)\.", lambda x, y: lambda r: r[x] > r[y]),
        (rf"(\w+) (?:{FIRST})\.", lambda x: lambda r: r[x] == 0),
        (rf"(\w+) (?:{LAST})\.", lambda x: lambda r: r[x] == last),
        (rf"(\w+) (?:{NOT_FIRST})\.", lambda x: lambda r: r[x] != 0),
        (rf"(\w+) (?:{NOT_LAST})\.", lambda x: lambda r: r[x] != last),
    ]
    worlds = [dict(zip(names, ranks, strict=True)) for ranks in itertools.permutations(range(len(names)))]
    return decide(worlds, [one_of(patterns, s) for s in rest], one_of(patterns, hypothesis))


# --- knights and knaves: a world maps each islander to True (knight) or False (knave) -------------

CLAIMS = [
    (r"(\w+) is a knight", lambda x: lambda k: k[x]),
    (r"(\w+) is a knave", lambda x: lambda k: not k[x]),
    (r"(\w+) and (\w+) are of the same kind", lambda x, y: lambda k: k[x] == k[y]),
    (r"(\w+) and (\w+) are of different kinds", lambda x, y: lambda k: k[x] != k[y]),
    (r"(\w+) and (\w+) are both knights", lambda x, y: lambda k: k[x] and k[y]),
    (r"(\w+) and (\w+) are both knaves", lambda x, y: lambda k: not k[x] and not k[y]),
    (r"at least one of (\w+) and (\w+) is a knave", lambda x, y: lambda k: not k[x] or not k[y]),
    (r"at least one of (\w+) and (\w+) is a knight", lambda x, y: lambda k: k[x] or k[y]),
    (r"exactly one of us is a knight", lambda: lambda k: sum(k.values()) == 1),
    (r"all of us are knaves", lambda: lambda k: not any(k.values())),
]


def knights_knaves(premise: str, hypothesis: str):
    rule, intro, *claims = sentences(premise)
    assert rule == "On this island every inhabitant is either a knight, who always tells the truth, or a knave, who always lies."
    names = people(re.fullmatch(r"(.+) live here\.", intro).group(1))
    clues = []
    for sentence in claims:
        speaker, said = re.fullmatch(r'(\w+) says, "(.+)\."', sentence).groups()
        said = re.sub(r"\b(?:I|me)\b", speaker, said)  # the speaker's own words about themself
        claim = one_of(CLAIMS, said)
        clues.append(lambda k, s=speaker, c=claim: k[s] == c(k))  # knights say true things, knaves false
    worlds = [dict(zip(names, kinds, strict=True)) for kinds in itertools.product([True, False], repeat=len(names))]
    return decide(worlds, clues, one_of(CLAIMS[:4], hypothesis.rstrip(".")))


# --- zebra: a world maps every value (name, colour, pet, drink) to its house, 0..2 -----------------

def _subject(phrase: str) -> str:
    """The value a person phrase names: "Ada", "the person in the red house", "the owner of the cat",
    "the tea drinker", or (positions only) "the cat"."""
    for pattern in (r"the person in the (\w+) house", r"the owner of the (\w+)", r"the (\w+) drinker", r"the (\w+)",
                    r"([A-Z]\w+)"):
        if m := re.fullmatch(pattern, phrase, re.IGNORECASE):
            return m.group(1)
    raise AssertionError(f"unreadable person {phrase!r}")


def _place(phrase: str) -> str:
    """The value a house phrase names: "Ada's house", "the red house", "the house of the cat", "the tea drinker's house"."""
    for pattern in (r"(\w+)'s house", r"the house of the (\w+)", r"the (\w+) drinker's house", r"the (\w+) house"):
        if m := re.fullmatch(pattern, phrase, re.IGNORECASE):
            return m.group(1)
    raise AssertionError(f"unreadable house {phrase!r}")


def zebra_sentence(sentence: str):
    s = sentence.rstrip(".")
    rules = [
        (r"(.+) is directly left of (.+)", lambda a, b: lambda h: h[_place(a)] + 1 == h[_place(b)]),
        (r"(.+) is next to (.+)", lambda a, b: lambda h: abs(h[_place(a)] - h[_place(b)]) == 1),
        (r"(.+) is house (\d)", lambda a, i: lambda h: h[_place(a)] == int(i) - 1),
        (r"(.+) is not house (\d)", lambda a, i: lambda h: h[_place(a)] != int(i) - 1),
        (r"(.+) lives in house (\d)", lambda a, i: lambda h: h[_subject(a)] == int(i) - 1),
        (r"(.+) does not live in house (\d)", lambda a, i: lambda h: h[_subject(a)] != int(i) - 1),
        (r"(.+) lives in the (\w+) house", lambda a, v: lambda h: h[_subject(a)] == h[v]),
        (r"(.+) does not live in the (\w+) house", lambda a, v: lambda h: h[_subject(a)] != h[v]),
        (r"(.+) keeps the (\w+)", lambda a, v: lambda h: h[_subject(a)] == h[v]),
        (r"(.+) does not keep the (\w+)", lambda a, v: lambda h: h[_subject(a)] != h[v]),
        (r"(.+) drinks (\w+)", lambda a, v: lambda h: h[_subject(a)] == h[v]),
        (r"(.+) does not drink (\w+)", lambda a, v: lambda h: h[_subject(a)] != h[v]),
    ]
    return one_of(rules, s)


def zebra(premise: str, hypothesis: str):
    row, intro, *clues = sentences(premise)
    assert row == "Three houses stand in a row, numbered 1 to 3 from left to right."
    names, rest = re.fullmatch(r"(.+) live in them, one to a house; (.+)\.", intro).groups()
    attributes = re.fullmatch(r"(?:(?:^| and )each (?:house has a different colour|person keeps a different pet|"
                              r"person drinks something different) \((\w+), (\w+) or (\w+)\))+", rest)
    assert attributes, rest
    groups = [people(names)] + [list(g) for g in re.findall(r"\((\w+), (\w+) or (\w+)\)", rest)]
    worlds = []
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        worlds.append({value: house for perm in perms for house, value in enumerate(perm)})
    return decide(worlds, [zebra_sentence(s) for s in clues], zebra_sentence(hypothesis))


CHECKERS = {"comparison": comparison, "knights_knaves": knights_knaves, "zebra": zebra}


def fitting_in_thought(thought: str) -> int:
    m = re.search(r"Only one (?:order|case|arrangement) fits|(\d+) (?:orders|cases|arrangements) fit", thought)
    assert m, thought
    return 1 if m.group(1) is None else int(m.group(1))


CONCLUSION = {"entailment": "So the statement follows from the clues.",
              "contradiction": "So the clues rule the statement out.",
              "ambiguous": "So the clues do not settle the statement either way."}


@pytest.mark.parametrize("split,n", [("train", 450), ("dev", 90)])
def test_every_generated_label_is_confirmed_by_an_independent_solver(split, n):
    for row in generate(split, n, seed=3):
        label, fits = CHECKERS[row["family"]](row["premise"], row["hypothesis"])
        assert label == row["label"], row
        # the thought names the worlds the solver kept and ends in the verdict
        assert fitting_in_thought(row["thought_process"]) == fits, row
        assert row["thought_process"].endswith(CONCLUSION[label])


def test_bundled_sample_labels_are_confirmed():
    rows = [json.loads(line) for line in SAMPLE_FILE.read_text().splitlines()]
    assert len(rows) == 300
    for row in rows:
        assert CHECKERS[row["family"]](row["premise"], row["hypothesis"])[0] == row["label"], row


KK_RULE = "On this island every inhabitant is either a knight, who always tells the truth, or a knave, who always lies."
ZEBRA_ROW = "Three houses stand in a row, numbered 1 to 3 from left to right."
# Puzzles solved by hand (worked out on paper), in the generator's phrasing.
HAND = [
    ("comparison", "Ada, Bo and Cy are all of different heights. Ada is taller than Bo. Bo is taller than Cy.",
     "Ada is the tallest.", "entailment", 1),
    ("comparison", "Ada, Bo and Cy are all of different heights. Ada is taller than Bo. Bo is taller than Cy.",
     "Cy is taller than Ada.", "contradiction", 1),
    ("comparison", "Ada, Bo and Cy ran a race in which no two of them finished together. Ada finished ahead of Bo.",
     "Cy finished first.", "ambiguous", 3),
    # A: "B is a knave"; B: "A and I are the same kind" -> only A knight, B knave survives
    ("knights_knaves", f'{KK_RULE} Ada and Bo live here. Ada says, "Bo is a knave." Bo says, "Ada and I are of '
                       'the same kind."', "Ada is a knight.", "entailment", 1),
    ("knights_knaves", f'{KK_RULE} Ada and Bo live here. Ada says, "Bo and I are both knaves."',
     "Bo is a knave.", "contradiction", 1),  # Smullyan's classic: the speaker is a knave, the other a knight
    ("knights_knaves", f'{KK_RULE} Ada and Bo live here. Ada says, "Bo is a knight."', "Ada is a knight.",
     "ambiguous", 2),  # both knights or both knaves
    ("knights_knaves", f'{KK_RULE} Ada and Bo live here. Ada says, "Bo is a knight."',
     "Ada and Bo are of the same kind.", "entailment", 2),
    # Ada in 1, Bo in 3, so Cy in 2; red is left of Bo's house: Cy's house is red; Ada/Bo share green/blue
    # (2 ways); with pets: the dog is in the green house, the cat and the fish go either way (2 x 2 worlds)
    ("zebra", f"{ZEBRA_ROW} Ada, Bo and Cy live in them, one to a house; each house has a different colour (red, "
              "green or blue). Ada lives in house 1. The red house is directly left of Bo's house. Cy does not "
              "live in the blue house. Bo lives in house 3.", "Cy lives in the red house.", "entailment", 2),
    ("zebra", f"{ZEBRA_ROW} Ada, Bo and Cy live in them, one to a house; each house has a different colour (red, "
              "green or blue). Ada lives in house 1. The red house is directly left of Bo's house. Cy does not "
              "live in the blue house. Bo lives in house 3.", "Ada lives in the red house.", "contradiction", 2),
    ("zebra", f"{ZEBRA_ROW} Ada, Bo and Cy live in them, one to a house; each house has a different colour (red, "
              "green or blue) and each person keeps a different pet (cat, dog or fish). Ada lives in house 1. "
              "The red house is directly left of Bo's house. Cy does not live in the blue house. Bo lives in "
              "house 3. The owner of the dog lives in the green house.", "Bo keeps the dog.", "ambiguous", 4),
]


@pytest.mark.parametrize("family,premise,hypothesis,label,fits", HAND)
def test_checker_on_hand_solved_puzzles(family, premise, hypothesis, label, fits):
    assert CHECKERS[family](premise, hypothesis) == (label, fits)


def test_splits_share_no_puzzle_text():
    rows = {split: list(generate(split, n)) for split, n in (("train", 900), ("dev", 150), ("test", 300))}
    premises = {split: {r["premise"] for r in rs} for split, rs in rows.items()}
    for a, b in itertools.combinations(premises, 2):
        assert not premises[a] & premises[b], (a, b)
    for split, rs in rows.items():  # and no puzzle twice within a split
        assert len({(r["premise"], r["hypothesis"]) for r in rs}) == len(rs), split


def test_same_seed_same_rows():
    assert list(generate("test", 60, seed=5)) == list(generate("test", 60, seed=5))
    assert list(generate("test", 60, seed=5)) != list(generate("test", 60, seed=6))
    assert list(generate("test", 20, seed=5)) == list(generate("test", 60, seed=5))[:20]  # longer runs extend
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        next(generate("validation", 1))


def test_labels_are_balanced_in_every_family():
    rows = list(generate("train", 900))
    counts = balance(rows)
    assert counts == {family: {"entailment": 100, "contradiction": 100, "ambiguous": 100}
                      for family in ("comparison", "knights_knaves", "zebra")}
    # the sizes vary within a family: 3-5 people, 2-3 islanders, 1-2 attributes besides names
    sizes = Counter((r["family"], len(re.findall(r"\b[A-Z][a-z]+\b", r["premise"].split(".")[0]))) for r in rows)
    assert {n for f, n in sizes if f == "comparison"} == {3, 4, 5}


def test_bundled_sample_is_what_the_command_writes(tmp_path):
    """The shipped sample is the output of `cotharness datagen puzzles` (no hand edits, no drift)."""
    result = CliRunner().invoke(app, ["datagen", "puzzles", "--train", "0", "--dev", "0", "--test", "300",
                                      "--seed", "0", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "test.jsonl").read_bytes() == SAMPLE_FILE.read_bytes()
    assert "knights_knaves: entailment 34, contradiction 33, ambiguous 33" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "test.jsonl"]  # no split of 0 rows


def test_command_writes_a_folder_with_a_manifest_and_refuses_to_replace_it(tmp_path):
    from harness_tasks.manifest import sha256_file

    out = tmp_path / "puzzte"
    args = ["datagen", "puzzles", "--train", "6", "--dev", "9", "--test", "0", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "manifest.json").read_text())
    assert info["options"] == {"train": 6, "dev": 9, "test": 0, "seed": 0}
    assert info["outputs"]["dev.jsonl"]["sha256"] == sha256_file(out / "dev.jsonl")
    assert info["outputs"]["dev.jsonl"]["rows"] == 9 and info["outputs"]["train.jsonl"]["rows"] == 6
    assert info["outputs"]["dev.jsonl"]["balance"]["zebra"] == {"entailment": 1, "contradiction": 1, "ambiguous": 1}
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "pass --force" in again.output
    # --force replaces; a split now given 0 rows is removed, so every file is one the manifest names
    forced = CliRunner().invoke(app, ["datagen", "puzzles", "--train", "6", "--dev", "0", "--test", "0", "--out",
                                      str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train.jsonl"]
    old = CliRunner().invoke(app, ["datagen", "puzzles", "--split", "dev", "--n", "9", "--out", str(tmp_path / "x")])
    assert old.exit_code == 2 and "--train N --dev N --test N" in old.output
