# (e) a 1 GB output (model weights are GBs): hashing, caching, no-op status/repro
SRC=$(cd "$(dirname "$0")" && pwd); . "$SRC/lib.sh"; fresh e
cat > dvc.yaml <<'YAML'
stages:
  weights:
    cmd: head -c 1G /dev/urandom > weights.bin
    outs:
      - weights.bin
YAML
git add -A >/dev/null; git commit -qm init
t cat dvc.yaml
t "dvc config cache.type"
echo "--- the command alone, outside DVC"
tt "head -c 1G /dev/urandom > /dev/null"
tt dvc repro
t "du -sh weights.bin .dvc/cache"
echo "--- no-op"
tt dvc status
tt dvc repro
echo "--- mtime changed, content same: DVC hashes the file again"
t touch weights.bin
tt dvc status
tt dvc repro
echo "--- dvc commit --force after another touch"
t touch weights.bin
tt dvc commit --force
echo "--- hardlink cache type: no second copy"
t "rm -rf .dvc/cache weights.bin dvc.lock; rm -rf .dvc/tmp"
t dvc config cache.type hardlink
tt dvc repro
t "du -sh weights.bin .dvc/cache; stat -c '%h links' weights.bin"
t "ls -l weights.bin"
