# (g) two independent 3-second stages: does `dvc repro` run them in parallel? any cluster executor?
SRC=$(cd "$(dirname "$0")" && pwd); . "$SRC/lib.sh"; fresh g
cat > dvc.yaml <<'YAML'
stages:
  eval_a:
    cmd: sleep 3 && echo a > a.txt
    outs: [a.txt]
  eval_b:
    cmd: sleep 3 && echo b > b.txt
    outs: [b.txt]
YAML
git add -A >/dev/null; git commit -qm init
t cat dvc.yaml
tt "dvc repro | grep Running"
t "dvc repro --help | grep -iE -- '-j|jobs|parallel' || echo '(no parallelism option)'"
t "dvc exp run --help | grep -iE -- '-j|jobs|parallel|queue'"
t "grep -ril slurm \$(python -c 'import dvc,os;print(os.path.dirname(dvc.__file__))') | head -3 || true; echo \"(files in the dvc package mentioning slurm: \$(grep -ril slurm \$(python -c 'import dvc,os;print(os.path.dirname(dvc.__file__))') | wc -l))\""
t dvc --version
