# (f) a sweep with `dvc exp run --queue` and `dvc queue start -j 2`, persist teacher stage
SRC=$(cd "$(dirname "$0")" && pwd); . "$SRC/lib.sh"; fresh f
cp "$SRC/dvc.teacher-persist.yaml" dvc.yaml; git add -A >/dev/null; git commit -qm init
t dvc repro
paid
t "git add -A >/dev/null; git commit -qm 'baseline run'"
for h in quantifiers scope tense; do t dvc exp run --queue -S "'teacher.b_hint=think about $h'"; done
t dvc queue status
tt "dvc queue start -j 2 && while dvc queue status | grep -qE 'Queued|Running'; do sleep 1; done"
t dvc queue status
t dvc exp show --no-pager --md --drop "'Created|api_stage.py|input.jsonl|prompt.txt|teacher.model|train.*'"
paid
echo "--- serial, for comparison: three experiments in the workspace, one after another"
tt "for h in a b c; do dvc exp run -S \"teacher.b_hint=\$h\" >/dev/null; done"
paid
