"""Every pipeline step is one importable function: a typed config in, its outputs' paths out (the
project's issue 19). The steps are chained here as a study would chain them, on the loopback teacher
and the tiny model: thoughts -> prepare -> train -> eval (base and tuned) -> compare. And nothing in
the packages runs the project's own command line as a subprocess."""

import ast
import re
import secrets

import pytest

from conftest import REPO, write_jsonl
from fake_teacher import pairs, respond
from loopback_server import LoopbackServer

N_PAIRS = 16
PACKAGES = ("datagen", "trainer", "cotharness", "harness_tasks", "prompts")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("steps")


@pytest.fixture(scope="module")
def thoughts(work):
    from datagen.engine.pipeline import StageRun
    from datagen.teacher.stages import StageResult, run

    inp = write_jsonl(work / "pairs.jsonl", pairs(N_PAIRS))
    with pytest.MonkeyPatch.context() as mp, LoopbackServer(respond) as server:
        mp.setenv("MISTRAL_API_KEY", "sk-test-" + secrets.token_hex(12))
        result = run(StageRun(stage="thoughts", input=inp, out=work / "thoughts.jsonl", model="open-mistral-7b",
                              server_url=server.url))
    assert isinstance(result, StageResult)
    return result


@pytest.fixture(scope="module")
def prepared(thoughts, work):
    from datagen.teacher.prepare import PrepareRun, run

    return run(PrepareRun(thoughts.out, work / "sft", ablations=["correct", "all"], dev_fraction=0.25,
                          tokenizer=None, train_config=None))


@pytest.fixture(scope="module")
def trained(prepared, tiny_model, work):
    from trainer.config import load_config
    from trainer.train import train

    files = prepared.files["correct"]
    cfg = load_config(REPO / "configs/train/demo.yaml", {
        "output_dir": str(work / "run"), "model": {"base_model": str(tiny_model)},
        "data": {"train_file": str(files["train"]), "eval_file": str(files["dev"])},
        "training": {"max_steps": 2, "eval_steps": 2, "save_steps": 2, "logging_steps": 1,
                     "report_to": []}})
    return train(cfg)


@pytest.fixture(scope="module")
def evaluated(trained, tiny_model, work):
    from cotharness.run_eval import EvalRun, evaluate
    from datagen.synthetic.nli import generate

    test_file = write_jsonl(work / "test.jsonl", generate("test", 6))
    runs = {}
    for name, model_args in (("base", {"pretrained": tiny_model}),
                             ("tuned", {"pretrained": tiny_model, "peft": trained.run_dir})):
        runs[name] = evaluate(EvalRun(model_args={**model_args, "dtype": "float32"}, tasks=["nli_cot"],
                                      output_path=work / "eval" / name, device="cpu", batch_size=6,
                                      gen_kwargs={"max_gen_toks": 24}, metadata={"test_file": test_file}))
    return runs


def test_teacher_stage_returns_its_output_and_manifest(thoughts, work):
    assert thoughts.out == work / "thoughts.jsonl" and thoughts.out.is_file()
    assert thoughts.manifest == work / "thoughts.manifest.json" and thoughts.manifest.is_file()
    assert thoughts.tally.done == N_PAIRS and thoughts.tally.failed == 0
    assert len(thoughts.out.read_text().splitlines()) == N_PAIRS


def test_prepare_returns_the_files_it_wrote(prepared, work):
    import json

    out = work / "sft"
    assert prepared.out == out and set(prepared.files) == {"correct", "all"}
    assert prepared.files["correct"] == {"train": out / "correct_only/train.jsonl", "dev": out / "correct_only/dev.jsonl"}
    assert all(p.is_file() for split in prepared.files.values() for p in split.values())
    assert prepared.stats_json == out / "stats.json" and prepared.stats_json.is_file()
    assert prepared.lengths_png is None  # no tokenizer: no lengths to plot
    manifest = json.loads(prepared.manifest.read_text())
    assert prepared.manifest == out / "manifest.json"
    assert set(manifest["outputs"]) == {str(p.relative_to(out)) for s in prepared.files.values() for p in s.values()} \
        | {"stats.json"}
    assert prepared.stats["ablations"]  # the statistics the command prints


def test_train_returns_the_run_dir_adapter_and_run_json(trained, work):
    import json

    assert trained.run_dir == work / "run"
    assert trained.adapter == trained.run_dir / "adapter_model.safetensors" and trained.adapter.is_file()
    assert json.loads(trained.run_json.read_text())["status"] == "complete"


def test_eval_returns_this_runs_results_samples_and_reports(evaluated, work):
    import json

    for name, result in evaluated.items():
        root = work / "eval" / name
        assert result.output_dir.parent == root  # lm-eval's folder per model
        assert result.results_file.parent == result.output_dir and result.results_file.is_file()
        assert "nli_cot" in json.loads(result.results_file.read_text())["results"]
        stamp = result.results_file.stem.removeprefix("results_")
        assert result.samples == {"nli_cot": result.output_dir / f"samples_nli_cot_{stamp}.jsonl"}
        assert result.predictions == {"nli_cot": result.output_dir / f"predictions_nli_cot_{stamp}.csv"}
        assert result.per_class == {"nli_cot": result.output_dir / f"per_class_nli_cot_{stamp}.json"}
        assert all(p.is_file() for files in (result.samples, result.predictions, result.per_class)
                   for p in files.values())


def test_a_second_eval_into_the_same_folder_returns_its_own_files(evaluated, tiny_model, work):
    from cotharness.run_eval import EvalRun, evaluate

    first = evaluated["base"]
    again = evaluate(EvalRun(model_args={"pretrained": tiny_model, "dtype": "float32"}, tasks=["nli_cot"],
                             output_path=work / "eval" / "base", device="cpu", batch_size=6, limit=2,
                             gen_kwargs={"max_gen_toks": 8}, metadata={"test_file": work / "test.jsonl"}))
    assert again.results_file != first.results_file and again.results_file.is_file()
    assert again.samples["nli_cot"] != first.samples["nli_cot"]


