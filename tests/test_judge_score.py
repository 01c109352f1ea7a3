"""The judge's 1-5 rating is read from its last score line, never guessed."""

import pytest

from harness_tasks.judge_score import parse_score


@pytest.mark.parametrize(("text", "score"), [
    ("The answer is complete.\nScore: 5", 5),
    ("Good but long.\n\n**Score:** 4", 4),
    ("Score: 4/5", 4),
    ("It covers step 2 and 3 of 5 points.\nFinal score = 3", 3),
    ("Score: two", 2),
    ("I first thought Score: 2, but on reflection\nScore: 4", 4),  # the last one is the verdict
    ("score is 1", 1),
])
def test_reads_the_rating(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize("text", [
    "A fine answer, I would give it a 4.",  # no score line
    "Score: 7/10",  # another scale
    "Score: 0",
    "Score: 6",
    "Step 3 of 5: good",
    "",
    None,
])
def test_unscored(text):
    assert parse_score(text) is None
