"""Instruction following, the target of instruction backtranslation (Humpback-style self-instruct).

``instruct``: an instruction -> the assistant's response (free text: ``target`` is the response, no
label schema). The final model is trained on curated (instruction, response) pairs with this prompt,
loss on the response only. ``backward`` (a variant): a response -> the instruction it answers; the
backward model is trained on seed pairs the other way round and then writes instructions for
unlabelled responses. Both prompts are templates in ``prompts/`` (``instruct.j2``, ``backward.j2``).
"""

from __future__ import annotations

from harness_tasks.tasks import TaskSpec

TASK = TaskSpec(name="instruct", template="instruct", fields=("instruction",), schema=None,
                target=lambda row: row["response"])
VARIANTS = {
    "backward": TaskSpec(name="backward", template="backward", fields=("response",), schema=None,
                         target=lambda row: row["instruction"]),
}
