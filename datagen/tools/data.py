"""tool_select rows from a tools file: synthesis, a stratified split, and the files of ``datagen tools``.

Synthesis fills each tool's request templates (``synthesis:`` in the tools YAML) with slot values:
templates take turns so every phrasing is represented, values are drawn with a seeded RNG, a request
whose normalised text was already written is skipped, and every gold call is checked against the
tool's JSON Schema. Ambiguous requests (plausible for two tools) are flagged ``ambiguous: true``.
The split is stratified by tool, and within a tool by ambiguity, so each split holds 80/10/10 of
every tool and its share of the hard cases. Rows embed the prompt-facing tool specs, so training
and evaluation render the same prompt whatever tools file is current later.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from math import prod
from pathlib import Path

from harness_tasks.errors import UserError
from harness_tasks.manifest import git_commit, package_versions, sha256_file, write_atomic
from harness_tasks.tool_select.tools import (
    PLACEHOLDER,
    AmbiguousExample,
    Example,
    ToolsFile,
    parameter_errors,
)

SPLITS = {"train": 0.8, "dev": 0.1, "test": 0.1}
ROW_KEYS = ("id", "query", "tool", "parameters", "reasoning", "ambiguous", "alternative", "source", "tools")


class SynthesisError(UserError, ValueError):
    pass


def normalise_query(text: str) -> str:
    """What counts as the same request: case, spacing and end punctuation ignored."""
    return re.sub(r"\s+", " ", text).strip().strip(".?!").strip().casefold()


def _slots_in(example: Example) -> list[str]:
    """The slots an example uses, in order of first use (query, parameters, reasoning)."""
    texts = [example.query, json.dumps(example.parameters), example.reasoning]
    names = [m.group(1) for t in texts for m in PLACEHOLDER.finditer(t) if m.group(1)]
    return list(dict.fromkeys(names))


def _fill(template, values: dict):
    """``template`` (a string, or a mapping/list of them) with its placeholders replaced. A string that
    is exactly one placeholder becomes the value itself, so a slot can fill an integer parameter."""
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    if not isinstance(template, str):
        return template

    def value(match):
        slot, field = match.groups()
        v = values[slot]
        return v[field] if field else v

    whole = PLACEHOLDER.fullmatch(template)
    if whole and whole.group(1):
        return value(whole)
    return PLACEHOLDER.sub(lambda m: {"{{": "{", "}}": "}"}[m.group(0)] if m.group(1) is None
                           else str(value(m)), template)


def _combinations(slots: list[str], pools: dict[str, list], rng: random.Random, cap: int) -> Iterator[dict]:
    """Distinct slot assignments in random order (at most ``cap``), without listing the whole product."""
    sizes = [len(pools[s]) for s in slots]
    total = prod(sizes)
    for index in rng.sample(range(total), min(total, cap)):
        values = {}
        for slot, size in zip(slots, sizes, strict=True):
            index, i = divmod(index, size)
            values[slot] = pools[slot][i]
        yield values


def _tool_rows(tools: ToolsFile, t: int, kind: str, n: int, seed: int, seen: set[str], source: Path) -> list[dict]:
    """``n`` distinct rows of tool ``t`` from its ``kind`` templates ("queries" or "ambiguous")."""
    tool = tools.tools[t]
    examples: list[Example] = getattr(tool.synthesis, kind)
    if n == 0 or not examples:
        return []
    pools = {**tools.slots, **tool.synthesis.slots}
    rng = random.Random(f"{seed}:{tool.name}:{kind}")
    streams = [(j, ex, _combinations(_slots_in(ex), pools, rng, 10 * n + 100)) for j, ex in enumerate(examples)]
    rows: list[dict] = []
    while streams and len(rows) < n:
        for stream in list(streams):  # the templates take turns
            if len(rows) == n:
                break
            j, ex, combos = stream
            values = next(combos, None)
            if values is None:
                streams.remove(stream)
                continue
            query = _fill(ex.query, values)
            if normalise_query(query) in seen:
                continue
            parameters = _fill(ex.parameters, values)
            errors = parameter_errors(tool.spec(), parameters)
            if errors:
                raise SynthesisError(f"{source}: tools.{t} ({tool.name}).synthesis.{kind}.{j}.parameters: with "
                                     f"{values} the call does not satisfy the tool's schema: {errors[0]}")
            seen.add(normalise_query(query))
            rows.append({"query": query, "tool": tool.name, "parameters": parameters,
                         "reasoning": _fill(ex.reasoning, values), "ambiguous": kind == "ambiguous",
                         "alternative": ex.also if isinstance(ex, AmbiguousExample) else None})
    if len(rows) < n:
        raise SynthesisError(f"{source}: tool {tool.name!r}: its synthesis.{kind} templates give only {len(rows)} "
                             f"distinct requests, {n} asked for; add templates or slot values, or ask for fewer")
    return rows


def synthesize(tools: ToolsFile, per_tool: int, ambiguous_per_tool: int, seed: int, source: Path,
               seen: set[str] | None = None) -> list[dict]:
    """``per_tool`` requests of every tool plus ``ambiguous_per_tool`` ambiguous ones of every tool that
    has ambiguous templates; ``seen``: normalised requests already taken (e.g. from a database)."""
    missing = [t.name for t in tools.tools if t.synthesis is None]
    if missing:
        raise SynthesisError(f"{source}: tool(s) {missing} have no synthesis: section to write requests from; "
                             "add one, or use --from-db with --no-synthetic")
    seen = set() if seen is None else seen
    specs = tools.specs()
    rows = []
    for kind, n in (("queries", per_tool), ("ambiguous", ambiguous_per_tool)):
        for t, tool in enumerate(tools.tools):
            for k, row in enumerate(_tool_rows(tools, t, kind, n, seed, seen, source)):
                rid = f"syn-{tool.name}-{'amb-' if kind == 'ambiguous' else ''}{k}"
                rows.append(_row(rid, source="synthetic", tools=specs, **row))
    return rows


def _row(id: str, **fields) -> dict:
    """A row in the order of ROW_KEYS; a row without gold parameters has no ``parameters`` key (so
    training teaches no empty call)."""
    return {k: fields[k] if k != "id" else id for k in ROW_KEYS if k == "id" or k in fields}


def _half_up(x: float) -> int:
    return int(x + 0.5)


def split(rows: list[dict], seed: int) -> dict[str, list[dict]]:
    """80/10/10 per tool (rounded half up; train takes the rest), each split's share of a tool's
    ambiguous rows decided the same way; rows shuffled within each split."""
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for tool in sorted({r["tool"] for r in rows}):
        group = [r for r in rows if r["tool"] == tool]
        rng = random.Random(f"{seed}:split:{tool}")
        hard, plain = [r for r in group if r["ambiguous"]], [r for r in group if not r["ambiguous"]]
        rng.shuffle(hard)
        rng.shuffle(plain)
        for name in ("dev", "test"):
            n, n_hard = _half_up(SPLITS[name] * len(group)), _half_up(SPLITS[name] * len(hard))
            n_hard = min(n_hard, n)
            out[name] += hard[:n_hard] + plain[: n - n_hard]
            hard, plain = hard[n_hard:], plain[n - n_hard:]
        out["train"] += hard + plain
    for name, split_rows in out.items():
        random.Random(f"{seed}:order:{name}").shuffle(split_rows)
    return out


def counts(splits: dict[str, list[dict]]) -> dict:
    return {name: {"rows": len(rows), "tools": dict(sorted(Counter(r["tool"] for r in rows).items())),
                   "ambiguous": sum(r["ambiguous"] for r in rows),
                   "sources": dict(sorted(Counter(r["source"] for r in rows).items()))}
            for name, rows in splits.items()}


def write(out: Path, splits: dict[str, list[dict]], tools_path: Path, manifest: dict) -> dict:
    """``out/{train,dev,test}.jsonl``, a copy of the tools file and ``manifest.json``, each written
    atomically; returns the manifest. No timestamps: the same inputs give byte-identical files."""
    written = [write_atomic(out / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
               for name, rows in splits.items()]
    written.append(write_atomic(out / "tools.yaml", tools_path.read_text(encoding="utf-8")))
    manifest = {**manifest, "splits": counts(splits),
                "outputs": {p.name: sha256_file(p) for p in written},
                "versions": package_versions(), "git": git_commit()}
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def dedupe(rows: list[dict]) -> tuple[list[dict], int, int]:
    """First row of each normalised request; (rows, duplicates dropped, of which with another tool)."""
    first: dict[str, dict] = {}
    dropped = conflicting = 0
    for r in rows:
        key = normalise_query(r["query"])
        if key in first:
            dropped += 1
            conflicting += first[key]["tool"] != r["tool"]
        else:
            first[key] = r
    return list(first.values()), dropped, conflicting
