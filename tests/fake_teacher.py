"""A scripted teacher for the loopback server: answers this project's datagen prompts the way a
model would, so the real SDK and the real pipeline can be tested offline.

- thoughts: label 1 when every word of the hypothesis occurs in the premise, else 0;
- score: 4 for a reasoning written in steps, else 2;
- reflect: an improved reasoning that ends at the correct label it is told.
A premise containing NEVER_JSON is answered in prose every time (the row must end up failed); one
containing WRONG_FIRST is answered with the wrong label the first time in reflect.
"""

from __future__ import annotations

import json
import re

_WORDS = re.compile(r"[a-z0-9']+")
_PAIR = re.compile(r"Premise: (.*)\nHypothesis: (.*)")
_GOLD = re.compile(r'The correct predicted_label is (\S+?) \(')
_seen: dict[str, int] = {}


def rule_label(premise: str, hypothesis: str) -> int:
    return int(set(_WORDS.findall(hypothesis.lower())) <= set(_WORDS.findall(premise.lower())))


def pairs(n: int) -> list[dict]:
    """``n`` NLI pairs this teacher answers, half of them entailed (its rule decides the gold label)."""
    rows = []
    for i in range(n):
        premise = f"Ana {i} walked to the station and bought bread {i}"
        hypothesis = f"Ana {i} bought bread" if i % 2 else f"Ana {i} bought milk"
        rows.append({"id": f"r{i}", "premise": premise, "hypothesis": hypothesis,
                     "label": rule_label(premise, hypothesis)})
    return rows


def respond(body: dict) -> str:
    messages = body["messages"]
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    premise, hypothesis = _PAIR.search(first_user).groups()
    if "NEVER_JSON" in premise:
        return "I would rather explain this in plain words: the premise does not say."
    label = rule_label(premise, hypothesis)
    thought = (f"Step 1: The premise says: {premise} Step 2: The hypothesis claims: {hypothesis} "
               f"Step 3: {'Every' if label else 'Not every'} part of the hypothesis is in the premise.")
    if '"error_analysis"' in system:
        gold = json.loads(_GOLD.search(first_user).group(1))
        _seen[first_user] = _seen.get(first_user, 0) + 1
        if "WRONG_FIRST" in premise and _seen[first_user] == 1:
            gold = 1 - gold
        return json.dumps({"error_analysis": "The first answer read more into the premise than it says.",
                           "improved_thought_process": thought.replace("Step 3:", "Step 3: On reflection,"),
                           "predicted_label": gold})
    if '"score"' in system:
        answer = first_user.split("Answer to rate:\n", 1)[1]
        return json.dumps({"analysis": "Clear steps." if "Step 1" in answer else "No steps.",
                           "score": 4 if "Step 1" in answer else 2, "improved_thought_process": thought,
                           "predicted_label": label})
    return json.dumps({"thought_process": thought, "predicted_label": label})
