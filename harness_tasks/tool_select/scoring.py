"""Per-document scores of a tool call: which tool, and whether its parameters would work.

Definitions (documents are lm-eval's; "pred" is the parsed answer, "gold" the row's):
- ``parse_fail``: every document; 1 when no declared tool could be read from the answer.
- ``acc``, ``f1_macro``: documents with a gold tool; the predicted tool equals it / macro-F1 over tools
  (an unparsed answer is wrong, see harness_tasks/metrics.py).
- ``params_valid``: every document; 1 when the answer names a tool, that tool is the gold tool (where
  the document has one), its ``parameters`` is a JSON object and it satisfies the tool's JSON Schema.
  An unparsed answer, a wrong tool or missing parameters score 0: a call to the wrong tool is not a
  valid call for that request, however well-formed.
- ``params_required_match``: documents with gold parameters; 1 when the answer names the gold tool
  and each parameter the gold tool's schema requires is present and equal to the gold value after
  light normalisation (strings stripped and casefolded; 5 equals 5.0; lists and objects compared
  element-wise). Optional parameters are not compared, and a tool without required parameters
  matches on the tool alone. Other documents report None (not counted).
"""

from __future__ import annotations

from harness_tasks.tool_select.tools import parameter_errors


def normalise(value):
    """``value`` in a form that compares equal for light differences: case and surrounding spaces
    of strings, int vs float. Booleans stay distinct from numbers (True is not 1 here)."""
    if isinstance(value, str):
        return ("str", value.strip().casefold())
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, int | float):
        return ("num", float(value))
    if isinstance(value, list):
        return ("list", tuple(normalise(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), normalise(v)) for k, v in value.items())))
    return ("other", repr(value))


def params_valid(specs: dict[str, dict], gold_tool: str | None, pred_tool: str | None, pred_params) -> bool:
    if pred_tool is None or pred_tool not in specs:
        return False
    if gold_tool is not None and pred_tool != gold_tool:
        return False
    return not parameter_errors(specs[pred_tool], pred_params)


def required_match(specs: dict[str, dict], gold_tool: str, gold_params: dict, pred_tool: str | None,
                   pred_params) -> bool:
    if pred_tool != gold_tool:
        return False
    pred_params = pred_params if isinstance(pred_params, dict) else {}
    required = specs[gold_tool]["parameters"].get("required", [])
    return all(k in pred_params and normalise(pred_params[k]) == normalise(gold_params.get(k)) for k in required)


def score(specs: list[dict], gold_tool: str | None, gold_params: dict | None, pred_tool: str | None,
          pred_params) -> dict:
    """lm-eval ``process_results`` payload for one document (see the module docstring)."""
    by_name = {s["name"]: s for s in specs}
    out = {"parse_fail": int(pred_tool is None),
           "params_valid": int(params_valid(by_name, gold_tool, pred_tool, pred_params)),
           "params_required_match": None if gold_params is None or gold_tool is None else
           int(required_match(by_name, gold_tool, gold_params, pred_tool, pred_params))}
    if gold_tool is not None:
        out.update(acc=int(pred_tool == gold_tool), f1_macro=(gold_tool, pred_tool))
    return out
