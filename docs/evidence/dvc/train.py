"""Mimics a training: writes ckpt/checkpoint-N after every step, resumes from the latest.

Each step actually computed is counted in STEPS_LOG (outside DVC's outputs).
KILL_AFTER=K stops after K steps computed in this process (exit 137).
"""
import os
import sys

import yaml

STEPS_LOG = os.environ.get("STEPS_LOG", "../steps.log")
kill_after = int(os.environ.get("KILL_AFTER", "0"))
total = yaml.safe_load(open("params.yaml"))["train"]["steps"]
os.makedirs("ckpt", exist_ok=True)
ckpts = sorted(int(d.split("-")[1]) for d in os.listdir("ckpt") if d.startswith("checkpoint-"))
start = ckpts[-1] if ckpts else 0
print(f"resuming from step {start}" if start else "starting from step 0")
done_here = 0
for step in range(start + 1, total + 1):
    with open(STEPS_LOG, "a") as log:
        log.write(f"{step}\n")
    d = f"ckpt/checkpoint-{step}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/adapter.bin", "wb") as f:
        f.write(os.urandom(1024))
    done_here += 1
    if kill_after and done_here >= kill_after:
        print(f"killed after step {step}")
        sys.stdout.flush()
        os._exit(137)
open("adapter.bin", "wb").write(os.urandom(1024))
print(f"trained to step {total}")
