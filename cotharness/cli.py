"""The ``cotharness`` command line, and its one error path.

Every command's mistakes end the same way (``App.main``): a user's mistake (a ``UserError`` raised
anywhere below, datagen and trainer included) or an option typo is ONE ``error:`` line on stderr and
exit 2 (1 for ``WorkFailed``); Ctrl-C is one ``interrupted:`` line, exit 130, saying what was kept
when the command raised ``KeyboardInterrupt("what was kept; how to continue")``; anything else is a
bug and keeps its plain traceback. ``--debug`` anywhere on the line, or ``COTHARNESS_DEBUG=1``, adds
the traceback to a user's error.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup, TyperOption

from harness_tasks.errors import DEBUG_ENV, UserError, debugging

STOPPED = "stopped by Ctrl-C"


def _say(prefix: str, message: str) -> None:
    from harness_tasks.secrets import redact

    # one line whatever the message holds: scripts and the catalogue of mistakes read exactly one
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    typer.echo(f"{prefix}: {redact(text)}", err=True)


def _option_message(err: typer.TyperException) -> str:
    """click's message for an option mistake, on one line with its did-you-mean and where help is."""
    possible = getattr(err, "possibilities", None)  # click's NoSuchOption carries its close matches
    if possible:
        message = f"{err.message}; did you mean {' or '.join(sorted(possible))}?"
    else:
        message = err.format_message()
    ctx = getattr(err, "ctx", None)
    return f"{message} (see {ctx.command_path} --help)" if ctx is not None else message


class App(TyperGroup):
    """The top-level group: runs the command line and turns what it raises into one line and an exit
    status (see the module's docstring). Tests that invoke ``app`` through typer's CliRunner go through
    the same path."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:  # a caller that handles exceptions itself
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        args = list(sys.argv[1:] if args is None else args)
        if "--debug" in args:  # also for the commands that say their own errors (datagen, trainer)
            os.environ[DEBUG_ENV] = "1"
        debug = debugging()
        args = [a for a in args if a != "--debug"]
        sys.exit(self._run(args, prog_name or "cotharness", debug))

    def _run(self, args: list[str], prog_name: str, debug: bool) -> int:
        # click's own main() would turn Ctrl-C into a bare exit 130 and rich-box every usage error
        try:
            with self.make_context(prog_name, args) as ctx:
                self.invoke(ctx)
            return 0
        except typer.Exit as done:
            return done.exit_code
        except typer.Abort:
            _say("error", "aborted")
            return 1
        except typer.TyperException as err:  # click's usage errors: unknown option, bad value, missing option
            if type(err).__name__ == "NoArgsIsHelpError":  # `cotharness datagen` alone: its help, as click shows it
                if err.format_message():
                    typer.echo(err.format_message())
            else:
                _say("error", _option_message(err))
            return err.exit_code
        except UserError as err:
            if debug:
                traceback.print_exc()
            _say("error", str(err))
            return err.exit_code
        except KeyboardInterrupt as err:
            # a command that knows what it kept says so in the exception: KeyboardInterrupt("...")
            _say("interrupted", str(err) if err.args else STOPPED)
            return 130
        except BrokenPipeError:  # `cotharness ... | head`: the reader has gone, nothing to say to it
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stderr at exit
            return 1

    # The trainer's, datagen's and the study's commands are imported when asked for (by name, for help, or
    # to suggest a near name for a typo), not at every start: `cotharness eval` does without them.
    def list_commands(self, ctx) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in LAZY if name not in self.commands)]

    def get_command(self, ctx, name: str):
        self._load(name)
        return super().get_command(ctx, name)

    def resolve_command(self, ctx, args):
        if args:
            self._load(args[0] if args[0] in self.commands or args[0] in LAZY else None)
        return super().resolve_command(ctx, args)

    def _load(self, name: str | None) -> None:
        """``name``'s command if it is still to be imported; None: all of them (a name not known)."""
        for lazy in [name] if name is not None else list(LAZY):
            if lazy in LAZY and lazy not in self.commands:
                command = LAZY[lazy]()
                command.name = lazy  # a sub-app's group has none of its own (help lists it by this)
                self.add_command(command, lazy)


def _flags_take_no_value() -> None:
    """typer 0.29's rich help shows every flag (``--help``, ``--intersect/--no-intersect``) with a
    ``<bool>`` value column, as if it took one; a flag takes none. Done once here for every sub-app
    (datagen's, trainer's) since the help option itself is built inside typer."""
    shown = TyperOption.display_type_rich
    if getattr(shown, "flags_take_no_value", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else shown(self, ctx)

    display_type_rich.flags_take_no_value = True
    TyperOption.display_type_rich = display_type_rich


_flags_take_no_value()

app = typer.Typer(cls=App, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Teach open LLMs to reason before they answer, and prove it with lm-eval.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"cotharness {version('cotharness')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help=f"Show the traceback of a user's error too (anywhere on the "
                                                       f"line, for any command; or {DEBUG_ENV}=1).")] = False,
):
    """Teach open LLMs to reason before they answer, and prove it with lm-eval."""
    # --debug is taken off the line before parsing (App.main), so that it works after a subcommand too;
    # it is declared here only to be listed in the help


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Option(help="Directory to write the model and tokenizer to.")],
    hidden_size: Annotated[int, typer.Option(min=8, help="Model width.")] = 64,
    layers: Annotated[int, typer.Option(min=1, help="Number of transformer layers.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed for the tokenizer corpus and the weights.")] = 0,
):
    """Build the embedded default model: a tiny Mistral-architecture LM + BPE tokenizer, offline."""
    from cotharness.tiny_model import build

    path = build(out, hidden_size=hidden_size, layers=layers, intermediate_size=3 * hidden_size, seed=seed)
    typer.echo(f"tiny model written to {path}")


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                        "help_option_names": []}, add_help_option=False)
def eval_(ctx: typer.Context):
    """lm_eval with this project's tasks, its inputs checked and load_in_4bit=True working.

    Takes any lm_eval arguments: cotharness eval --help lists them after what cotharness adds. Example: cotharness eval --tasks nli_cot --model_args pretrained=DIR,peft=ADAPTER,load_in_4bit=True
    """
    from cotharness.run_eval import main

    try:
        code = main(list(ctx.args))
    except KeyboardInterrupt:
        # lm-eval writes results (and its --use_cache answers) only once every request is answered
        raise KeyboardInterrupt("nothing of this evaluation was saved (lm-eval writes its results at the end); "
                                "rerun the same command") from None
    raise typer.Exit(code)


