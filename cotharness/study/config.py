"""The study config (``configs/study/<name>.yaml``), validated by pydantic.

Names, not paths: every output lands under ``studies/<name>/<stage>/``; the file names only its inputs
(the teacher's input pairs, the held-out test file, or ready SFT files) and the training config it
starts from. An unknown key is an error naming the file, the key path and the closest valid key.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness_tasks.errors import UserError
from harness_tasks.yaml_files import YamlFileError, read_yaml

PROJECT = Path(__file__).resolve().parents[2]
# prepare's ablations (datagen/teacher/prepare.py ABLATIONS: name -> folder); kept literal here so the
# schema reads on its own; tests/test_study_config.py checks the two agree
ABLATIONS = ("correct", "reflected", "all")
TEACHER_STAGES = ("thoughts", "score", "reflect")
# the backtranslation study's ablations: the judge's pairs rated >= threshold, or every augmented pair
# (Humpback's own comparison of self-curation against none)
BACKTRANSLATION_ABLATIONS = ("curated", "augmented")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class StudyError(UserError, ValueError):
    """A mistake in a study config: one line naming the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SftFiles(Section):
    train: str
    dev: str


class SyntheticData(Section):
    """The synthetic NLI splits (datagen/synthetic/nli.py), made by the study's ``synthetic`` stage into
    ``studies/<name>/data/``: the ``synthetic`` ablation trains on train/dev, every model is evaluated on test."""

    train: int = Field(ge=1)
    dev: int = Field(ge=1)
    test: int = Field(ge=1)
    seed: int = 0


class DataSection(Section):
    teacher_input: str | None = None
    """the pairs the teacher answers (CSV or JSONL with the task's fields and a gold label)"""
    test_file: str | None = None
    """the held-out test file every model is evaluated on (and the teacher answers, if evaluated)"""
    sft: dict[str, SftFiles] | None = None
    """ready SFT files by ablation name, instead of a teacher and ``prepare``"""
    synthetic: SyntheticData | None = None
    """the synthetic NLI splits, made by the study (instead of test_file, sft and a teacher)"""


