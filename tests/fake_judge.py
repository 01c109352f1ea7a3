"""A scripted pair judge for the loopback server: answers the rubric (prompts/rate_pair_*.j2) the way
a judge model would, by a rule the tests can recompute.

- score: by the answer's length, ``1 + words // 10`` capped at 5 (an empty answer scores 1);
- an instruction or answer containing NO_SCORE_FIRST gets a reply without a score line the first
  time; asked again (the conversation continued) it answers with the score;
- one containing UNSCORABLE never gets a score (a number outside 1-5 once, prose otherwise), so the
  pair ends up unscored.
"""

from __future__ import annotations

_RESPONSE = "\n\nResponse:\n"


def rule_score(answer: str) -> int:
    return min(5, 1 + len(answer.split()) // 10)


def pair(body: dict) -> tuple[str, str]:
    """(instruction, answer) from the rubric's user message."""
    first = next(m["content"] for m in body["messages"] if m["role"] == "user")
    instruction, answer = first.split(_RESPONSE, 1)
    return instruction.removeprefix("Instruction:\n"), answer


def respond(body: dict) -> str:
    instruction, answer = pair(body)
    asked = sum(m["role"] == "user" for m in body["messages"])  # 2, 3, ...: re-asked
    words = len(answer.split())
    reasoning = f"The response has {words} words and addresses the instruction to that extent."
    if "UNSCORABLE" in instruction + answer:
        return f"{reasoning}\nScore: 7/10" if asked == 1 else "I cannot rate this response."
    if "NO_SCORE_FIRST" in instruction + answer and asked == 1:
        return reasoning  # no score line: the client must ask again
    return f"{reasoning}\nScore: {rule_score(answer)}"
