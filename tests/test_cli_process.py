"""The ``cotharness`` process itself: what a start imports, and how it ends (run as a user runs it)."""

import subprocess
import sys


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_a_command_imports_only_what_it_needs():
    """`cotharness eval` (here its help) does not import the trainer's, datagen's or the study's commands;
    asking for one of them, or mistyping a name, loads it."""
    probe = ("import sys; from cotharness.cli import main\n"
             "import atexit; atexit.register(lambda: print(sorted(m for m in ('datagen.cli', 'trainer.cli', "
             "'cotharness.study.cli') if m in sys.modules)))\n"
             "main(sys.argv[1:])")
    assert _run(probe, "eval", "--help").stdout.strip().endswith("[]")
    assert _run(probe, "datagen", "--help").stdout.strip().endswith("['datagen.cli']")
    typo = _run(probe, "datagn")
    assert typo.returncode == 2 and "Did you mean 'datagen'?" in typo.stderr
    assert typo.stdout.strip().endswith("['cotharness.study.cli', 'datagen.cli', 'trainer.cli']")


def test_the_process_ends_after_its_exit_handlers_and_output():
    """The quick exit (no interpreter teardown) still runs the atexit handlers, flushes what was printed,
    and keeps the exit status: 0, a user's mistake's 2, sys.exit's message."""
    handler = "import atexit, sys; atexit.register(lambda: print('handler ran', file=sys.stderr)); "
    done = _run(handler + "from cotharness.cli import main; print('before', end=''); main(['--version'])")
    assert done.returncode == 0 and done.stdout.startswith("before") and "cotharness " in done.stdout
    assert done.stderr.strip().endswith("handler ran")
    mistake = _run(handler + "from cotharness.cli import main; main(['eval', '--model_args', 'x=1', '--nosuch'])")
    assert mistake.returncode == 2 and mistake.stderr.startswith("error: ") and "handler ran" in mistake.stderr
    message = _run("from cotharness.cli import _exit; _exit('gone wrong')")
    assert message.returncode == 1 and message.stderr.strip() == "gone wrong"
