"""A scripted backward model and pair judge for the loopback server: answers the instruction
backtranslation prompts the way models would, so augment and curate run offline through the real SDK.

- backward prompt (``prompts/backward.j2``): "Explain <the response's first four words>". A response
  containing ECHO_ALWAYS is answered with the response itself every time (the row must fail);
  EMPTY_FIRST gets an empty reply on its first request, a good instruction after.
- pair rubric (``prompts/rate_pair_system.j2``): some reasoning, then "Score: N", N read from a
  "(q=N)" tag in the response (3 without one). UNPARSEABLE_FIRST is answered without a score the
  first time and with one once re-prompted; NEVER_SCORED always says "Score: 7/10" (another scale).
"""

from __future__ import annotations

import re

BACKWARD_OPENING = "Here is an answer an AI assistant gave to a user."
RUBRIC_OPENING = "You review training data and model answers."
_QUALITY = re.compile(r"\(q=(\d)\)")
# Unlabelled responses the tests give the backward model (LIMA-like, short)
RESPONSES = ["Paris is the capital of France and its largest city.",
             "Boil the pasta for nine minutes, then drain it and add the sauce.",
             "A haiku has three lines of five, seven and five syllables.",
             "Photosynthesis turns light, water and carbon dioxide into sugar.",
             "The Treaty of Westphalia ended the Thirty Years' War in 1648.",
             "To reverse a list in Python, call reversed() or slice it with [::-1].",
             "Sleep at the same time every night and keep the room dark.",
             "Mount Everest is 8,849 metres high."]
_seen: dict[str, int] = {}


def instruction_for(response: str) -> str:
    return "Explain " + " ".join(response.split()[:4]).rstrip(".,")


def _count(text: str) -> int:
    _seen[text] = _seen.get(text, 0) + 1
    return _seen[text]


def backward(prompt: str) -> str:
    response = prompt.split("Answer:\n", 1)[1]
    if "ECHO_ALWAYS" in response:
        return response
    if "EMPTY_FIRST" in response and _count(prompt) == 1:
        return "  "
    return instruction_for(response)


def judge(messages: list[dict]) -> str:
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    response = first_user.split("Response:\n", 1)[1]
    reprompted = sum(m["role"] == "user" for m in messages) > 1
    if "NEVER_SCORED" in response:
        return "The response is hard to place on the scale.\nScore: 7/10"
    match = _QUALITY.search(response)
    score = int(match.group(1)) if match else 3
    reasoning = (f"The response {'answers' if score >= 4 else 'only partly answers'} the instruction; "
                 f"it reads as an assistant's answer at level {score}.")
    if "UNPARSEABLE_FIRST" in response and not reprompted:
        return reasoning + " Overall a good answer."
    return f"{reasoning}\nScore: {score}"


def respond(body: dict) -> str:
    messages = body["messages"]
    if messages[0]["role"] == "system" and messages[0]["content"].startswith(RUBRIC_OPENING):
        return judge(messages)
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    if first_user.startswith(BACKWARD_OPENING):
        return backward(first_user)
    raise ValueError(f"not a backtranslation prompt: {first_user[:80]!r}")
