# (d) training stage with a checkpoint dir as an output: killed at step 6 of 10
SRC=$(cd "$(dirname "$0")" && pwd); . "$SRC/lib.sh"; fresh d
cp "$SRC/dvc.train.yaml" dvc.yaml; git add -A >/dev/null; git commit -qm init
t cat dvc.yaml
t KILL_AFTER=6 dvc repro
steps
t dvc repro
steps
echo "--- same with persist: true on ckpt"
fresh d2
cp "$SRC/dvc.train-persist.yaml" dvc.yaml; git add -A >/dev/null; git commit -qm init
t cat dvc.yaml
t KILL_AFTER=6 dvc repro
steps
t dvc repro
steps
echo "--- raise steps 10 -> 12 (persist keeps ckpt, the script resumes)"
t "sed -i 's/steps: 10/steps: 12/' params.yaml"
t dvc repro
steps
echo "--- change the learning rate: the run should start afresh, but the persisted ckpt is resumed"
t "sed -i 's/lr: 0.0001/lr: 0.0002/' params.yaml"
t dvc status
t dvc repro
steps
