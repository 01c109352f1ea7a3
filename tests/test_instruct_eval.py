"""instruct_judged: held-out instructions answered by a model, rated 1-5 by a judge on the loopback
server (tests/fake_judge.py scores by answer length), and base vs fine-tuned in cotharness compare."""

import dataclasses
import json
import re
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom, norm, rankdata
from typer.testing import CliRunner

from harness_tasks import judge

from conftest import REPO, write_jsonl
from fake_judge import respond as judge_respond
from fake_judge import rule_score
from loopback_server import LoopbackServer, Reply
from scripted_lm import ScriptedLM

BIN = Path(sys.executable).parent
SAMPLE = REPO / "harness_tasks" / "instruct" / "data" / "sample.jsonl"


@pytest.fixture
def key(monkeypatch, tmp_path):
    value = "sk-test-" + secrets.token_hex(12)
    monkeypatch.setenv("MISTRAL_API_KEY", value)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return value


def words(score: int) -> str:
    """An answer the fake judge scores ``score`` (1 + words // 10)."""
    return " ".join(["word"] * (10 * (score - 1) + 1))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_task(lm, out_dir: Path | None = None, **metadata):
    """lm-eval on instruct_judged with ``--metadata``; like ``--output_path out_dir --log_samples``."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from harness_tasks.tasks import TASKS_DIR

    tracker = EvaluationTracker(output_path=str(out_dir)) if out_dir else None
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)
    results = simple_evaluate(model=lm, tasks=["instruct_judged"], task_manager=manager, log_samples=True,
                              bootstrap_iters=0, evaluation_tracker=tracker)
    if out_dir:
        tracker.general_config_tracker.model_name_sanitized = "scripted"
        samples = results.pop("samples")
        tracker.save_results_aggregated(results=results, samples=samples)
        tracker.save_results_samples(task_name="instruct_judged", samples=samples["instruct_judged"])
    return results


# --- the judge client ------------------------------------------------------------------------------

def test_judge_rule_retries_reasks_unscored_and_cache(key, tmp_path):
    pairs = [("Explain tides.", words(s)) for s in (1, 2, 3, 4, 5)] + [
        ("Explain tides.", words(5) + " and then some more words to stay at five"),  # capped at 5
        ("NO_SCORE_FIRST: list three fruits.", words(4)),  # scored when asked again
        ("UNSCORABLE: say hi.", words(3)),  # 7/10, then prose: unscored after two re-asks
        ("Say nothing.", "   "),  # empty: 1 by the rubric, never sent
        ("Explain tides.", words(2)),  # the same pair twice: asked once
    ]
    cache = tmp_path / "judge.sqlite"
    with LoopbackServer(judge_respond, faults={"429": 0.3, "500": 0.2}, retry_after=0.01) as srv:
        config = judge.JudgeConfig(model="judge-a", url=srv.url, cache=str(cache), concurrency=4)
        verdicts = judge.judge_pairs(pairs, config)
        first = srv.stats()
        again = judge.judge_pairs(pairs, config)
        after_again = srv.stats()["requests"]
        other = judge.judge_pairs(pairs, dataclasses.replace(config, model="judge-b"))
        after_other = srv.stats()["requests"]
        assert srv.auth_headers == {f"Bearer {key}"}  # the key was sent, as the header
    assert [v.score for v in verdicts] == [1, 2, 3, 4, 5, 5, 4, None, 1, 2]
    assert [v.attempts for v in verdicts] == [1, 1, 1, 1, 1, 1, 2, 3, 0, 1]
    assert [v.source for v in verdicts] == ["judge"] * 8 + ["empty", "judge"]
    assert verdicts[6].reply == "The response has 31 words and addresses the instruction to that extent.\n\n" \
                               "[asked again]\nThe response has 31 words and addresses the instruction to that extent.\n" \
                               "Score: 4"
    assert verdicts[7].reply.endswith("Score: 7/10" + "\n\n[asked again]\nI cannot rate this response." * 2)
    # every judge reply is one request (6 + 2 + 3 = 11), plus one per injected 429/500 (retried); the
    # duplicate and the empty answer cost nothing
    faults = sum(first["faults"].values())
    assert faults > 0 and first["by_status"][200] == 11 and first["requests"] == 11 + faults
    # the second evaluation of the same answers is answered from the cache, unscored verdicts included
    assert after_again == first["requests"]
    assert [(v.score, v.attempts) for v in again] == [(v.score, v.attempts) for v in verdicts]
    assert {v.source for v in again} == {"cache", "empty"}
    # the cache is keyed by the judge: another model is asked again
    assert [v.score for v in other] == [v.score for v in verdicts] and after_other > after_again
    assert key.encode() not in cache.read_bytes()


@pytest.mark.parametrize("status", [401, 400])
def test_refusal_is_one_error_without_the_key(key, status):
    def refuse(body):  # a server that echoes the credential it was sent
        raise Reply(status, {"message": f"invalid request with key {key} (Authorization: Bearer {key})"})

    with LoopbackServer(refuse) as srv:
        config = judge.JudgeConfig(model="judge-a", url=srv.url, cache="off", concurrency=4)
        with pytest.raises(judge.JudgeError) as err:
            judge.judge_pairs([(f"Question {i}?", "An answer.") for i in range(40)], config)
        requests = srv.stats()["requests"]
    if status == 401:
        assert str(err.value) == f"the judge server {srv.url} refused the API key (401): check MISTRAL_API_KEY"
    else:
        assert str(err.value).startswith(f"the judge server {srv.url} refused the request (HTTP 400): ")
        assert "with key [redacted] (Authorization: Bearer [redacted])" in str(err.value)
    assert key not in str(err.value)
    assert requests <= 4  # the run stops at the first refusal: the requests already in flight, not 40


def test_config_from_metadata():
    config = judge.JudgeConfig.from_metadata({"judge_model": "m", "judge_concurrency": "3", "test_file": "x",
                                              "pretrained": "y"})
    assert (config.model, config.concurrency, config.url) == ("m", 3, judge.DEFAULT_URL)
    assert judge.JudgeConfig.from_doc({"instruction": "x", **config.doc_fields()}) == config
    assert sorted(config.doc_fields()) == ["judge_cache", "judge_concurrency", "judge_key_env",  # never the key
                                           "judge_max_retries", "judge_model", "judge_timeout", "judge_url"]
    with pytest.raises(judge.JudgeError, match=r"unknown judge option\(s\) \['judge_modle'\]"):
        judge.JudgeConfig.from_metadata({"judge_modle": "m"})
    with pytest.raises(judge.JudgeError, match="^judge_concurrency='many': expected int$"):
        judge.JudgeConfig.from_metadata({"judge_concurrency": "many"})
    with pytest.raises(judge.JudgeError, match=r"^judge_concurrency=0 must be >= 1$"):
        judge.JudgeConfig.from_metadata({"judge_concurrency": 0})
    assert judge.JudgeConfig.from_metadata({"judge_cache": False}).cache_path() is None


# --- before any generation: missing key, unreachable judge, bad data ---------------------------------

def test_missing_key_or_unreachable_judge_fail_before_generation(monkeypatch, tmp_path):
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    lm = ScriptedLM(generate=lambda prompt: "never asked")
    with pytest.raises(judge.JudgeError) as err:  # the Mistral API (the default judge) needs a key
        run_task(lm, judge_cache=str(tmp_path / "c.sqlite"))
    assert str(err.value) == ("the judge mistral-large-latest at https://api.mistral.ai needs an API key: set "
                              "MISTRAL_API_KEY (environment or .env), or point judge_url at a server that needs none")
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(judge.JudgeError, match=rf"^the judge server {url} cannot be used \(ConnectError: .*\): "
                                               r"is it running\?$"):
        run_task(lm, judge_url=url, judge_model="m", judge_cache=str(tmp_path / "c.sqlite"))
    assert lm.prompts == []  # nothing was generated
    # a judge that goes away after the check: retried, then one error for the whole evaluation
    with pytest.raises(judge.JudgeError, match=r"still fails after 1 retries \(ConnectError: .*\); is it up\?$"):
        judge.judge_pairs([(f"q{i}", "a") for i in range(20)], judge.JudgeConfig(url=url, cache="off", max_retries=1))


def test_loader_sources_and_errors(tmp_path):
    from datasets import Dataset

    from harness_tasks.data_files import DataFileError
    from harness_tasks.instruct.utils import load_judged

    with LoopbackServer(judge_respond) as srv:
        meta = {"judge_url": srv.url, "judge_model": "m", "judge_cache": "off"}
        sample = load_judged(**meta)["test"]
        assert len(sample) >= 40 and sample[0]["id"] == "i01" and sample[0]["judge_model"] == "m"
        assert len({d["category"] for d in sample}) >= 8  # varied: how-to, rewrite, code, ...
        csv = tmp_path / "q.csv"
        csv.write_text('prompt,notes\n"Name a colour.",x\n', encoding="utf-8")
        rows = load_judged(test_file=str(csv), instruction_column="prompt", **meta)["test"]
        assert rows[0]["instruction"] == "Name a colour." and rows[0]["id"] == "0" and rows[0]["reference"] is None
        Dataset.from_list([{"instruction": "Count to three."}]).save_to_disk(tmp_path / "saved")
        assert load_judged(dataset=str(tmp_path / "saved"), **meta)["test"][0]["instruction"] == "Count to three."
        bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "ok"}, {"question": "no column"}])
        with pytest.raises(DataFileError, match=rf"^{re.escape(str(bad))}:2: column 'instruction' is missing; "
                                                r"found \['question'\]$"):
            load_judged(test_file=str(bad), **meta)
        with pytest.raises(DataFileError, match=r"bad.jsonl:1: column 'instruction' is empty or not text"):
            load_judged(test_file=str(write_jsonl(bad, [{"instruction": " "}])), **meta)
        with pytest.raises(DataFileError, match="test_file or dataset, not both"):
            load_judged(test_file=str(csv), dataset="x", **meta)


# --- lm-eval on the tiny model, as a user runs it --------------------------------------------------------

def test_tiny_model_cotharness_eval(tiny_model, key, tmp_path):
    data = write_jsonl(tmp_path / "held_out.jsonl", [
        {"id": "a", "instruction": "Explain why the sea is salty."},
        {"id": "b", "instruction": "UNSCORABLE: write a haiku about rain."},
        {"id": "c", "instruction": "List three uses of a paperclip.", "reference": "Hold paper, ..."},
        {"id": "d", "instruction": "Rewrite politely: give me the file."},
        {"id": "e", "instruction": "Not evaluated: beyond --limit."}])
    out, cache = tmp_path / "out", tmp_path / "judge.sqlite"
    meta = {"test_file": str(data), "judge_url": "", "judge_model": "judge-a", "judge_cache": str(cache)}
    with LoopbackServer(judge_respond) as srv:
        meta["judge_url"] = srv.url
        proc = subprocess.run([BIN / "cotharness", "eval", "--tasks", "instruct_judged", "--model_args",
                               f"pretrained={tiny_model}", "--device", "cpu", "--batch_size", "4", "--limit", "4",
                               "--gen_kwargs", "max_gen_toks=24", "--metadata", json.dumps(meta),
                               "--output_path", str(out)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        requests, auth = srv.stats()["requests"], srv.auth_headers
    (results_file,) = out.rglob("results_*.json")
    result = json.loads(results_file.read_text())["results"]["instruct_judged"]
    samples = [json.loads(line) for line in next(out.rglob("samples_instruct_judged_*.jsonl")).read_text().splitlines()]
    assert [s["doc"]["id"] for s in samples] == ["a", "b", "c", "d"]
    from harness_tasks.tasks import get_task

    expected, attempts = [], 0
    for s in samples:
        prompt = s["arguments"]["gen_args_0"]["arg_0"]
        assert prompt == get_task("instruct").prompt(s["doc"]) == f"[INST] {s['doc']['instruction']} [/INST]"
        answer = s["resps"][0][0].strip()
        verdict = json.loads(s["filtered_resps"][0])
        score = 1 if not answer else None if "UNSCORABLE" in s["doc"]["instruction"] else rule_score(answer)
        assert s["judge_score"] == verdict["score"] == score, (answer, verdict)
        assert verdict["method"] == ("empty" if not answer else "judge")
        attempts += verdict["attempts"]
        expected.append(score)
    scored = [x for x in expected if x is not None]
    assert result["judge_score,judge"] == pytest.approx(sum(scored) / len(scored))
    assert result["judge_pass,judge"] == pytest.approx(sum(x is not None and x >= 4 for x in expected) / 4)
    assert result["unscored,judge"] == pytest.approx(sum(x is None for x in expected) / 4)
    assert attempts > 0 and requests == attempts  # one request per judge reply (re-asks included), none for empty answers
    # the key went to the judge as the header and nowhere else
    assert auth == ({f"Bearer {key}"} if attempts else set())
    written = [p.read_bytes() for p in [*out.rglob("*"), cache] if p.is_file()]
    assert not any(key.encode() in b for b in [*written, proc.stdout.encode(), proc.stderr.encode()])


# --- base vs fine-tuned: scripted answers with planned scores, then cotharness compare ---------------------

N = sum(1 for _ in SAMPLE.open())
# planned judge scores per document of the bundled sample (None: an answer the judge never scores)
BASE = [None if i == 10 else 1 + i % 3 for i in range(N)]
TUNED = [None if i == 7 else 2 if i == 5 else BASE[i] if i % 4 == 0 or BASE[i] is None else min(5, BASE[i] + 2)
         for i in range(N)]


def scripted(plan):
    index = {json.loads(line)["instruction"]: i for i, line in enumerate(SAMPLE.open())}

    def generate(prompt):
        score = plan[index[prompt.removeprefix("[INST] ").removesuffix(" [/INST]")]]
        return " UNSCORABLE" if score is None else " " + words(score)
    return ScriptedLM(generate=generate)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("instruct_cmp")
    meta = {"judge_model": "judge-a", "judge_cache": str(d / "judge.sqlite")}
    with LoopbackServer(judge_respond) as srv:
        meta["judge_url"] = srv.url
        base = run_task(scripted(BASE), d / "base", **meta)
        first = srv.stats()["requests"]
        again = run_task(scripted(BASE), d / "base_again", **meta)  # the same answers: all from the cache
        second = srv.stats()["requests"]
        tuned = run_task(scripted(TUNED), d / "tuned", **{**meta, "judge_cache": str(d / "other.sqlite")})
        other_judge = run_task(scripted(TUNED), d / "other_judge", **{**meta, "judge_model": "judge-b"})
    return {"dir": d, "base": base, "again": again, "tuned": tuned, "requests": (first, second),
            "other_judge": other_judge}


def test_scripted_metrics_and_cache(runs):
    scored = [s for s in BASE if s is not None]
    res = runs["base"]["results"]["instruct_judged"]
    assert res["judge_score,judge"] == pytest.approx(sum(scored) / len(scored))
    assert res["judge_pass,judge"] == 0.0 and res["unscored,judge"] == pytest.approx(1 / N)
    tuned = runs["tuned"]["results"]["instruct_judged"]
    assert tuned["judge_pass,judge"] == pytest.approx(sum(s is not None and s >= 4 for s in TUNED) / N)
    # requests: one per document, two more for each unscored one (re-asked twice); none the second time
    first, second = runs["requests"]
    assert first == N + 2 and second == first
    assert runs["again"]["results"]["instruct_judged"] == res
    samples = next((runs["dir"] / "base").rglob("samples_instruct_judged_*.jsonl")).read_text().splitlines()
    logged = {s["doc_id"]: s["judge_score"] for s in map(json.loads, samples)}  # what compare pairs on
    assert [logged[i] for i in range(N)] == BASE


def wilcoxon_by_hand(base, other) -> float:
    """Two-sided signed-rank test, normal approximation with the tie correction; zero differences and
    unscored documents dropped (what scipy does for n > 13 with ties)."""
    d = np.array([o - b for b, o in zip(base, other, strict=True) if b is not None and o is not None and o != b])
    ranks = rankdata(np.abs(d))
    n, ties = len(d), np.unique(np.abs(d), return_counts=True)[1]
    var = (n * (n + 1) * (2 * n + 1) - (ties ** 3 - ties).sum() / 2) / 24
    z = (ranks[d > 0].sum() - n * (n + 1) / 4) / np.sqrt(var)
    return float(2 * norm.sf(abs(z)))


def test_compare_base_vs_tuned(runs, tmp_path):
    from cotharness.cli import app
    from cotharness.compare import compare

    d, out = runs["dir"], tmp_path / "cmp"
    report = compare([d / "base", d / "tuned"], out, names=["base", "tuned"])
    rows = {(r["model"], r["metric"]): r for r in json.loads((out / "summary.json").read_text())}
    mean = {name: np.mean([s for s in plan if s is not None]) for name, plan in (("base", BASE), ("tuned", TUNED))}
    passed = {name: [s is not None and s >= 4 for s in plan] for name, plan in (("base", BASE), ("tuned", TUNED))}
    for name in ("base", "tuned"):
        score = rows[(name, "judge_score")]
        assert score["value"] == pytest.approx(mean[name]) and score["unit"] == "score"
        assert score["ci_low"] < score["value"] < score["ci_high"] and score["n"] == N
        assert rows[(name, "judge_pass")]["value"] == pytest.approx(np.mean(passed[name]))
    for name, plan in (("base", BASE), ("tuned", TUNED)):
        assert rows[(name, "unscored")]["value"] == pytest.approx(plan.count(None) / N)
    assert rows[("tuned", "judge_score")]["delta_vs_base"] == pytest.approx(mean["tuned"] - mean["base"])
    assert rows[("base", "judge_score")]["delta_vs_base"] is None
    # paired tests: Wilcoxon on the scores, McNemar (exact: few discordant pairs) on passing
    assert rows[("tuned", "judge_score")]["wilcoxon_p"] == pytest.approx(wilcoxon_by_hand(BASE, TUNED))
    gained = sum(t and not b for b, t in zip(passed["base"], passed["tuned"], strict=True))
    lost = sum(b and not t for b, t in zip(passed["base"], passed["tuned"], strict=True))
    assert lost == 0 and rows[("tuned", "judge_pass")]["mcnemar_p"] == pytest.approx(
        min(1.0, 2 * binom.cdf(lost, gained + lost, 0.5)))
    vs = report["tasks"]["instruct_judged"]["models"]["tuned"]["vs_base"]
    both = [(b, t) for b, t in zip(BASE, TUNED, strict=True) if b is not None and t is not None]
    assert (vs["better"], vs["same"], vs["worse"]) == (sum(t > b for b, t in both), sum(t == b for b, t in both),
                                                       sum(t < b for b, t in both)) == (27, 11, 1)
    dist = report["tasks"]["instruct_judged"]["models"]["base"]["distribution"]
    assert dist == {"1": BASE.count(1), "2": BASE.count(2), "3": BASE.count(3), "4": 0, "5": 0, "unscored": 1}
    md = (out / "summary.md").read_text()
    assert "## instruct_judged (41 documents, scored 1-5 per document)" in md and "| tuned | " in md
    assert "Wilcoxon" in md and "Score distribution" in md and "27 / 11 / 1" in md
    assert (out / "bars_instruct_judged.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "confusion_instruct_judged.png").exists()
    header = (out / "summary.csv").read_text().splitlines()[0]
    assert header == "model,task,metric,value,ci_low,ci_high,delta_vs_base,mcnemar_p,wilcoxon_p,n,unit,ci_method"
    result = CliRunner().invoke(app, ["compare", str(d / "base"), str(d / "tuned"), "--out", str(tmp_path / "r")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "judge_score" in result.output and "Wilcoxon p" in result.output


def test_compare_refuses_another_judge(runs, tmp_path):
    from cotharness.compare import compare

    d = runs["dir"]
    with pytest.raises(ValueError, match=r"differ on document 0 \(id 'i01'\) in judge_model: 'judge-a' vs 'judge-b'"):
        compare([d / "base", d / "other_judge"], tmp_path / "x")
