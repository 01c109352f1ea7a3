"""The catalogue of user mistakes of ``cotharness datagen ...``: every command, every kind of mistake,
each one ``error:`` line before any request is sent or any model loaded, and nothing written.

Nothing here reaches the network: the mistral cases fail before a request (a shape, a name, a number,
a file), point ``--server-url`` at a closed local port, or leave ``MISTRAL_API_KEY`` empty.
"""

from __future__ import annotations

import pytest

import catalogue
from catalogue import Case

NOWHERE = ["--server-url", "http://127.0.0.1:9"]  # a closed port: never reached, every case fails before
NO_KEY = {"MISTRAL_API_KEY": ""}
THOUGHTS = ["datagen", "thoughts", "--input", "{data}", "--out", "t.jsonl"]
AUGMENT = ["datagen", "backtranslate", "augment", "--input", "responses.jsonl", "--out", "pairs.jsonl"]
CURATE = ["datagen", "curate", "--input", "pairs.jsonl", "--out", "kept.jsonl"]
RESPONSES = {"responses.jsonl": '{"response": "Boil the water first."}\n'}
PAIRS = {"pairs.jsonl": '{"id": "a", "instruction": "How?", "response": "Boil the water first."}\n'}
SEED_PAIRS = {"seed.jsonl": '{"instruction": "How?", "response": "Boil the water first."}\n'}
OLD_RUN = "an earlier run's files"

AREA = "Data generation (`cotharness datagen`)"

