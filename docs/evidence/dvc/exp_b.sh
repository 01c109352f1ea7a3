# (b)+(c) teacher stage with `persist: true`
SRC=$(cd "$(dirname "$0")" && pwd); . "$SRC/lib.sh"; fresh b
cp "$SRC/dvc.teacher-persist.yaml" dvc.yaml; git add -A >/dev/null; git commit -qm init
t cat dvc.yaml
t KILL_AFTER=10 dvc repro
paid
t dvc repro
paid
t dvc status
t "ls .dvc/cache/files/md5/*/ | wc -l"
t dvc repro
paid
echo "--- (c) param change affecting only the 10 rows of kind b"
t "sed -i 's/think about negation/think about quantifiers/' params.yaml"
t dvc repro
paid
echo "--- revert the param: no run cache for persist outputs?"
t "sed -i 's/think about quantifiers/think about negation/' params.yaml"
t dvc repro
paid
echo "--- delete the output, then dvc checkout"
t rm out.jsonl
t dvc status
t dvc checkout
t "ls -la out.jsonl"
paid
echo "--- kill half-way after a param change, then dvc checkout"
t "sed -i 's/think about negation/think about scope/' params.yaml"
t KILL_AFTER=5 dvc repro
paid
t dvc status
t dvc checkout
paid
t dvc checkout --force
paid
