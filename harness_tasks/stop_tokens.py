"""lm-eval's stop strings, checked on the newest token's text instead of re-decoding every row each step.

lm-eval's ``MultiTokenEOSCriteria`` batch-decodes the last few tokens of every row, once per stop string,
at every decoding step (2 x 512 decodes per step for ``nli_cot``'s two stop strings and a batch of 512),
and tells ``generate`` only whether the whole batch is done. Here each token's text is decoded once per
tokenizer; a step appends the new token's text to each unfinished row's tail and looks for the stop
strings there. A row is marked done only when the decoded text of its generated tokens contains a stop
string (the real decode decides, so a row never stops early); lm-eval then cuts each answer at its first
stop string as before, so the answers are the same text. Rows are reported done one by one, so
``generate`` pads the rows that finished and ends the batch when every row has.
"""

from __future__ import annotations

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

_PIECES: dict[int, tuple[object, list[str]]] = {}


def token_texts(tokenizer) -> list[str]:
    """The text of every token id on its own (cached per tokenizer object)."""
    cached = _PIECES.get(id(tokenizer))
    if cached is None or cached[0] is not tokenizer:
        pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        cached = _PIECES[id(tokenizer)] = (tokenizer, pieces)
    return cached[1]


class TokenStopCriteria(StoppingCriteria):
    def __init__(self, tokenizer, stops: list[str], initial_length: int, batch_size: int):
        self.tokenizer, self.stops, self.start = tokenizer, [s for s in stops if s], initial_length
        self.pieces = token_texts(tokenizer)
        self.keep = max((len(s) for s in self.stops), default=1) - 1  # characters a stop string may span
        self.tails = [""] * batch_size
        self.done = [False] * batch_size

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        newest = input_ids[:, -1].tolist()  # generate synchronises at every step anyway
        for row, token in enumerate(newest):
            if self.done[row] or not self.stops:
                continue
            piece = self.pieces[token] if token < len(self.pieces) else ""
            tail = self.tails[row] + piece
            if any(s in tail for s in self.stops):
                text = self.tokenizer.decode(input_ids[row, self.start:])
                self.done[row] = any(s in text for s in self.stops)
            self.tails[row] = tail[-self.keep:] if self.keep else ""
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def token_stop_criteria(tokenizer, stops: list[str], initial_length: int, batch_size: int) -> StoppingCriteriaList:
    """lm-eval's ``stop_sequences_criteria`` signature, the same stopping, per row and without re-decoding."""
    return StoppingCriteriaList([TokenStopCriteria(tokenizer, list(stops), initial_length, batch_size)])