@app.command()
def demo(
    root: Annotated[Path, typer.Option(help="Where studies live: the demo's outputs go under ROOT/demo/.")] = Path("studies"),
    limit: Annotated[int, typer.Option(min=0, help="Evaluate only the first N test documents (0 = all).")] = 0,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the base's pre-training and of fine-tuning (the data stay fixed); default: the study's (0).",
        show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        help="Training config the demo's run starts from (its base model, data and output dir are the study's); "
             "default: the project's own configs/train/demo.yaml, wherever the command runs.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(hidden=True)] = None,
    work: Annotated[Path | None, typer.Option(hidden=True)] = None,
):
    """The demo study (configs/study/demo.yaml) on the tiny model, on a CPU: tiny base -> synthetic data -> LoRA
    training -> lm-eval on base and fine-tuned -> comparison -> report; fails unless fine-tuning adds 30 points
    with the fine-tuned CI above chance."""
    from cotharness.demo import run

    if out is not None or work is not None:
        raise UserError("--out and --work are gone: the demo is a study and everything it makes goes under "
                        "ROOT/demo/ (--root, default studies)")
    code, line = run(root=root, limit=limit or None, seed=seed, config=config,
                     say=lambda text: typer.echo(text))
    typer.echo(line, err=code != 0)
    raise typer.Exit(code)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(
        metavar="RUN",
        help="lm-eval --output_path directories (or one results_*.json of a directory that holds several), or a "
             "teacher's datagen thoughts .jsonl (matched to the first directory's documents); the first is the base.")],
    out: Annotated[Path, typer.Option(help="Where summary.{md,csv,json}, manifest.json and PNGs go.")],
    names: Annotated[str | None, typer.Option(help="Comma-separated display names, one per run.")] = None,
    teacher_task: Annotated[str, typer.Option(
        help="Task of a thoughts .jsonl that has no <name>.manifest.json beside it.")] = "nli_cot",
    intersect: Annotated[bool, typer.Option(
        help="Runs on different documents: compare on those all runs share (the report says how many each "
             "lost) instead of refusing.")] = False,
):
    """Compare lm-eval runs (and a teacher's thoughts file) on the same documents, with statistics.

    The tasks' own metrics with CIs, deltas against the first run, McNemar, confusion matrices, plots."""
    from cotharness.compare import CompareRun, print_table, run

    report = run(CompareRun(runs, out, names=names.split(",") if names else None, teacher_task=teacher_task,
                            intersect=intersect)).report
    for note in report["notes"]:
        typer.echo(f"note: {note}", err=True)
    print_table(report["rows"])
    typer.echo(f"report written to {out}/summary.md")


def _command(name: str):
    """The trainer's ``train`` or ``merge`` as a click command."""
    from trainer import cli as trainer_cli

    one = typer.Typer(add_completion=False)
    one.command(name)(getattr(trainer_cli, name))
    return typer.main.get_command(one)


def _export():
    from trainer import cli as trainer_cli

    export_app = typer.Typer(no_args_is_help=True, help="Export a fine-tuned adapter to run outside Python.")
    export_app.command("gguf")(trainer_cli.export_gguf)
    return typer.main.get_group(export_app)


def _datagen():
    from datagen.cli import app as datagen_app

    return typer.main.get_group(datagen_app)


def _study():
    from cotharness.study.cli import app as study_app

    return typer.main.get_group(study_app)


LAZY = {"train": lambda: _command("train"), "merge": lambda: _command("merge"), "export": _export,
        "datagen": _datagen, "study": _study}


def main(argv: list[str] | None = None) -> None:
    """The ``cotharness`` process (the console script, ``python -m cotharness.cli``)."""
    from harness_tasks.quiet import quiet

    quiet()  # first: library warnings a user cannot act on are filtered before anything imports them
    try:
        typer.main.get_command(app).main(argv, prog_name="cotharness")
    except SystemExit as done:
        _exit(done.code)


def _exit(code) -> None:
    """End the process without the interpreter's teardown of the ~5,000 modules torch, transformers and
    lm-eval import: 1.5-2 s after every command that loaded them, with nothing left to do. What a normal
    exit does first is done here too: the atexit handlers run (logging's flush among them) and the output
    is flushed. A normal exit where another thread still works or torch.distributed is set up."""
    import atexit
    import threading

    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    dist = sys.modules.get("torch.distributed")
    if others or (dist is not None and dist.is_available() and dist.is_initialized()):
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that has gone (`| head`), a closed stream: as at a normal exit
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
