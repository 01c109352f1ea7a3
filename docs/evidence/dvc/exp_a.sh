# (a) teacher stage, plain `outs`: killed half-way, then `dvc repro` again
SRC=$(cd "$(dirname "$0")" && pwd); . "$SRC/lib.sh"; fresh a
cp "$SRC/dvc.teacher.yaml" dvc.yaml; git add -A >/dev/null; git commit -qm init
t cat dvc.yaml
t KILL_AFTER=10 dvc repro
paid
t dvc status
t dvc repro
paid
t dvc repro
paid
echo "--- param change affecting only the 10 rows of kind b"
t "sed -i 's/think about negation/think about quantifiers/' params.yaml"
t dvc status
t dvc repro
paid
echo "--- revert the param: run cache"
t "sed -i 's/think about quantifiers/think about negation/' params.yaml"
t dvc repro
paid