def test_compare_returns_its_report_files(evaluated, work):
    from cotharness.compare import CompareRun, run

    out = work / "compare"
    result = run(CompareRun([evaluated["base"].results_file, evaluated["tuned"].results_file], out,
                            names=["base", "tuned"]))
    assert (result.summary_md, result.summary_json, result.summary_csv, result.manifest) == (
        out / "summary.md", out / "summary.json", out / "summary.csv", out / "manifest.json")
    assert all(p.is_file() for p in (result.summary_md, result.summary_json, result.summary_csv, result.manifest))
    assert {r["model"] for r in result.report["rows"]} == {"base", "tuned"}


def test_eval_run_builds_the_argv_cotharness_eval_takes(tmp_path):
    from cotharness.run_eval import EvalRun

    argv = EvalRun(model_args={"pretrained": tmp_path, "load_in_4bit": True}, tasks=["nli_cot", "puzzte"],
                   output_path=tmp_path / "out", limit=0.5, seed=3, apply_chat_template=True,
                   extra_args=["--num_fewshot", "0"]).argv()
    assert argv[:5] == ["run", "--model", "hf", "--tasks", "nli_cot,puzzte"]
    assert argv[argv.index("--model_args") + 1] == f'{{"pretrained": "{tmp_path}", "load_in_4bit": true}}'
    assert argv[argv.index("--limit") + 1] == "0.5" and argv[argv.index("--seed") + 1] == "3"
    assert argv[argv.index("--batch_size") + 1] == "auto" and "--log_samples" in argv
    assert argv[-3:] == ["--apply_chat_template", "--num_fewshot", "0"]


def test_a_step_raises_a_user_error_not_an_exit(tmp_path):
    from cotharness.run_eval import EvalRun, evaluate
    from datagen.teacher.prepare import PrepareRun, run
    from harness_tasks.errors import UserError

    with pytest.raises(UserError):
        run(PrepareRun(tmp_path / "no-such.jsonl", tmp_path / "out", tokenizer=None, train_config=None))
    with pytest.raises(UserError):
        evaluate(EvalRun(tasks=["nli_cott"], output_path=tmp_path / "out"))


# --- nothing shells out to the project's own command line --------------------------------------------

# Calls that start another process; each is checked for naming this project's commands.
SPAWN = {("subprocess", n) for n in ("run", "Popen", "call", "check_call", "check_output", "getoutput",
                                     "getstatusoutput")} | {("os", n) for n in ("system", "popen", "execv", "execvp",
                                                                                "execl", "execlp", "spawnv", "spawnl")} \
    | {("asyncio", "create_subprocess_exec"), ("asyncio", "create_subprocess_shell")}
# the project's own CLI and the tools it wraps in-process: a string naming one of them in the function
# that starts a process, or the running interpreter (sys.executable: `python -m ...`)
OWN = re.compile(r"(^|[\s/])(cotharness|trainer|datagen|lm[-_]eval|accelerate)(\s|$)|-m\s*(cotharness|trainer|lm_eval)")
# Legitimate process starts, with why; every other one must not name the project's commands.
# (The git calls of harness_tasks/manifest.py and quiet.py name none, so they need no entry.)
ALLOWED: dict[str, str] = {
    "cotharness/gguf_server.py:serving": "`python -m llama_cpp.server`: llama.cpp's own OpenAI-compatible server, "
                                         "a third-party service the GGUF evaluation talks to over HTTP",
}


def _spawns(tree: ast.AST):
    """(enclosing function or module, call) for each call that starts a process."""
    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else scope
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) \
                    and isinstance(child.func.value, ast.Name) and (child.func.value.id, child.func.attr) in SPAWN:
                yield scope, child
            yield from visit(child, inner)
    yield from visit(tree, tree)


def _names_own_cli(scope: ast.AST) -> list[str]:
    docstrings = {id(n.body[0].value) for n in ast.walk(scope) if isinstance(
        n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.body
        and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = [n.value for n in ast.walk(scope) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and id(n) not in docstrings and OWN.search(n.value)]
    found += ["sys.executable" for n in ast.walk(scope) if isinstance(n, ast.Attribute) and n.attr == "executable"
              and isinstance(n.value, ast.Name) and n.value.id == "sys"]
    return found


def test_nothing_shells_out_to_the_projects_own_cli():
    spawns, offenders = 0, []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            where = str(path.relative_to(REPO))
            for scope, call in _spawns(ast.parse(path.read_text(encoding="utf-8"))):
                spawns += 1
                named = _names_own_cli(scope)
                if named and f"{where}:{getattr(scope, 'name', '<module>')}" not in ALLOWED:
                    offenders.append(f"{where}:{call.lineno}: {named}")
    assert spawns, "the scan found no process start at all (the git calls): it no longer sees calls"
    assert not offenders, "call the step function in-process instead:\n" + "\n".join(offenders)


def test_the_scan_catches_a_shell_out():
    source = '''
import subprocess, sys
def bad(cfg):
    """Runs cotharness eval."""
    return subprocess.run([sys.executable, "-m", "cotharness", "eval", *cfg])
def also_bad():
    subprocess.Popen("lm_eval --tasks nli_cot", shell=True)
def fine():
    """Not cotharness itself."""
    subprocess.run(["git", "rev-parse", "HEAD"])
'''
    found = {getattr(scope, "name", None): bool(_names_own_cli(scope)) for scope, _ in _spawns(ast.parse(source))}
    assert found == {"bad": True, "also_bad": True, "fine": False}
