"""The 1-5 rating a judge writes after its reasoning, read from the last "Score: N" line.

One rubric (``prompts/rate_pair_system.j2``) and this one reader serve both places a judge rates an
(instruction, response) pair: self-curation of backtranslated data (``cotharness datagen curate``)
and the judge-scored evaluation of a model's answers. ``None`` means unscored (nothing readable, or
a number outside 1-5): the caller retries or records the pair as unscored, never as a default score.
"""

from __future__ import annotations

import re

SCORES = range(1, 6)
_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
# "Score: 4", "**Score:** 4/5", "final score = 4", "Score - four"; anchored to a "score" word so that
# numbers in the reasoning ("step 2", "3 of the 5 points") are never read as the rating.
_SCORE = re.compile(r"score\W{0,4}\s*(?:is\s*)?(?:[:=\-]\s*)?\**\s*([1-9]\d*|one|two|three|four|five)\b"
                    r"(\s*(?:/|out of)\s*(\d+))?", re.IGNORECASE)


def parse_score(text) -> int | None:
    """The rating in ``text``: the last "score" mention with a number, if it is 1-5 (of 5)."""
    if not isinstance(text, str):
        return None
    matches = list(_SCORE.finditer(text[-4000:]))  # the verdict comes last; bounded work on long text
    if not matches:
        return None
    last = matches[-1]
    raw = last.group(1).lower()
    value = _WORDS.get(raw) or int(raw)
    if last.group(3) is not None and int(last.group(3)) != 5:
        return None  # "Score: 7/10" is on another scale: not a rating of ours
    return value if value in SCORES else None
