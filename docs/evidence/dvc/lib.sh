# helpers: a fresh git+dvc repo, and `t CMD` that prints "$ CMD" then its output
: "${WORK:?set WORK to a scratch directory}"; mkdir -p "$WORK"; WORK=$(cd "$WORK" && pwd)
set -u
[ -n "${VENV:-}" ] && export PATH="$VENV/bin:$PATH"  # else: dvc from PATH
export DVC_NO_ANALYTICS=1
t() { echo "\$ $*"; eval "$@" 2>&1; echo "[exit $?]"; }
fresh() {  # fresh NAME: new repo under $WORK/NAME with the stage scripts and inputs
  rm -rf "$WORK/$1"; mkdir -p "$WORK/$1"; cd "$WORK/$1"
  git init -q . && git config user.email x@y && git config user.name x
  dvc init -q && dvc config core.autostage true
  cp "$SRC"/{api_stage.py,train.py,input.jsonl,prompt.txt,params.yaml} .
  export PAID_LOG="$WORK/$1.paid.log" STEPS_LOG="$WORK/$1.steps.log"
  rm -f "$PAID_LOG" "$STEPS_LOG"; touch "$PAID_LOG" "$STEPS_LOG"
}
paid() { echo "paid requests so far: $(wc -l < "$PAID_LOG"); rows in out.jsonl: $( [ -f out.jsonl ] && wc -l < out.jsonl || echo 'no file')"; }
steps() { echo "steps computed so far: $(wc -l < "$STEPS_LOG"); checkpoints on disk: $(ls ckpt 2>/dev/null | tr '\n' ' ')"; }
tt() { echo "\$ $*"; local s=$(date +%s.%N); eval "$@" 2>&1; local rc=$?; echo "[exit $rc, $(echo "$(date +%s.%N) - $s" | bc | xargs printf '%.2f') s]"; }
