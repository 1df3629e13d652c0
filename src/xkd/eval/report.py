"""Fold aggregation and result files: JSON, a Markdown table of mean ± std, confusion-matrix PNGs.

Every protocol returns a dict with a ``protocol`` label and a ``metrics`` dict of fractions in [0, 1]. Folds follow the
datasets: UCF101 and HMDB51 3 folds, ESC-50 5 folds, AV-Digits audio leave-one-voice-out.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from xkd.eval.metrics import mean_std, plot_confusion


def run_folds(fn: Callable[[Any], dict], folds: Sequence[Any], ddof: int = 0) -> dict:
    """Run ``fn(fold)`` for each fold and aggregate the metrics every fold reports.

    Returns ``protocol`` (the folds' common label), ``folds`` (each result with its ``fold``), ``summary``
    {metric: {"mean", "std", "values"}} (std with ``ddof``, see :func:`mean_std`) and, when every fold has a
    confusion matrix, ``confusion`` summed over folds (pooled test predictions) with ``class_names``.
    """
    if not folds:
        raise ValueError("run_folds needs at least one fold")
    per_fold = [{"fold": str(fold), **fn(fold)} for fold in folds]
    names = [m for m in per_fold[0]["metrics"] if all(m in r["metrics"] for r in per_fold)]
    summary = {}
    for name in names:
        values = [float(r["metrics"][name]) for r in per_fold]
        mean, std = mean_std(values, ddof)
        summary[name] = {"mean": mean, "std": std, "values": values}
    protocols = list(dict.fromkeys(str(r.get("protocol", "")) for r in per_fold))
    result = {"protocol": "; ".join(protocols), "folds": per_fold, "summary": summary, "ddof": ddof}
    if all("hparams" in r for r in per_fold):
        result["hparams"] = {name: [r["hparams"][name] for r in per_fold] for name in per_fold[0]["hparams"]}
        result["at_edge"] = sorted({name for r in per_fold for name in r.get("at_edge", [])})
    if all("confusion" in r for r in per_fold):
        result["confusion"] = np.sum([r["confusion"] for r in per_fold], axis=0)
        result["class_names"] = per_fold[0]["class_names"]
    return result


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays converted, non-finite floats as null, keys as strings."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _cell(result: dict, metric: str) -> str:
    """'83.8 ± 1.2' (percent) for fold summaries, '83.8' for a single run, '–' when the metric is absent."""
    if "summary" in result:
        stats = result["summary"].get(metric)
        if stats is None:
            return "–"
        return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"
    value = result.get("metrics", {}).get(metric)
    return "–" if value is None else f"{100 * value:.1f}"


def markdown_table(results: Mapping[str, dict]) -> str:
    """Rows = named results (protocol × dataset), columns = the protocol label then every metric (in %)."""
    metrics = []
    for result in results.values():
        names = result["summary"] if "summary" in result else result.get("metrics", {})
        metrics.extend(m for m in names if m not in metrics)
    lines = ["| | protocol | " + " | ".join(f"{m} (%)" for m in metrics) + " |",
             "|---|---|" + "---:|" * len(metrics)]
    for row, result in results.items():
        cells = [_cell(result, m) for m in metrics]
        lines.append(f"| {row} | {result.get('protocol', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chosen_settings(result: dict) -> str:
    """The hyper-parameters a protocol chose, e.g. 'C=0.1' or 'C=0.01 (3), 0.1 (2)' over folds; '!' marks a value
    chosen at the edge of its grid. '' when the protocol chose none."""
    hparams = result.get("hparams") or {}
    at_edge = set(result.get("at_edge", []))
    parts = []
    for name, values in hparams.items():
        values = values if isinstance(values, list) else [values]
        counts = {v: values.count(v) for v in dict.fromkeys(values)}
        text = ", ".join(f"{v:g}" + (f" ({n})" if len(counts) > 1 else "") for v, n in counts.items())
        parts.append(f"{name}={text}" + (" (edge!)" if name in at_edge else ""))
    return "; ".join(parts)


def comparison_table(results: Mapping[str, Mapping[str, dict]], tasks: Sequence[str], metric: str = "top1",
                     what: str = "top-1 %") -> str:
    """Markdown: one row per task, one column per model (``results``: model -> task -> :func:`run_folds` result),
    cells '<mean> ± <std>' over folds in percent, then a second table of the settings each protocol chose."""
    models = list(results)
    lines = [f"| task ({what}, mean ± std over folds) | " + " | ".join(models) + " |",
             "|---|" + "---:|" * len(models)]
    settings = ["| chosen settings | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    any_chosen = False
    for task in tasks:
        cells = [_cell(results[m][task], metric) if task in results[m] else "–" for m in models]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
        chosen = [chosen_settings(results[m][task]) if task in results[m] else "" for m in models]
        any_chosen = any_chosen or any(chosen)
        settings.append(f"| {task} | " + " | ".join(c or "–" for c in chosen) + " |")
    return "\n".join(lines) + ("\n\n" + "\n".join(settings) if any_chosen else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "result"


def write_results(results: Mapping[str, dict], out_dir: str | Path, name: str) -> dict[str, Any]:
    """Write ``<name>.json`` (all results), ``<name>.md`` (the table) and ``<name>_<row>_confusion.png`` for each
    result with a confusion matrix. results: row name -> a protocol result or a :func:`run_folds` result.
    Returns {"json": path, "markdown": path, "confusion": [paths]}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(to_jsonable(results), indent=2, allow_nan=False) + "\n")
    notes = []
    for row, result in results.items():
        if "summary" in result:
            notes.append(f"- {row}: mean ± std over {len(result['folds'])} folds (std with ddof={result['ddof']})")
    md_path = out_dir / f"{name}.md"
    md_path.write_text(f"# {name}\n\n" + markdown_table(results) + ("\n" + "\n".join(notes) + "\n" if notes else ""))
    pngs = []
    for row, result in results.items():
        if "confusion" in result:
            path = out_dir / f"{_slug(name)}_{_slug(row)}_confusion.png"
            pngs.append(plot_confusion(np.asarray(result["confusion"]), result["class_names"], path,
                                       title=f"{row} ({result.get('protocol', '')})"))
    return {"json": json_path, "markdown": md_path, "confusion": pngs}
