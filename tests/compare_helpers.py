"""Real lm-eval output folders from scripted answers, and strict readers of compare's reports."""

import json
import re
from pathlib import Path

from conftest import write_jsonl
from scripted_lm import ScriptedLM, evaluate_to_dir


def nli_data(path: Path, golds: list) -> Path:
    return write_jsonl(path, [{"id": f"d{i}", "premise": f"Premise {i}.", "hypothesis": f"h{i}", "label": g}
                              for i, g in enumerate(golds)])


def nli_answer(label) -> str:
    """The model's text: a JSON answer, or prose with no label (a parse failure) for None."""
    if label is None:
        return "I am not sure."
    return json.dumps({"thought_process": "Step 1: the premise says so.", "predicted_label": label})


def nli_model(answers: dict) -> ScriptedLM:
    """Answers by the document's index (its hypothesis h<i>); ``loglikelihood`` for nli_direct."""
    def index(prompt):
        return int(re.search(r"Hypothesis: h(\d+)", prompt).group(1))

    return ScriptedLM(generate=lambda p: nli_answer(answers[index(p)]),
                      loglikelihood=lambda p, cont: -1.0 if (cont.strip() == "yes") == (answers[index(p)] == 1) else -2.0)


def nli_run(out: Path, data: Path, answers: dict, tasks=("nli_cot",)) -> Path:
    return evaluate_to_dir(nli_model(answers), list(tasks), data, out)


def strict_json(path: Path):
    """JSON as the standard defines it: NaN and Infinity are errors, not numbers."""
    def refuse(name):
        raise ValueError(f"{path}: {name} is not JSON")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def results_file(run_dir: Path) -> Path:
    (found,) = Path(run_dir).rglob("results_*.json")
    return found


def logged(run_dir: Path, task: str) -> dict:
    """metric -> value as lm-eval reported it in the run's results file."""
    results = json.loads(results_file(run_dir).read_text())["results"][task]
    return {k.partition(",")[0]: v for k, v in results.items() if "," in k and "_stderr," not in k}


def summary(out: Path) -> dict:
    return {(r["model"], r["task"], r["metric"]): r for r in strict_json(out / "summary.json")}
