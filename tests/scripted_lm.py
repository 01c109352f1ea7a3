"""A scripted lm-eval model: fixed outputs per document, for exact metric checks."""

from lm_eval.api.model import LM


class ScriptedLM(LM):
    def __init__(self, generate=None, loglikelihood=None):
        super().__init__()
        self._generate = generate  # prompt -> generated text
        self._loglikelihood = loglikelihood  # (prompt, continuation) -> log-prob
        self.prompts = []

    def generate_until(self, requests, disable_tqdm=False):
        self.prompts += [r.args[0] for r in requests]
        return [self._generate(r.args[0]) for r in requests]

    def loglikelihood(self, requests, disable_tqdm=False):
        return [(self._loglikelihood(*r.args), False) for r in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


def evaluate(lm, tasks, test_file, **metadata):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from harness_tasks.tasks import TASKS_DIR

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"test_file": str(test_file), **metadata})
    return simple_evaluate(model=lm, tasks=tasks, task_manager=manager, log_samples=True,
                           bootstrap_iters=0)