class TinyShape(Section):
    hidden_size: int = Field(128, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(384, ge=8)


class TinyBaseSection(Section):
    """The embedded tiny model, built and pre-trained by the study's ``tiny_base`` stage into
    ``studies/<name>/tiny-base/`` (cotharness/tiny_pretrain.py): the base of every training and the
    ``base`` row of the evaluation."""

    shape: TinyShape = TinyShape()
    steps: int = Field(1000, ge=1)
    """pre-training steps on generic word comparisons"""
    seed: int = 0


class TeacherSection(Section):
    backend: Literal["mistral", "mistral-batch", "hf"] = "mistral"
    model: str
    """the model of the thoughts stage (and of the teacher's row in the comparison)"""
    score_model: str | None = None
    """the judge of the score stage; default: ``model``"""
    reflect_model: str | None = None
    """the stronger model of the reflect stage; default: ``model``"""
    stages: list[Literal["thoughts", "score", "reflect"]] = ["thoughts", "reflect"]
    server_url: str | None = None
    concurrency: int = Field(8, ge=1)
    """requests in flight (API backends)"""
    batch_size: int | None = Field(None, ge=1)
    """prompts per generate call (hf backend)"""
    limit: int | None = Field(None, ge=1)
    """the first N input rows only"""
    max_cost: float | None = Field(None, gt=0)
    """USD per stage run; a stage stops before exceeding it"""
    min_score: int | None = Field(None, ge=1, le=5)
    """prepare: keep rows the judge scored at least this (needs the score stage)"""


class TrainingSection(Section):
    base: str = "configs/train/default.yaml"
    """the training config every run starts from"""
    set: dict[str, Any] = {}
    """dotted keys over ``base`` for every run, e.g. ``training.learning_rate: 1.0e-4``"""
    per_ablation: dict[str, dict[str, Any]] = {}
    """ablation -> dotted keys for that ablation's runs only"""
    sweep: dict[str, list[Any]] = {}
    """dotted key -> values: every ablation trains once per combination (cartesian product)"""


class EvaluationSection(Section):
    base: str | None = None
    """hub id or path of the base model (row ``base``); default: the training config's ``model.base_model``"""
    baselines: dict[str, str] = {}
    """more rows by name: hub id or path, e.g. an instruct model evaluated with the same prompt"""
    teacher: bool = False
    """add the teacher's row: its thoughts on the test file (the ``teacher_test`` stage)"""
    adapters: bool = True
    """evaluate every training run's adapter on the base"""
    tasks: list[str] | None = None
    """lm-eval tasks; default: the study's task"""
    model_args: dict[str, Any] = {}
    """more lm-eval model_args for every model, e.g. ``load_in_4bit: true``"""
    gen_kwargs: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    """more lm-eval --metadata for every evaluation, e.g. instruct_judged's ``judge_model`` and ``judge_url``"""
    limit: int | None = Field(None, ge=1)
    batch_size: int | Literal["auto"] = "auto"
    device: str | None = None


class ComparisonSection(Section):
    base: str = "base"
    """the row the deltas are taken against"""
    primary: str | None = None
    """the row the report singles out (the primary ablation's run), if any"""


class SlurmStage(Section):
    """What one kind of stage asks SLURM for (``--executor slurm``)."""

    partition: str | None = None
    """default: the cluster's default partition"""
    gpus: int = Field(1, ge=1)
    """GPUs per job; a training with more than one runs one process per GPU (DDP)"""
    cpus: int = Field(8, ge=1)
    """CPUs per task"""
    mem_gb: int | None = Field(None, ge=1)
    timeout_min: int = Field(24 * 60, ge=1)
    additional: dict[str, Any] = {}
    """more sbatch options, e.g. ``{account: myproject, qos: high}``"""


class SlurmSection(Section):
    train: SlurmStage = SlurmStage()
    eval: SlurmStage = SlurmStage(timeout_min=4 * 60)
    datagen: SlurmStage = SlurmStage(timeout_min=12 * 60)
    """a local (hf) teacher's stages"""
    setup: list[str] = []
    """shell lines run before each job, e.g. ``module load cuda`` or ``source .venv/bin/activate``"""


class ExecutionSection(Section):
    """How stages run side by side (``study run --executor``); not part of any stage's identity."""

    gpus: list[int] | None = None
    """the GPUs the local executor hands out, one per device stage; default: every visible GPU"""
    api_stages: int = Field(4, ge=1)
    """API stages running at once (each keeps its own ``teacher.concurrency`` requests in flight)"""
    slurm: SlurmSection = SlurmSection()


class AugmentSection(Section):
    """The backward model writing an instruction per unlabelled response (``datagen backtranslate augment``);
    a setting left out takes ``configs/datagen/backtranslate.yaml``'s augment value."""

    backend: Literal["hf", "mistral", "mistral-batch"] = "hf"
    """hf: the backward adapter on its base, in this process; mistral(-batch): a server serving it"""
    model: str | None = None
    """hf: the base model (default: the backward training's ``model.base_model``); a server: the served name"""
    server_url: str | None = None
    load_in_4bit: bool = False
    device: str | None = None
    batch_size: int | None = Field(None, ge=1)
    """prompts per generate call (hf backend)"""
    concurrency: int | None = Field(None, ge=1)
    """requests in flight (a server)"""
    limit: int | None = Field(None, ge=1)
    """the first N responses only"""
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0)
    max_reprompts: int | None = Field(None, ge=0)
    max_cost: float | None = Field(None, gt=0)


class CurateSection(Section):
    """The judge rating each pair 1-5 (``datagen curate``); a setting left out takes
    ``configs/datagen/backtranslate.yaml``'s curate value."""

    backend: Literal["mistral", "mistral-batch", "hf"] = "mistral"
    model: str | None = None
    """the judge (default: the settings file's, mistral-large-latest)"""
    server_url: str | None = None
    threshold: int | None = Field(None, ge=1, le=5)
    """the ``curated`` ablation keeps the pairs rated at least this (default: the settings file's, 4)"""
    concurrency: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    """prompts per generate call (hf backend)"""
    temperature: float | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    max_reprompts: int | None = Field(None, ge=0)
    max_cost: float | None = Field(None, gt=0)
    """USD per run; the stage stops before exceeding it"""


class BacktranslationSection(Section):
    """Instruction backtranslation (Humpback): seed pairs -> backward model -> instructions for unlabelled
    responses -> a judge's curation -> the forward training of each ablation (``training:``)."""

    seed_pairs: str
    """(instruction, response) pairs, CSV or JSONL, the backward model is trained on"""
    responses: str
    """unlabelled responses (CSV or JSONL with a ``response`` column) the backward model writes instructions for"""
    dev_fraction: float = Field(0.05, gt=0, lt=1)
    """the share of distinct seed responses held out for the backward model's eval loss"""
    seed: int = 0
    """the dev split's seed"""
    backward: str = "configs/train/backward.yaml"
    """the backward model's training config (``training.set`` applies to it too; per_ablation and sweep do not)"""
    backward_set: dict[str, Any] = {}
    """dotted keys over ``backward`` for the backward training only"""
    augment: AugmentSection = AugmentSection()
    curate: CurateSection = CurateSection()


