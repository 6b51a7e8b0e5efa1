"""Evaluation report: ``results.json``, ``report.md``, ``report.html`` and their figures.

Layout of the output folder (every path in the reports is relative, so the folder can be moved
and ``report.html`` opens straight in a browser):

    results.json            all numbers (see docs/evaluation.md)
    report.md, report.html  tables (mean over images per preset; mean over presets), grids, plots
    images/grid_<preset>.jpg   degraded inputs, each method's output, clean references
    plots/<metric>.png         bar plot of one metric per preset and method

Figures use matplotlib's object API with the Agg canvas (no pyplot, no display needed).
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mex_fusion_ros.eval.runner import KEY_METRICS, EvalOutcome, GridSample, reference_rows, save_results_json
from mex_fusion_ros.fusion.base import DEFAULT_PRESENCE_THRESHOLD

#: Width in pixels of one tile of the image grid (the grid JPEG is downsized to this).
TILE_WIDTH = 240
TIME_COLUMN = "time (ms)"
#: Metrics of the "against the reference figures" tables (those a reference file has are shown).
REFERENCE_METRICS: tuple[str, ...] = ("CC", "PSNR", "SSIM", "MS-SSIM", "Q_abf", "VIF", "N_abf")


def slug(name: str) -> str:
    """A file-name-safe form of a preset, metric or method name (``nano:w.pt`` -> ``nano_w.pt``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def format_value(value: float | None) -> str:
    """Four significant figures at most, enough to compare methods; ``–`` for a missing value."""
    if value is None:
        return "–"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    return f"{value:.4f}"


def format_time_ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def best_labels(rows: dict[str, float | None], higher_is_better: bool,
                formatter: Callable[[float | None], str] = format_value) -> set[str]:
    """Row labels holding the best value of a column: every row that prints the same as the best
    (a tie at the shown precision is a tie); none when all values are missing."""
    present = {label: value for label, value in rows.items() if value is not None}
    if not present:
        return set()
    best = formatter(max(present.values()) if higher_is_better else min(present.values()))
    return {label for label, value in present.items() if formatter(value) == best}


# ---------------------------------------------------------------------------------------------
# Tables: one neutral description, rendered as Markdown and HTML
# ---------------------------------------------------------------------------------------------


Header = list[tuple[str, str]]
Rows = list[list[tuple[str, bool]]]
#: One block of a report: ("h1"|"h2"|"h3"|"p", text), ("meta", [lines]), ("table", (Header, Rows)),
#: ("image", (relative path, alt text)); rendered by both ``render_markdown`` and ``render_html``.
Section = tuple[str, Any]


def _table(results: dict, values: dict[str, dict[str, float | None]],
           with_time: dict[str, float] | None) -> tuple[Header, Rows]:
    """``(header, rows)``: header cells ``(text, tooltip)``, rows of ``(text, bold)`` cells."""
    metrics = list(results["metrics"])
    directions = {m: results["metrics"][m]["higher_is_better"] for m in metrics}
    header = [("method", "")]
    header += [(f"{m} {'↑' if directions[m] else '↓'}", results["metrics"][m]["description"])
               for m in metrics]
    columns = {m: {label: values[label][m] for label in values} for m in metrics}
    best = {m: best_labels(columns[m], directions[m]) for m in metrics}
    if with_time is not None:
        header.append((f"{TIME_COLUMN} ↓", "median wall time of one fuse call (one image pair)"))
        best[TIME_COLUMN] = best_labels(with_time, higher_is_better=False, formatter=format_time_ms)
    rows = []
    for label in values:
        row = [(label, False)]
        row += [(format_value(values[label][m]), label in best[m]) for m in metrics]
        if with_time is not None:
            row.append((format_time_ms(with_time[label]), label in best[TIME_COLUMN]))
        rows.append(row)
    return header, rows


def _markdown_table(header: Header, rows: Rows) -> str:
    lines = ["| " + " | ".join(text for text, _ in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(f"**{text}**" if bold else text for text, bold in row) + " |")
    return "\n".join(lines)


def _html_table(header: Header, rows: Rows) -> str:
    head = "".join(f'<th title="{html.escape(tip)}">{html.escape(text)}</th>' for text, tip in header)
    def cell(text: str, bold: bool) -> str:
        return f"<td><b>{html.escape(text)}</b></td>" if bold else f"<td>{html.escape(text)}</td>"

    body = "".join("<tr>" + "".join(cell(text, bold) for text, bold in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def _tile(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    if width > TILE_WIDTH:
        size = (TILE_WIDTH, max(1, round(height * TILE_WIDTH / width)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.clip(image, 0.0, 1.0)


def save_grid(samples: list[GridSample], methods: list[str], preset: str, path: Path) -> None:
    """One row per sample image: degraded IR, degraded visible, each method, clean IR, clean visible."""
    columns = ["IR input", "visible input", *methods, "clean IR", "clean visible"]
    first = samples[0].clean_ir
    aspect = first.shape[0] / first.shape[1]
    tile_inches = 1.9
    figure = Figure(figsize=(tile_inches * len(columns), (tile_inches * aspect + 0.35) * len(samples) + 0.3),
                    dpi=TILE_WIDTH / tile_inches)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(samples), len(columns), squeeze=False)
    for row, sample in enumerate(samples):
        images = [sample.degraded_ir, sample.degraded_vi, *(sample.fused[m] for m in methods),
                  sample.clean_ir, sample.clean_vi]
        for column, (title, image) in enumerate(zip(columns, images)):
            axis = axes[row][column]
            tile = _tile(image)
            if tile.ndim == 2:
                axis.imshow(tile, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                axis.imshow(tile, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(title if row == 0 else "", fontsize=9)
            if column == 0:
                axis.set_ylabel(sample.image, fontsize=8)
    figure.suptitle(f"preset: {preset}", fontsize=11)
    figure.tight_layout(pad=0.3)
    figure.savefig(path, pil_kwargs={"quality": 88})


def save_metric_plot(results: dict, metric: str, path: Path) -> None:
    """Grouped bars: one group per preset, one bar per method (mean over images); reference figures
    (``--reference``) as hatched, paler bars after the runs."""
    presets, methods = results["presets"], results["methods"]
    references = reference_rows(results)
    reference_labels: list[str] = []
    for by_label in references.values():
        reference_labels += [label for label in by_label if label not in reference_labels]
    bars = [*methods, *reference_labels]
    figure = Figure(figsize=(max(6.0, 1.1 * len(presets) + 2.0 + 0.15 * len(bars)), 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    width = 0.8 / len(bars)
    positions = np.arange(len(presets))
    for index, method in enumerate(bars):
        if method in methods:
            values = [results["summary"][p][method][metric] for p in presets]
            style: dict[str, Any] = {}
        else:
            values = [references.get(p, {}).get(method, {}).get(metric) for p in presets]
            style = {"hatch": "//", "alpha": 0.55, "edgecolor": "#333", "linewidth": 0.4}
        heights = [np.nan if v is None else v for v in values]
        axis.bar(positions + (index - (len(bars) - 1) / 2) * width, heights, width, label=method, **style)
    axis.set_xticks(positions, presets, fontsize=9)
    arrow = "higher is better" if results["metrics"][metric]["higher_is_better"] else "lower is better"
    axis.set_title(f"{metric} ({arrow}), mean over images", fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    axis.set_axisbelow(True)
    axis.legend(fontsize=8, ncols=min(len(bars), 6), loc="upper center", bbox_to_anchor=(0.5, -0.12),
                frameon=False)
    figure.tight_layout()
    figure.savefig(path)


# ---------------------------------------------------------------------------------------------
# Report documents
# ---------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 1em; max-width: 1400px;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f2f2f2; cursor: help; }
td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
img { max-width: 100%; border: 1px solid #ddd; }
.meta { font-size: 0.85em; color: #555; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _sections(results: dict, grids: dict[str, str], plots: dict[str, str]) -> list[Section]:
    """Report content as a list of sections rendered by both writers."""
    timing = {m: results["timing"][m]["median_s_per_image"] * 1000.0 if m in results["timing"] else None
              for m in results["methods"]}
    references = reference_rows(results)
    settings = results["settings"]
    meta = [
        f"command: `{results['command']}`",
        f"dataset: `{results['dataset']}` ({len(results['images'])} pairs); seed {settings['seed']}, "
        f"max side {settings['max_side'] or 'original size'}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        f"created {results['created']}, wall time {results['wall_time_s']:.1f} s",
    ]
    sections: list[Section] = [("h1", "Fusion evaluation"), ("meta", meta)]
    sections.append(("p", "Metrics compare each fused image with the clean (undegraded) sources; "
                          "image-only metrics (EN, SD, SF, AG) use the fused image alone. ↑ higher is "
                          "better, ↓ lower is better; the best value of each column is bold. "
                          "Time: median per image pair."))
    if results.get("external_methods"):
        sections.append(("p", "External methods (fused by another tool from the saved inputs, scored here): "
                              + ", ".join(f"{m} (`{results['method_specs'][m]}`)"
                                          for m in results["external_methods"]) + "; no time is measured."))
    for path, record in results.get("references", {}).items():
        sections.append(("p", f"Rows marked (ref) are reference figures read from `{path}`, not runs of this "
                              f"evaluation: {record['about'] or 'no description in the file.'}"))
    sections.append(("h2", "Summary: mean over presets"))
    overall = dict(results["overall"])
    for label in {label for by_label in references.values() for label in by_label}:
        if all(label in references.get(p, {}) for p in results["presets"]):
            overall[label] = {m: _mean_or_none([references[p][label].get(m) for p in results["presets"]])
                              for m in results["metrics"]}
    sections.append(("table", _table(results, overall, {**timing, **{k: None for k in overall if k not in timing}})))
    if references:
        sections += _reference_sections(results, references)
    if results["degradation_accuracy"]:
        sections.append(("h2", "Degradation estimates"))
        threshold = results["settings"].get("presence_threshold")
        rule = (f"probability ≥ {threshold:g} for every type" if threshold is not None else
                "probability ≥ each type's threshold calibrated for the network's weights (mex-fusion "
                "calibrate; 0.5 where not calibrated)")
        sections.append(("p", f"Types judged present ({rule}) compared with the preset's label: per-type "
                              "accuracy (each type judged present/absent) and exact-set matches."))
        header = [("method", ""), ("preset", ""), ("type accuracy ↑", ""), ("exact match ↑", ""),
                  ("recall ↑", "present types detected / present types"),
                  ("false alarm ↓", "images with a detected type that is absent"), ("images", "")]
        rows = [
            [(method, False), (preset, False), (format_value(acc["type_accuracy"]), False),
             (format_value(acc["exact_match"]), False), (format_value(acc.get("recall")), False),
             (format_value(acc.get("false_alarm")), False), (str(acc["images"]), False)]
            for method, by_preset in results["degradation_accuracy"].items()
            for preset, acc in by_preset.items()
        ]
        sections.append(("table", (header, rows)))
        if threshold is None:
            for method, thresholds in _thresholds_used(results).items():
                moved = ", ".join(f"{kind} {value:.3f}" for kind, value in thresholds.items()
                                  if value != DEFAULT_PRESENCE_THRESHOLD)
                sections.append(("p", f"{method}: calibrated thresholds {moved}; every other type "
                                      f"{DEFAULT_PRESENCE_THRESHOLD:g}." if moved else
                                 f"{method}: every type at {DEFAULT_PRESENCE_THRESHOLD:g} (weights not calibrated)."))
    sections.append(("h2", "Per preset: mean over images"))
    for preset in results["presets"]:
        description = results["preset_descriptions"].get(preset, "")
        sections.append(("h3", f"{preset}" + (f": {description}" if description else "")))
        sections.append(("table", _table(results, {**results["summary"][preset], **references.get(preset, {})},
                                         None)))
        if preset in grids:
            sections.append(("image", (grids[preset], f"image grid, preset {preset}")))
    if plots:
        sections.append(("h2", "Key metrics per preset"))
        for metric, path in plots.items():
            sections.append(("image", (path, f"{metric} per preset and method")))
    return sections


def _mean_or_none(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if len(kept) == len(values) and kept else None


def _reference_sections(results: dict, references: dict[str, dict[str, dict[str, float | None]]]) -> list[Section]:
    """Per run: its margin over the best reference figure of each metric and preset."""
    directions = {m: results["metrics"][m]["higher_is_better"] for m in results["metrics"]}
    metrics = [m for m in REFERENCE_METRICS
               if any(values.get(m) is not None for by_label in references.values() for values in by_label.values())]
    sections: list[Section] = [
        ("h2", "Runs against the reference figures"),
        ("p", "Margin of each run over the best reference figure of the preset (positive = better, in the "
              "metric's own direction; bold where the run is better). Last column: metrics won."),
    ]
    header = [("preset", "")] + [(f"{m} {'↑' if directions[m] else '↓'}", "") for m in metrics] + [("won", "")]
    for method in results["methods"]:
        rows: Rows = []
        for preset in results["presets"]:
            refs = references.get(preset, {})
            row = [(preset, False)]
            won = counted = 0
            for metric in metrics:
                ours = results["summary"][preset][method].get(metric)
                theirs = [values.get(metric) for values in refs.values() if values.get(metric) is not None]
                if ours is None or not theirs:
                    row.append(("–", False))
                    continue
                best = max(theirs) if directions[metric] else min(theirs)
                margin = ours - best if directions[metric] else best - ours
                counted += 1
                won += margin > 0
                row.append((f"{margin:+.4f}", margin > 0))
            row.append((f"{won}/{counted}", False))
            rows.append(row)
        sections.append(("h3", method))
        sections.append(("table", (header, rows)))
    return sections


def render_markdown(sections: list[Section]) -> str:
    lines: list[str] = []
    for kind, payload in sections:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + payload, ""]
        elif kind == "meta":
            lines += [f"- {item}" for item in payload] + [""]
        elif kind == "p":
            lines += [payload, ""]
        elif kind == "table":
            lines += [_markdown_table(*payload), ""]
        elif kind == "image":
            path, alt = payload
            lines += [f"![{alt}]({path})", ""]
    return "\n".join(lines)


def _inline_code(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def render_html(sections: list[Section]) -> str:
    body: list[str] = []
    for kind, payload in sections:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(payload)}</{kind}>")
        elif kind == "meta":
            items = "".join(f"<li>{_inline_code(item)}</li>" for item in payload)
            body.append(f'<ul class="meta">{items}</ul>')
        elif kind == "p":
            body.append(f"<p>{html.escape(payload)}</p>")
        elif kind == "table":
            body.append(_html_table(*payload))
        elif kind == "image":
            path, alt = payload
            body.append(f'<p><img src="{html.escape(path)}" alt="{html.escape(alt)}" loading="lazy"></p>')
    head = f'<head><meta charset="utf-8"><title>Fusion evaluation</title><style>{_CSS}</style></head>'
    return f'<!DOCTYPE html>\n<html lang="en">{head}<body>\n' + "\n".join(body) + "\n</body></html>\n"


def _thresholds_used(results: dict) -> dict[str, dict[str, float]]:
    """Per method with degradation estimates, the presence thresholds its first estimate was judged at."""
    found: dict[str, dict[str, float]] = {}
    for entries in results["per_image"].values():
        for entry in entries.values():
            for method, record in entry["methods"].items():
                if method not in found and "thresholds" in record.get("degradation", {}):
                    found[method] = dict(record["degradation"]["thresholds"])
    return found


def write_report(outcome: EvalOutcome, out_dir: Path) -> dict[str, Path]:
    """Write results.json, report.md, report.html and the figures into ``out_dir`` (created)."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    results = outcome.results
    grids: dict[str, str] = {}
    for preset, samples in outcome.samples.items():
        if samples:
            relative = f"images/grid_{slug(preset)}.jpg"
            save_grid(samples, results["methods"], preset, out_dir / relative)
            grids[preset] = relative
    plots: dict[str, str] = {}
    for metric in KEY_METRICS:
        if metric in results["metrics"]:
            relative = f"plots/{slug(metric)}.png"
            save_metric_plot(results, metric, out_dir / relative)
            plots[metric] = relative
    sections = _sections(results, grids, plots)
    paths = {"results": out_dir / "results.json", "markdown": out_dir / "report.md",
             "html": out_dir / "report.html"}
    save_results_json(results, paths["results"])
    paths["markdown"].write_text(render_markdown(sections), encoding="utf-8")
    paths["html"].write_text(render_html(sections), encoding="utf-8")
    return paths
