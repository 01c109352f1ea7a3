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


def evaluate_to_dir(lm, tasks, test_file, out_dir, model_name="scripted"):
    """Like ``lm_eval --output_path out_dir --log_samples``: results_*.json + samples_*.jsonl."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from harness_tasks.tasks import TASKS_DIR

    tracker = EvaluationTracker(output_path=str(out_dir))
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                          metadata={"test_file": str(test_file)})
    results = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, log_samples=True,
                              bootstrap_iters=0, evaluation_tracker=tracker)
    tracker.general_config_tracker.model_name_sanitized = model_name
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return out_dir
