"""The plugin promise: a task is one folder under harness_tasks/ plus one template under prompts/.

Nothing registers a task anywhere else: lm-eval finds its YAMLs, ``get_task`` its spec, and a YAML
refers only to its own folder's code and to the shared metrics.
"""

import re

import prompts
from harness_tasks.tasks import TASKS_DIR, get_task, schema_for, task_names

SHARED = ("harness_tasks.metrics.",)


def test_every_task_has_a_template_and_is_found_by_name():
    names = task_names()
    assert {"nli_cot", "puzzte", "puzzte_3way", "tool_select"} <= set(names)
    for name in names:
        spec = get_task(name)
        assert spec.name == name
        assert prompts.template_path(spec.template).is_file()
        assert schema_for(name) is spec.schema


def test_yamls_use_only_their_own_folder_and_shared_metrics():
    yamls = sorted(TASKS_DIR.glob("*/*.yaml"))
    assert len(yamls) >= 5
    for path in yamls:
        if path.parent.name == "tool_select" and path.name == "tools.yaml":
            continue  # the tools declaration, not an lm-eval task
        refs = re.findall(r"!function\s+([\w.]+)", path.read_text(encoding="utf-8"))
        assert refs, path
        own = f"harness_tasks.{path.parent.name}."
        assert all(r.startswith(own) or r.startswith(SHARED) for r in refs), (path, refs)


def test_lm_eval_finds_every_task_yaml():
    from lm_eval.tasks import TaskManager

    found = set(TaskManager(include_path=str(TASKS_DIR)).all_tasks)
    declared = {re.search(r"^task:\s*(\S+)", p.read_text(encoding="utf-8"), re.M).group(1)
                for p in TASKS_DIR.glob("*/*.yaml") if p.name != "tools.yaml"}
    assert declared and declared <= found
