"""The one grammar of `cotharness datagen`: folders of split files with a manifest, refused over an
earlier run unless --force; who answers (--backend, --server-url, --concurrency, --batch-size) checked
before any request or model load."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cotharness.cli import app
from datagen.engine.cli_checks import UsageError, backend_settings, server_url


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_synthetic_refuses_an_earlier_run_and_force_leaves_only_what_the_manifest_names(tmp_path):
    out = tmp_path / "syn"
    assert invoke("datagen", "synthetic", "--out", out, "--train", 20, "--dev", 4, "--test", 4).exit_code == 0
    before = (out / "train.jsonl").read_bytes()
    again = invoke("datagen", "synthetic", "--out", out, "--train", 10)
    assert again.exit_code == 2 and "pass --force" in again.output
    assert (out / "train.jsonl").read_bytes() == before  # the 20-row file is still there
    forced = invoke("datagen", "synthetic", "--out", out, "--train", 10, "--dev", 0, "--test", 2, "--force")
    assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.jsonl", "train.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"] == {"train": 10, "dev": 0, "test": 2, "seed": 0}
    assert {k: v["rows"] for k, v in manifest["outputs"].items()} == {"train.jsonl": 10, "test.jsonl": 2}


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "localhost:8000", "ftp://host", "http://", "http://h:port"])
def test_a_server_url_without_scheme_or_host_is_refused(url):
    with pytest.raises(UsageError, match="--server-url"):
        server_url(url)


def test_server_urls_that_work_pass():
    for url in (None, "http://localhost:8000", "https://api.mistral.ai", "http://127.0.0.1:9/v1"):
        server_url(url)


def test_concurrency_and_batch_size_mean_one_thing(tiny_model):
    assert backend_settings("mistral", "m", None, concurrency=None, batch_size=None, adapter=None,
                            load_in_4bit=False, device=None) == (8, {})
    assert backend_settings("mistral-batch", "m", None, concurrency=3, batch_size=None, adapter=None,
                            load_in_4bit=False, device=None, poll_interval=1.0) == (3, {"poll_interval": 1.0})
    # a local model keeps a batch of requests in flight, so that each generate call fills
    in_flight, args = backend_settings("hf", str(tiny_model), None, concurrency=None, batch_size=5, adapter=None,
                                       load_in_4bit=False, device="cpu")
    assert in_flight == 5 and args["batch_size"] == 5 and args["device"] == "cpu"
    with pytest.raises(UsageError, match="takes --batch-size"):
        backend_settings("hf", str(tiny_model), None, concurrency=4, batch_size=None, adapter=None,
                         load_in_4bit=False, device=None)
    with pytest.raises(UsageError, match="--device, --batch-size go with a local model"):
        backend_settings("mistral", "m", None, concurrency=None, batch_size=2, adapter=None, load_in_4bit=False,
                         device="cpu")


def test_the_old_local_model_spelling_still_works_and_says_its_new_name(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.jsonl").write_text('{"response": "Boil the water first."}\n')
    old = invoke("datagen", "backtranslate", "augment", "--input", "r.jsonl", "--out", "p.jsonl", "--local-model",
                 tiny_model, "--dry-run")
    new = invoke("datagen", "backtranslate", "augment", "--input", "r.jsonl", "--out", "p.jsonl", "--backend", "hf",
                 "--model", tiny_model, "--dry-run")
    assert old.exit_code == new.exit_code == 0, old.output + new.output
    note, _, rest = old.stderr.partition("\n")
    assert note == "note: --local-model is renamed: --backend hf --model DIR"
    assert rest == new.stderr and "1 request(s) to send" in rest  # the same requests: same endpoint, same hash
    assert not (tmp_path / "p.jsonl").exists()
