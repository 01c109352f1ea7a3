"""Mimics a paid API stage: one request per input row, appended to out.jsonl.

Resume semantics: a row already in out.jsonl with the same request hash is kept
(not paid again); a row whose request changed is asked again. Every request sent
is counted in PAID_LOG (outside DVC's outputs). KILL_AFTER=K stops the process
(exit 137, as a SIGKILL would) after K requests.
"""
import hashlib
import json
import os
import sys

import yaml

PAID_LOG = os.environ.get("PAID_LOG", "../paid.log")
kill_after = int(os.environ.get("KILL_AFTER", "0"))
params = yaml.safe_load(open("params.yaml"))["teacher"]
template = open("prompt.txt").read()
out = "out.jsonl"

done = {}
if os.path.exists(out):
    for line in open(out):
        r = json.loads(line)
        done[r["id"]] = r["request_hash"]
print(f"found {len(done)} rows already in {out}")

sent = 0
with open(out, "a") as f:
    for line in open("input.jsonl"):
        row = json.loads(line)
        # the param only applies to rows of kind "b": changing it changes half the requests
        extra = params["b_hint"] if row["kind"] == "b" else ""
        request = template.format(text=row["text"], hint=extra) + "|" + params["model"]
        h = hashlib.sha256(request.encode()).hexdigest()[:12]
        if done.get(row["id"]) == h:
            continue
        with open(PAID_LOG, "a") as paid:  # one paid request
            paid.write(f"{row['id']}\n")
        f.write(json.dumps({"id": row["id"], "request_hash": h, "answer": "..."}) + "\n")
        f.flush()
        sent += 1
        if kill_after and sent >= kill_after:
            print(f"killed after {sent} requests")
            sys.stdout.flush()
            os._exit(137)
print(f"sent {sent} requests")
