"""A local transformers model (optionally with a PEFT adapter) as a teacher backend.

For teachers that run offline, and for the backward model of instruction backtranslation (a model
fine-tuned here, answering prompts made from outputs). It speaks the same async interface as the
API backends, so the runner's N concurrent workers drive it unchanged: each ``complete()`` call
queues its request, and one background task gathers what is pending into batches and runs
``model.generate`` in a worker thread, so the GPU sees batches and the event loop never blocks.

``request.params``: ``max_tokens`` (new tokens; default ``DEFAULT_MAX_TOKENS``), ``temperature``
(0 or missing: greedy), ``top_p`` and ``random_seed`` (sampling only). ``response_format`` is
ignored: a local model is not constrained to JSON; the runner re-prompts an invalid answer.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import prompts
from datagen.engine.backends.base import ChatRequest, Completion, FatalBackendError

DEFAULT_MAX_TOKENS = 1024
GATHER_S = 0.005  # once a request is there, how long to wait for more to fill the batch


class HFBackend:
    name = "hf"

    def __init__(self, model: str, *, endpoint: str, adapter: str | Path | None = None,
                 load_in_4bit: bool = False, device: str | None = None, batch_size: int = 8,
                 use_chat_template: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        local_dir(model, "model")
        if adapter is not None:
            local_dir(adapter, "adapter")
        self.model_name, self.endpoint, self.batch_size = str(model), endpoint, batch_size
        # False: the project's instruction wrapper (prompts.wrap_instruction) even where the tokenizer has a
        # chat template. A model fine-tuned by `cotharness train` (the backward model) saw exactly
        # TaskSpec.prompt(row), and a chat template writes it differently (Mistral v0.3's has no space
        # before [/INST]).
        self.use_chat_template = use_chat_template
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)

        self.tokenizer = tok = AutoTokenizer.from_pretrained(model)
        # Generation appends new tokens on the right, so prompts must end there: pad on the left.
        tok.padding_side = "left"
        if tok.pad_token is None:
            # Padding is masked out, so any id would do for generation; a distinct one (Mistral's <unk>,
            # never produced from text) keeps padding and a real EOS apart in the output; EOS is the fallback.
            tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token

        kwargs = {"dtype": torch.bfloat16 if self.device.type == "cuda" else torch.float32,
                  "device_map": {"": str(self.device)}}
        if load_in_4bit:
            from harness_tasks.quant import bnb_config

            kwargs["quantization_config"] = bnb_config()  # the NF4 recipe adapters are trained on
        self.model = AutoModelForCausalLM.from_pretrained(model, **kwargs)
        if adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter))
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else tok.eos_token_id
        self.eos_ids = set(eos) if isinstance(eos, (list, tuple)) else {eos}

        self._lock = threading.Lock()  # one generate at a time, even if two event loops share the model
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    # -- prompts ---------------------------------------------------------------------------------

    def render(self, messages) -> str:
        """The prompt text for a conversation, ending where the assistant's next answer starts."""
        messages = [dict(m) for m in messages]
        if messages and messages[0]["role"] == "system":
            # Mistral's own templates (v0.3 era) have no system role; they prepend it to a user turn.
            system = messages.pop(0)["content"]
            if not messages or messages[0]["role"] != "user":
                raise ValueError("a system message must be followed by a user message")
            messages[0]["content"] = f"{system}\n\n{messages[0]['content']}"
        if self.use_chat_template and self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # No template (or not wanted): Mistral's instruction format, as TaskSpec.prompt writes it for
        # training and lm-eval; the tokenizer adds BOS itself.
        parts = []
        for m in messages:
            if m["role"] == "user":
                parts.append(prompts.wrap_instruction(m["content"]))
            elif m["role"] == "assistant":
                parts.append(m["content"] + self.tokenizer.eos_token)
            else:
                raise ValueError(f"unsupported role {m['role']!r} (only one leading system message)")
        return "".join(parts)

    def encode(self, text: str) -> list[int]:
        # A chat template usually writes BOS itself; letting the tokenizer add another would double it.
        bos = self.tokenizer.bos_token
        return self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]

    # -- batching --------------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> Completion:
        ids = self.encode(self.render(request.messages))  # a bad conversation fails here, alone
        future = asyncio.get_running_loop().create_future()
        await self._ensure_worker().put((ids, generate_kwargs(request.params), future))
        return await future

    def _ensure_worker(self) -> asyncio.Queue:
        # Created lazily in the running loop: the backend may be built outside it, and a queue or task
        # belongs to one loop (a second asyncio.run() gets its own).
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._serve())
        return self._queue

    async def _serve(self) -> None:
        queue = self._queue
        while True:
            pending = [await queue.get()]
            try:
                await self._run_batch(queue, pending)
            except BaseException as err:  # cancelled by aclose() mid-batch: no caller may be left waiting
                fail([future for *_, future in pending], err)
                raise

    async def _run_batch(self, queue: asyncio.Queue, pending: list) -> None:
        if len(pending) < self.batch_size:
            await asyncio.sleep(GATHER_S)
        while len(pending) < self.batch_size and not queue.empty():
            pending.append(queue.get_nowait())
        groups: dict[tuple, list] = {}  # one generate call per set of generation parameters
        for ids, kwargs, future in pending:
            if not future.done():  # a caller that gave up (cancelled) needs no answer
                groups.setdefault(tuple(sorted(kwargs.items())), []).append((ids, future))
        for key, group in groups.items():
            futures = [future for _, future in group]
            try:
                completions = await asyncio.to_thread(self._generate, [ids for ids, _ in group], dict(key))
            except Exception as err:  # fail this group's requests, keep serving the others
                fail(futures, err)
                continue
            for future, completion in zip(futures, completions, strict=True):
                if not future.done():
                    future.set_result(completion)

    def _generate(self, batch: list[list[int]], kwargs: dict) -> list[Completion]:
        import torch

        width = max(map(len, batch))
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, ids in enumerate(batch):
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        seed = kwargs.pop("random_seed", None)
        with self._lock, torch.inference_mode():
            if seed is not None:
                # Reproducible for the same batch; the rows of a batch share one random stream, so a
                # row's sample can still change when its batch-mates (or their order) do.
                torch.manual_seed(seed)
            out = self.model.generate(input_ids=input_ids.to(self.device),
                                      attention_mask=mask.to(self.device), pad_token_id=pad_id, **kwargs)
        completions = []
        for ids, row in zip(batch, out[:, width:].tolist(), strict=True):
            # Up to and including the first EOS; what follows it is padding.
            n = next((i + 1 for i, t in enumerate(row) if t in self.eos_ids), len(row))
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            completions.append(Completion(text, tokens_in=len(ids), tokens_out=n, model=self.model_name))
        return completions

    async def aclose(self) -> None:
        task, queue = self._task, self._queue
        self._task = self._queue = self._loop = None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while queue is not None and not queue.empty():
            fail([queue.get_nowait()[2]], asyncio.CancelledError())


