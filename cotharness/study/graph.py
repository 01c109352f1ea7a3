"""A study config expanded into stages, in dependency order.

Each stage carries the resolved config that will be handed to its step function, as a plain JSON-able
dict (a datagen stage: ``datagen.engine.pipeline.StageRun``'s fields; prepare: ``PrepareRun``'s; train:
the fully resolved ``TrainConfig``; eval: the lm-eval run; compare: ``cotharness.compare.compare``'s
arguments), its input files (the study's own, or other stages' outputs), its outputs and the prompt
templates it renders. Every output lies under ``<root>/<name>/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cotharness.study.config import StudyConfig, StudyError, _suggest, project_file
from cotharness.study.sweep import nested
from cotharness.study.sweep import runs as training_runs
from harness_tasks.yaml_files import merge

KINDS = ("tiny_base", "synthetic", "thoughts", "score", "reflect", "teacher_test", "prepare", "train", "eval", "compare",
         "inverse", "augment", "curate")
# prepare's folder per ablation (datagen/teacher/prepare.py ABLATIONS)
PREPARE_FOLDERS = {"correct": "correct_only", "reflected": "correct_reflected", "all": "all"}
TRAIN_OUTPUTS = ("run.json", "adapter_model.safetensors")  # trainer/train.py RUN_FILE, ADAPTER_FILES
SPLITS = ("train", "dev", "test")
BACKWARD_RUN = "backward"  # the backward model's training: train/backward, runs/backward/
# a backtranslation study's forward training config and evaluation unless the study names others
SELF_INSTRUCT_CONFIG = "configs/train/self_instruct.yaml"
JUDGED_TASK = "instruct_judged"


@dataclass
class Stage:
    id: str
    kind: str
    config: dict
    inputs: dict[str, str] = field(default_factory=dict)
    """input name -> path"""
    produced_by: dict[str, str] = field(default_factory=dict)
    """input name -> the stage that writes it (inputs absent here are the study's own files)"""
    outputs: list[str] = field(default_factory=list)
    templates: tuple[str, ...] = ()

    @property
    def dependencies(self) -> list[str]:
        return sorted(set(self.produced_by.values()))


def _datagen_templates(stage: str, task: str) -> tuple[str, ...]:
    """The templates a teacher stage renders: its own (as its manifest records them) and its task's."""
    from datagen.teacher.stages import STAGES
    from harness_tasks.tasks import get_task

    spec = get_task(task)
    return (*STAGES[stage](spec).templates, spec.template)


def _task_templates(tasks: list[str]) -> tuple[str, ...]:
    from harness_tasks.tasks import get_task

    out = []
    for name in tasks:
        try:
            out.append(get_task(name).template)
        except KeyError:  # an lm-eval task name of a folder (nli_direct): its YAML, covered by the version
            continue
    return tuple(sorted(set(out)))


def build(study: StudyConfig, root: Path | str = "studies", path: Path | str = "study") -> list[Stage]:
    """The stages of ``study`` (read from ``path``, for messages) with outputs under ``root/<name>/``."""
    home = Path(root) / study.name
    stages: list[Stage] = []
    teacher = study.teacher

    def out(*parts: str) -> str:
        return str(home.joinpath(*parts))

    def datagen(kind: str, stage: str, model: str, source: str, source_stage: str | None, dest: str,
                limit: int | None) -> Stage:
        backend_args = {"batch_size": teacher.batch_size} if teacher.backend == "hf" and teacher.batch_size else {}
        config = {"stage": stage, "input": source, "out": dest, "model": model, "backend": teacher.backend,
                  "task": study.task, "server_url": teacher.server_url, "limit": limit,
                  "backend_args": backend_args,
                  "options": {"concurrency": teacher.concurrency, "max_cost": teacher.max_cost}}
        manifest = str(Path(dest).with_name(f"{Path(dest).name.removesuffix('.jsonl')}.manifest.json"))
        return Stage(kind, kind, config, {"input": source}, {"input": source_stage} if source_stage else {},
                     [dest, manifest], _datagen_templates(stage, study.task))

    # the study's own base model and data, when it makes them (the demo)
    tiny_base = None
    if study.tiny_base is not None:
        tb = study.tiny_base
        tiny_base = out("tiny-base")
        stages.append(Stage("tiny_base", "tiny_base", {"out": tiny_base, "shape": tb.shape.model_dump(),
                                                       "steps": tb.steps, "seed": tb.seed},
                            outputs=[out("tiny-base", "config.json"), out("tiny-base", "pretrain.json")]))
    test_file, test_producer = study.data.test_file, None
    if study.data.synthetic is not None:
        syn = study.data.synthetic
        splits = {s: out("data", f"{s}.jsonl") for s in SPLITS}
        stages.append(Stage("synthetic", "synthetic", {"out": out("data"), "sizes": {s: getattr(syn, s) for s in SPLITS},
                                                       "seed": syn.seed},
                            outputs=[*splits.values(), out("data", "manifest.json")]))
        test_file, test_producer = splits["test"], "synthetic"

    # the teacher: thoughts -> score -> reflect on the input pairs, and thoughts on the test file
    thoughts_out = None
    if teacher is not None and study.data.sft is None:
        previous, previous_stage = study.data.teacher_input, None
        outputs = {"thoughts": "thoughts.jsonl", "score": "scores.jsonl", "reflect": "reflections.jsonl"}
        for stage in ("thoughts", "score", "reflect"):
            if stage not in teacher.stages:
                continue
            model = {"thoughts": teacher.model, "score": teacher.score_model or teacher.model,
                     "reflect": teacher.reflect_model or teacher.model}[stage]
            made = datagen(stage, stage, model, previous, previous_stage, out("datagen", outputs[stage]), teacher.limit)
            stages.append(made)
            if stage != "reflect":  # reflect reads the scored rows if there are any; prepare the same
                previous, previous_stage = made.outputs[0], stage
        thoughts_out = (previous, previous_stage)
    if teacher is not None and study.evaluation.teacher:
        stages.append(datagen("teacher_test", "thoughts", teacher.model, study.data.test_file, None,
                              out("datagen", "teacher_test.jsonl"), study.evaluation.limit))

    # the SFT files of each ablation: prepare's, or given
    backtranslating = study.backtranslation is not None
    if backtranslating and "base" not in study.training.model_fields_set:
        base_config = project_file(SELF_INSTRUCT_CONFIG)
    else:
        base_config = project_file(study.training.base)
    if backtranslating:
        made = _backtranslation_stages(study, out, path)
        stages += made
        curate, augment = made[-1], made[-2]
        sft = {"curated": (curate.outputs[0], None, "curate"), "augmented": (augment.outputs[2], None, "augment")}
    elif study.data.synthetic is not None:
        sft = {"synthetic": (splits["train"], splits["dev"], "synthetic")}
    elif study.data.sft is not None:
        sft = {a: (study.data.sft[a].train, study.data.sft[a].dev, None) for a in study.ablations}
    else:
        reflect = next((s for s in stages if s.kind == "reflect"), None)
        config = {"thoughts": thoughts_out[0], "out": out("sft"),
                  "reflections": reflect.outputs[0] if reflect else None, "ablations": list(study.ablations),
                  "task": study.task, "dev_fraction": 0.1, "seed": 0, "min_score": teacher.min_score,
                  "tokenizer": None, "max_length": None, "train_config": str(base_config)}
        inputs = {"thoughts": thoughts_out[0], **({"reflections": reflect.outputs[0]} if reflect else {})}
        produced = {"thoughts": thoughts_out[1], **({"reflections": "reflect"} if reflect else {})}
        files = {a: (out("sft", PREPARE_FOLDERS[a], "train.jsonl"), out("sft", PREPARE_FOLDERS[a], "dev.jsonl"))
                 for a in study.ablations}
        stages.append(Stage("prepare", "prepare", config, inputs, produced,
                            [out("sft", "manifest.json"), *(p for pair in files.values() for p in pair)],
                            _task_templates([study.task])))
        sft = {a: (*files[a], "prepare") for a in study.ablations}

    # one training per ablation and sweep combination
    from trainer.config import ConfigError, load_config

    trained = {}
    for run in training_runs(study):
        train_file, eval_file, producer = sft[run.ablation]
        run_dir = out("runs", run.name)
        owned = {"output_dir": run_dir, "data": {"task": study.task, "train_file": train_file, "eval_file": eval_file},
                 **({"model": {"base_model": tiny_base}} if tiny_base else {})}
        try:
            cfg = load_config(base_config, merge(run.overrides, owned))
        except ConfigError as err:
            raise StudyError(f"{path}: training (run {run.name}): {err}") from None
        # a forward training without an eval file (self_instruct.yaml) has no such input
        inputs = {k: v for k, v in (("train_file", train_file), ("eval_file", eval_file)) if v is not None}
        produced = dict.fromkeys(inputs, producer) if producer else {}
        if tiny_base:
            inputs["base_model"], produced["base_model"] = tiny_base, "tiny_base"
        stage = Stage(f"train/{run.name}", "train", cfg.model_dump(mode="json"), inputs, produced,
                      [str(Path(run_dir, f)) for f in TRAIN_OUTPUTS], _task_templates([study.task]))
        stages.append(stage)
        trained[run.name] = (stage, cfg.model.base_model)

    # the evaluation matrix: base, baselines, every adapter (the teacher's row is teacher_test's output)
    ev = study.evaluation
    tasks = ev.tasks or ([JUDGED_TASK] if backtranslating else [study.task])
    default_base = next(iter(trained.values()))[1] if trained else None
    models: dict[str, tuple[str, str | None, str | None]] = {"base": (ev.base or default_base, None, None)}
    for name, model in ev.baselines.items():
        models[name] = (model, None, None)
    if ev.adapters:
        for name, (stage, base_model) in trained.items():
            models[name] = (base_model, stage.outputs[0].rsplit("/", 1)[0], stage.id)
    rows = list(models) + (["teacher"] if ev.teacher else [])
    again = sorted({r for r in rows if rows.count(r) > 1})
    if again:
        raise StudyError(f"{path}: evaluation: two rows are named {again[0]!r} (base, the baselines, 'teacher' and "
                         "the training runs share one namespace)")
    evals = []
    for name, (pretrained, peft, producer) in models.items():
        if not pretrained:
            raise StudyError(f"{path}: evaluation.base: missing (no training run to take model.base_model from)")
        config = {"name": name, "model": "hf", "pretrained": pretrained, "peft": peft, "tasks": tasks,
                  "model_args": dict(ev.model_args), "gen_kwargs": dict(ev.gen_kwargs), "limit": ev.limit,
                  "batch_size": ev.batch_size, "device": ev.device, "test_file": test_file,
                  "output_path": out("eval", name), **({"metadata": dict(ev.metadata)} if ev.metadata else {})}
        inputs = {"test_file": test_file, **({"adapter": peft} if peft else {})}
        produced = {**({"adapter": producer} if producer else {}), **({"test_file": test_producer} if test_producer else {})}
        if tiny_base and pretrained == tiny_base:
            inputs["base_model"], produced["base_model"] = tiny_base, "tiny_base"
        stage = Stage(f"eval/{name}", "eval", config, inputs, produced, [out("eval", name)], _task_templates(tasks))
        stages.append(stage)
        evals.append(stage)

    # the comparison: base first (compare's deltas are against the first run)
    for key in ("base", "primary"):
        row = getattr(study.comparison, key)
        if row is not None and row not in rows:
            raise StudyError(f"{path}: comparison.{key}: {row!r} is not a row of this study ({', '.join(rows)})"
                             f"{_suggest(row, rows)}")
    ordered = sorted(rows, key=lambda r: r != study.comparison.base)
    paths = {s.config["name"]: s.config["output_path"] for s in evals}
    teacher_test = next((s for s in stages if s.kind == "teacher_test"), None)
    if teacher_test:
        paths["teacher"] = teacher_test.outputs[0]
    producers = {s.config["name"]: s.id for s in evals} | ({"teacher": "teacher_test"} if teacher_test else {})
    # CompareRun's fields (the first run is the base), and the row the report singles out
    config = {"runs": [paths[r] for r in ordered], "out": out("compare"), "names": ordered, "seed": 0,
              "teacher_task": study.task, "intersect": False, "primary": study.comparison.primary}
    stages.append(Stage("compare", "compare", config, {r: paths[r] for r in ordered},
                        {r: producers[r] for r in ordered}, [out("compare", "summary.md"), out("compare", "summary.json")]))
    _check_order(stages)
    return stages


def _backtranslation_stages(study: StudyConfig, out, path) -> list[Stage]:
    """inverse -> train/backward -> augment -> curate: the seed pairs as backward training rows, the backward
    model, its instruction for every unlabelled response, the judge's scores (``curated`` keeps the pairs
    rated >= threshold; augment also writes every pair that got an instruction: ``augmented``)."""
    from datagen.backtranslate import settings as backtranslate_settings
    from datagen.backtranslate.curate import scores_path
    from harness_tasks.data_files import DataFileError
    from trainer.config import ConfigError, load_config

    bt = study.backtranslation
    folder = out("backtranslate")
    inverse = Stage("inverse", "inverse", {"input": bt.seed_pairs, "out": out("backtranslate", "backward"),
                                           "instruction_column": "instruction", "response_column": "response",
                                           "dev_fraction": bt.dev_fraction, "seed": bt.seed},
                    {"seed_pairs": bt.seed_pairs}, {},
                    [out("backtranslate", "backward", f) for f in ("train.jsonl", "dev.jsonl", "manifest.json")],
                    _task_templates(["backward"]))
    run_dir = out("runs", BACKWARD_RUN)
    owned = {"output_dir": run_dir, "data": {"task": "backward", "train_file": inverse.outputs[0],
                                             "eval_file": inverse.outputs[1]}}
    overrides = merge(nested(study.training.set, "training.set"), nested(bt.backward_set, "backtranslation.backward_set"))
    try:
        cfg = load_config(project_file(bt.backward), merge(overrides, owned))
    except ConfigError as err:
        raise StudyError(f"{path}: backtranslation.backward (run {BACKWARD_RUN}): {err}") from None
    backward = Stage(f"train/{BACKWARD_RUN}", "train", cfg.model_dump(mode="json"),
                     {"train_file": inverse.outputs[0], "eval_file": inverse.outputs[1]},
                     {"train_file": "inverse", "eval_file": "inverse"},
                     [str(Path(run_dir, f)) for f in TRAIN_OUTPUTS], _task_templates(["backward"]))

    a, c = bt.augment, bt.curate
    try:  # every value the step will use, so that a changed settings file changes the identity
        sampling = backtranslate_settings.load(None, "augment", {k: getattr(a, k) for k in (
            "temperature", "top_p", "max_tokens", "seed", "max_reprompts", "batch_size", "concurrency")})[0]
        judging = backtranslate_settings.load(None, "curate", {k: getattr(c, k) for k in (
            "model", "threshold", "temperature", "max_tokens", "max_reprompts", "batch_size", "concurrency")})[0]
    except DataFileError as err:
        raise StudyError(f"{path}: backtranslation: {err}") from None
    local = a.backend == "hf"
    pairs = out("backtranslate", "pairs.jsonl")
    config = {"input": bt.responses, "out": pairs, "usable_out": out("backtranslate", "augmented.jsonl"),
              "model": a.model or (cfg.model.base_model if local else None), "backend": a.backend,
              "server_url": a.server_url, "adapter": run_dir if local else None, "load_in_4bit": a.load_in_4bit,
              "device": a.device, "limit": a.limit, "max_cost": a.max_cost,
              "batch_size": sampling.batch_size if local else None,
              "concurrency": None if local else sampling.concurrency,
              "settings": {k: getattr(sampling, k) for k in ("temperature", "top_p", "max_tokens", "seed",
                                                               "max_reprompts")}}
    inputs, produced = {"responses": bt.responses}, {}
    if local:  # the adapter the backward training writes; a served backward model is the server's business
        inputs["adapter"], produced["adapter"] = run_dir, backward.id
    augment = Stage("augment", "augment", config, inputs, produced,
                    [pairs, str(Path(folder, "pairs.manifest.json")), config["usable_out"]],
                    _task_templates(["backward"]))

    curated = out("backtranslate", "curated.jsonl")
    scores = scores_path(curated)
    local = c.backend == "hf"
    config = {"input": pairs, "out": curated, "backend": c.backend, "server_url": c.server_url,
              "max_cost": c.max_cost, "batch_size": judging.batch_size if local else None,
              "concurrency": None if local else judging.concurrency,
              "settings": {k: getattr(judging, k) for k in ("model", "threshold", "temperature", "max_tokens",
                                                              "max_reprompts")}}
    # outputs[1] is the pipeline's manifest (requests, tokens, cost), as for every datagen stage
    curate = Stage("curate", "curate", config, {"pairs": pairs}, {"pairs": "augment"},
                   [curated, str(scores.with_name(scores.name.removesuffix(".jsonl") + ".manifest.json")),
                    str(scores), str(Path(folder, "curated.manifest.json"))],
                   ("rate_pair_system", "rate_pair_user"))
    return [inverse, backward, augment, curate]


def _check_order(stages: list[Stage]) -> None:
    seen: set[str] = set()
    for stage in stages:
        missing = [d for d in stage.dependencies if d not in seen]
        if missing:  # a bug in build(), not a user's mistake
            raise AssertionError(f"stage {stage.id} comes before {missing}")
        seen.add(stage.id)