class StudyConfig(Section):
    name: str
    task: str
    data: DataSection
    tiny_base: TinyBaseSection | None = None
    teacher: TeacherSection | None = None
    backtranslation: BacktranslationSection | None = None
    ablations: list[str] = list(ABLATIONS)
    training: TrainingSection = TrainingSection()
    evaluation: EvaluationSection = EvaluationSection()
    comparison: ComparisonSection = ComparisonSection()
    execution: ExecutionSection = ExecutionSection()

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        if not NAME.fullmatch(self.name):
            raise ValueError(f"name {self.name!r}: letters, digits, '.', '_' and '-' only (it names studies/<name>/)")
        if self.backtranslation is not None and "ablations" not in self.model_fields_set:
            self.ablations = ["curated"]  # prepare's default ablations mean nothing here
        if not self.ablations:
            raise ValueError("ablations: name at least one")
        if len(set(self.ablations)) != len(self.ablations):
            raise ValueError(f"ablations: {self.ablations} names one twice")
        if self.backtranslation is not None:
            self._backtranslation()
        elif self.data.synthetic is not None:
            given = [k for k in ("teacher_input", "test_file", "sft") if getattr(self.data, k) is not None]
            if given or self.teacher is not None:
                raise ValueError(f"data.synthetic: the study makes its own data; leave out "
                                 f"{', '.join(f'data.{k}' for k in given) or 'the teacher: section'}")
            if self.ablations != ["synthetic"]:
                raise ValueError(f"ablations: with data.synthetic the one ablation is 'synthetic' (got {self.ablations})")
        elif self.data.test_file is None:
            raise ValueError("data.test_file: missing (required unless data.synthetic makes the splits)")
        elif self.data.sft is not None:
            missing = [a for a in self.ablations if a not in self.data.sft]
            if missing:
                raise ValueError(f"ablations: {missing} have no files under data.sft (it has {sorted(self.data.sft)})")
        else:
            if self.teacher is None:
                raise ValueError("no SFT data: give a teacher: section (and data.teacher_input) or data.sft files")
            if self.data.teacher_input is None:
                raise ValueError("teacher: needs data.teacher_input, the pairs it answers")
            wrong = [a for a in self.ablations if a not in ABLATIONS]
            if wrong:
                raise ValueError(f"ablations: {wrong[0]!r} is not one of prepare's ({', '.join(ABLATIONS)})"
                                 f"{_suggest(wrong[0], ABLATIONS)}")
            if "thoughts" not in self.teacher.stages:
                raise ValueError("teacher.stages: prepare needs the thoughts stage")
            if "reflected" in self.ablations and "reflect" not in self.teacher.stages:
                raise ValueError("ablations: 'reflected' needs 'reflect' in teacher.stages")
            if self.teacher.min_score is not None and "score" not in self.teacher.stages:
                raise ValueError("teacher.min_score needs 'score' in teacher.stages")
        unknown = [a for a in self.training.per_ablation if a not in self.ablations]
        if unknown:
            raise ValueError(f"training.per_ablation: {unknown[0]!r} is not an ablation of this study "
                             f"({', '.join(self.ablations)}){_suggest(unknown[0], self.ablations)}")
        empty = [k for k, v in self.training.sweep.items() if not v]
        if empty:
            raise ValueError(f"training.sweep.{empty[0]}: give at least one value")
        if self.tiny_base is not None:
            if self.evaluation.base is not None:
                raise ValueError("evaluation.base: the study's tiny_base is the base; leave evaluation.base out")
            keys = [*self.training.set, *self.training.sweep,
                    *(k for over in self.training.per_ablation.values() for k in over)]
            if "model.base_model" in keys:
                raise ValueError("training: model.base_model is the study's tiny_base; do not set it")
        if self.execution.slurm.eval.gpus > 1 and not self.evaluation.model_args.get("parallelize"):
            raise ValueError("execution.slurm.eval.gpus: an evaluation uses one GPU unless evaluation.model_args "
                             "has parallelize: true (the model split across the job's GPUs)")
        if self.evaluation.teacher and self.teacher is None:
            raise ValueError("evaluation.teacher: the study has no teacher: section")
        return self

    def _backtranslation(self) -> None:
        """A backtranslation study makes its SFT data itself: no teacher, prepare or given SFT files."""
        given = [f"data.{k}" for k in ("teacher_input", "sft", "synthetic") if getattr(self.data, k) is not None]
        given += [f"{k}:" for k in ("teacher", "tiny_base") if getattr(self, k) is not None]
        if given:
            raise ValueError(f"backtranslation: the study makes its training data from seed pairs and responses; "
                             f"leave out {', '.join(given)} (they belong to the teacher / prepare studies)")
        if self.task != "instruct":
            raise ValueError(f"task: a backtranslation study trains the 'instruct' task (got {self.task!r})")
        wrong = [a for a in self.ablations if a not in BACKTRANSLATION_ABLATIONS]
        if wrong:
            raise ValueError(f"ablations: {wrong[0]!r} is not a backtranslation ablation "
                             f"({', '.join(BACKTRANSLATION_ABLATIONS)}){_suggest(wrong[0], BACKTRANSLATION_ABLATIONS)}")
        if self.data.test_file is None:
            raise ValueError("data.test_file: missing: the held-out instructions every model answers "
                             "(e.g. harness_tasks/instruct/data/sample.jsonl)")
        augment = self.backtranslation.augment
        if augment.backend != "hf" and not augment.model:
            raise ValueError(f"backtranslation.augment.model: the backward model's name on the server "
                             f"(backend {augment.backend}); with backend hf it defaults to the backward base")
        if augment.backend == "hf" and (augment.server_url or augment.concurrency):
            raise ValueError("backtranslation.augment: server_url and concurrency go with a server backend; "
                             "backend hf takes batch_size")
        if augment.backend != "hf" and (augment.batch_size or augment.load_in_4bit or augment.device):
            raise ValueError("backtranslation.augment: batch_size, load_in_4bit and device go with backend hf")
        curate = self.backtranslation.curate
        if curate.backend == "hf" and (curate.server_url or curate.concurrency):
            raise ValueError("backtranslation.curate: server_url and concurrency go with a server backend; "
                             "backend hf takes batch_size")
        if curate.backend != "hf" and curate.batch_size:
            raise ValueError("backtranslation.curate.batch_size goes with backend hf")


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(str(key), sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _section(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model at ``loc`` inside StudyConfig (through dict values such as ``data.sft.<name>``)."""
    model: Any = StudyConfig
    for part in loc:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(part)
            if field is None:
                return None
            model = field.annotation
        model = _model_in(model)
        if model is None:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _model_in(annotation) -> Any:
    """The BaseModel an annotation holds: itself, the non-None side of ``X | None``, a dict's values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def explain(err: ValidationError, path: Path | str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            section = _section(tuple(p for p in e["loc"][:-1] if isinstance(p, str)))
            valid = section.model_fields if section else {}
            lines.append(f"unknown key {loc!r}{_suggest(str(e['loc'][-1]), valid)}")
        elif e["type"] == "missing":
            lines.append(f"{loc}: missing (required)")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg}" if loc else msg)
    return f"{path}: " + "; ".join(lines)


def load_study(path: str | Path, overrides: dict | None = None) -> StudyConfig:
    """The study at ``path`` (with ``overrides`` merged over it, section by section), checked; raises
    StudyError naming the file and the key."""
    from harness_tasks.tasks import task_names
    from harness_tasks.yaml_files import merge

    path = Path(path)
    try:
        data = read_yaml(path)
    except YamlFileError as err:
        raise StudyError(str(err)) from None
    try:
        study = StudyConfig.model_validate(merge(data, overrides or {}))
    except ValidationError as err:
        raise StudyError(explain(err, path)) from None
    tasks = task_names()
    if study.task not in tasks:  # evaluation.tasks are lm-eval's names (nli_direct too): lm-eval checks them
        raise StudyError(f"{path}: task: {study.task!r} is not a task of this project ({', '.join(tasks)})"
                         f"{_suggest(study.task, tasks)}")
    return study


def project_file(path: str) -> Path:
    """A config path as written (relative to the working directory), else the project's own file of that
    path (``configs/train/...`` wherever the command runs)."""
    given = Path(path)
    if given.is_file() or given.is_absolute():
        return given
    own = PROJECT / given
    return own if own.is_file() else given