def generate_kwargs(params: dict) -> dict:
    """``model.generate`` arguments (plus the seed) from chat-completions parameters."""
    kwargs = {"max_new_tokens": int(params.get("max_tokens") or DEFAULT_MAX_TOKENS)}
    temperature = float(params.get("temperature") or 0.0)
    if temperature <= 0:
        return {**kwargs, "do_sample": False}
    kwargs.update(do_sample=True, temperature=temperature)
    if params.get("top_p") is not None:
        kwargs["top_p"] = float(params["top_p"])
    if params.get("random_seed") is not None:
        kwargs["random_seed"] = int(params["random_seed"])
    return kwargs


def fail(futures, err: BaseException) -> None:
    """Fail the callers still waiting on ``futures``."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        err = FatalBackendError(f"out of GPU memory while generating ({err}); lower batch_size or max_tokens")
    elif not isinstance(err, Exception):
        err = RuntimeError("HFBackend was closed while the request was waiting")
    for future in futures:
        if not future.done():
            future.set_exception(err)


def local_dir(path: str | Path, what: str) -> None:
    """Raise if ``path`` names a local directory that is not there; a hub id ("org/name") passes."""
    p, text = Path(path).expanduser(), str(path)
    looks_local = (isinstance(path, Path) or p.is_absolute() or text.startswith((".", "~"))
                   or text.count("/") > 1)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{what} {text}: not a directory")
    if looks_local and not p.is_dir():
        raise FileNotFoundError(f"{what} directory not found: {p}")