CASES = [
    # the command itself
    Case("datagen-unknown-command", ["datagen", "thougts"], 2, "Did you mean 'thoughts'",
         "Correct the command's name (`cotharness datagen --help` lists them)."),
    Case("datagen-unknown-option", [*THOUGHTS, "--inptu", "x"], 2, "No such option: --inptu",
         "Correct the option's name (the message names the closest)."),
    Case("datagen-missing-option", ["datagen", "thoughts", "--out", "t.jsonl"], 2, "Missing option '--input'",
         "Give the option."),
    # thoughts: who answers
    Case("thoughts-missing-input", ["datagen", "thoughts", "--input", "nope.csv", "--out", "t.jsonl", *NOWHERE], 2,
         "nope.csv: no such file", "Check the --input path."),
    Case("thoughts-missing-column", ["datagen", "thoughts", "--input", "bad.csv", "--out", "t.jsonl", *NOWHERE], 2,
         "missing column(s) ['hypothesis']", "Rename the column to the task's field, or use another --task.",
         files={"bad.csv": "id,premise,hypo,label\nr1,A man sleeps.,A person sleeps.,1\n"}),
    Case("thoughts-unknown-label-column", [*THOUGHTS, "--label-column", "lable", *NOWHERE], 2,
         "did you mean 'label'", "Name a column the file has (or leave --label-column out for unlabelled rows)."),
    Case("thoughts-unknown-task", [*THOUGHTS, "--task", "nli_ct", *NOWHERE], 2, "did you mean 'nli_cot'",
         "Use one of the tasks the message lists."),
    Case("thoughts-unknown-backend", [*THOUGHTS, "--backend", "mistrl"], 2, "did you mean 'mistral'",
         "Use mistral, mistral-batch or hf."),
    Case("thoughts-missing-api-key", THOUGHTS, 2, "MISTRAL_API_KEY is not set",
         "Set MISTRAL_API_KEY (environment or .env), or pass --server-url for a server that needs none.",
         env=NO_KEY),
    Case("thoughts-batch-missing-api-key", [*THOUGHTS, "--backend", "mistral-batch"], 2, "MISTRAL_API_KEY is not set",
         "Set MISTRAL_API_KEY: the Batch API needs it.", env=NO_KEY),
    Case("thoughts-server-url-without-scheme", [*THOUGHTS, "--server-url", "127.0.0.1:8000"], 2,
         "e.g. http://127.0.0.1:8000", "Write the scheme: --server-url http://HOST:PORT."),
    Case("thoughts-concurrency-zero", [*THOUGHTS, "--concurrency", "0", *NOWHERE], 2, "'--concurrency'",
         "Give at least 1 request in flight."),
    Case("thoughts-temperature-negative", [*THOUGHTS, "--temperature", "-1", *NOWHERE], 2, "'--temperature'",
         "Give a temperature from 0 to 2."),
    Case("thoughts-concurrency-with-local-model", [*THOUGHTS, "--backend", "hf", "--model", "{tiny}",
                                                   "--concurrency", "4"], 2, "takes --batch-size",
         "A local model's batch is --batch-size; --concurrency is for servers."),
    Case("thoughts-batch-size-with-server", [*THOUGHTS, "--batch-size", "4", *NOWHERE], 2,
         "--batch-size goes with a local model", "Leave --batch-size out, or use --backend hf --model DIR."),
    Case("thoughts-adapter-with-server", [*THOUGHTS, "--adapter", "{adapter}", *NOWHERE], 2,
         "--adapter goes with a local model", "Use --backend hf --model DIR --adapter DIR."),
    Case("thoughts-local-model-not-found", [*THOUGHTS, "--backend", "hf", "--model", "./no-model"], 2,
         "--model ./no-model: does not exist", "Give the local model's directory (e.g. `cotharness tiny-model`)."),
    Case("thoughts-server-url-with-local-model", [*THOUGHTS, "--backend", "hf", "--model", "{tiny}", *NOWHERE], 2,
         "--server-url goes with --backend mistral", "Drop --server-url: a local model runs in this process."),
    Case("thoughts-out-not-jsonl", ["datagen", "thoughts", "--input", "{data}", "--out", "t.csv", *NOWHERE], 2,
         "name it *.jsonl", "Name the output *.jsonl."),
    # score, reflect
    Case("reflect-input-without-gold", ["datagen", "reflect", "--input", "{data}", "--out", "r.jsonl", *NOWHERE], 2,
         "missing column(s) ['thought_process', 'predicted_label', 'true_label']",
         "Give reflect the output of `datagen thoughts` on labelled rows."),
    Case("score-input-not-thoughts", ["datagen", "score", "--input", "{data}", "--out", "s.jsonl", *NOWHERE], 2,
         "score reads the output of `cotharness datagen thoughts`", "Give score a thoughts file."),
    Case("score-unknown-response-format", ["datagen", "score", "--input", "{data}", "--out", "s.jsonl",
                                           "--response-format", "xml", *NOWHERE], 2,
         "--response-format 'xml' is not one of", "Use json_object, json_schema or none."),
    Case("reflect-top-p-above-one", ["datagen", "reflect", "--input", "{data}", "--out", "r.jsonl", "--top-p", "1.5",
                                     *NOWHERE], 2, "'--top-p'", "Give a top-p above 0, at most 1."),
    Case("thoughts-max-cost-without-price", [*THOUGHTS, "--model", "my-model", "--max-cost", "1", *NOWHERE], 2,
         "--max-cost needs the price of 'my-model'", "Add the model to the price table, or pass --prices FILE."),
    # prepare
    Case("prepare-missing-thoughts", ["datagen", "prepare", "--thoughts", "nope.jsonl", "--out", "sft"], 2,
         "nope.jsonl: no such file", "Give the output of `datagen thoughts`."),
    Case("prepare-existing-output", ["datagen", "prepare", "--thoughts", "{data}", "--out", "sft"], 2, OLD_RUN,
         "Pass --force to replace it (other ablations' folders are removed), or another --out.",
         files={"sft/correct_only/train.jsonl": "{}\n", "sft/manifest.json": "{}\n"}),
    Case("prepare-unknown-task", ["datagen", "prepare", "--thoughts", "{data}", "--task", "puzzle"], 2,
         "did you mean 'puzzte'", "Use one of the tasks the message lists."),
    Case("prepare-min-score-out-of-range", ["datagen", "prepare", "--thoughts", "{data}", "--min-score", "9"], 2,
         "'--min-score'", "Give a judge score from 1 to 5."),
    # synthetic, puzzles, tools
    Case("synthetic-negative-rows", ["datagen", "synthetic", "--out", "syn", "--train", "-5"], 2, "'--train'",
         "Give 0 or more rows per split."),
    Case("synthetic-existing-output", ["datagen", "synthetic", "--out", "syn", "--train", "10"], 2, OLD_RUN,
         "Pass --force to replace them, or another --out.", files={"syn/train.jsonl": "{}\n"}),
    Case("synthetic-out-is-a-file-name", ["datagen", "synthetic", "--out", "syn.jsonl"], 2, "name the folder",
         "--out is a folder: train.jsonl, dev.jsonl, test.jsonl and manifest.json go in it."),
    Case("puzzles-old-single-file-spelling", ["datagen", "puzzles", "--split", "train", "--n", "10", "--out", "pz"],
         2, "--out DIR --train N --dev N --test N", "Give a row count per split."),
    Case("puzzles-no-rows", ["datagen", "puzzles", "--out", "pz", "--train", "0", "--dev", "0", "--test", "0"], 2,
         "nothing to write", "Give a split some rows."),
    Case("puzzles-existing-output", ["datagen", "puzzles", "--out", "pz", "--train", "3"], 2, OLD_RUN,
         "Pass --force to replace them, or another --out.", files={"pz/manifest.json": "{}\n"}),
    Case("tools-existing-output", ["datagen", "tools", "--out", "tools"], 2, OLD_RUN,
         "Pass --force to replace them, or another --out.", files={"tools/test.jsonl": "{}\n"}),
    Case("tools-per-tool-zero", ["datagen", "tools", "--out", "tools", "--per-tool", "0"], 2, "'--per-tool'",
         "Give at least 1 request per tool."),
    Case("tools-from-db-without-query", ["datagen", "tools", "--out", "tools", "--from-db", "sqlite:///x.db"], 2,
         "--from-db and --query go together", "Give the SELECT that reads the logged requests."),
    # backtranslate inverse, augment; curate
    Case("inverse-missing-input", ["datagen", "backtranslate", "inverse", "--input", "nope.jsonl", "--out", "bw"], 2,
         "nope.jsonl: no such file", "Check the --input path."),
    Case("inverse-existing-output", ["datagen", "backtranslate", "inverse", "--input", "seed.jsonl", "--out", "bw"],
         2, OLD_RUN, "Pass --force to replace them, or another --out.",
         files={**SEED_PAIRS, "bw/train.jsonl": "{}\n"}),
    Case("inverse-dev-fraction-one", ["datagen", "backtranslate", "inverse", "--input", "seed.jsonl", "--out", "bw",
                                      "--dev-fraction", "1"], 2, "'--dev-fraction'", "Give a share below 1.",
         files=SEED_PAIRS),
    Case("augment-bad-column", [*AUGMENT, "--model", "m", "--response-column", "text", *NOWHERE], 2,
         "no column 'text'", "Name the column that holds the responses.", files=RESPONSES),
    Case("augment-without-model", AUGMENT, 2, "--model is required",
         "Give --model NAME (server or API) or --backend hf --model DIR.", files=RESPONSES),
    Case("augment-old-local-model-and-model", [*AUGMENT, "--model", "m", "--local-model", "{tiny}"], 2,
         "old spelling of --backend hf --model DIR", "Give the local model once: --backend hf --model DIR.",
         files=RESPONSES),
    Case("augment-local-model-not-found", [*AUGMENT, "--backend", "hf", "--model", "./no-model"], 2,
         "--model ./no-model: does not exist", "Give the local model's directory.", files=RESPONSES),
    Case("augment-adapter-not-found", [*AUGMENT, "--backend", "hf", "--model", "{tiny}", "--adapter", "runs/x/no-run"], 2,
         "--adapter runs/x/no-run: does not exist", "Give the `cotharness train` run's directory.", files=RESPONSES),
    Case("augment-missing-api-key", [*AUGMENT, "--model", "backward"], 2, "MISTRAL_API_KEY is not set",
         "Set MISTRAL_API_KEY, or pass --server-url.", files=RESPONSES, env=NO_KEY),
    Case("augment-batch-size-zero", [*AUGMENT, "--backend", "hf", "--model", "{tiny}", "--batch-size", "0"], 2,
         "'--batch-size'", "Give at least 1 prompt per batch.", files=RESPONSES),
    Case("curate-threshold-out-of-range", [*CURATE, "--threshold", "7", *NOWHERE], 2, "'--threshold'",
         "Give a score from 1 to 5.", files=PAIRS),
    Case("curate-server-url-without-scheme", [*CURATE, "--server-url", "localhost:8000"], 2,
         "e.g. http://localhost:8000", "Write the scheme: --server-url http://HOST:PORT.", files=PAIRS),
    Case("curate-local-judge-not-found", [*CURATE, "--backend", "hf", "--model", "./no-judge"], 2,
         "--model ./no-judge: does not exist", "Give the local judge's directory.", files=PAIRS),
    Case("curate-out-not-jsonl", ["datagen", "curate", "--input", "pairs.jsonl", "--out", "kept.txt", *NOWHERE], 2,
         "name it *.jsonl", "Name the output *.jsonl.", files=PAIRS),
    Case("curate-missing-api-key", CURATE, 2, "MISTRAL_API_KEY is not set",
         "Set MISTRAL_API_KEY, or pass --server-url.", files=PAIRS, env=NO_KEY),
    Case("curate-unknown-backend", [*CURATE, "--backend", "vllm"], 2, "is not one of mistral, mistral-batch, hf",
         "Use mistral --server-url URL for a vLLM server.", files=PAIRS),
]


def test_every_datagen_command_has_a_row():
    commands = {"thoughts", "score", "reflect", "prepare", "synthetic", "puzzles", "tools", "curate", "inverse",
                "augment"}
    covered = {a for case in CASES for a in case.argv[1:3]}
    assert commands <= covered, commands - covered
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_catalogue(case, tmp_path, tiny_model, lora_adapter):
    catalogue.check(case, tmp_path / "case", tiny_model, lora_adapter)
