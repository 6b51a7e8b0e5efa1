"""``detect eval`` report: ``results.json``, ``report.md``, ``report.html``, image grids and bar plots.

Layout of the output folder (relative paths, so it can be moved; ``report.html`` opens in a browser):

    results.json               all numbers (docs/detection.md)
    report.md, report.html     tables: mAP50 / mAP50-95 / recall per preset and input, per class
    images/grid_<preset>.jpg   per sample pair: the labels, then each input with its boxes
    plots/<score>.png          grouped bars: one group per preset, one bar per input

The documents are built as the sections ``eval.report`` renders (one Markdown and one HTML writer
for every report of ``mex-fusion eval``). Figures use matplotlib's Agg canvas (no display).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mex_fusion_ros.detect.evaluate import DetectEvalOutcome, DetectSample
from mex_fusion_ros.eval.report import Section, best_labels, format_value, render_html, render_markdown, slug

#: Scores of the summary tables and plots: key in the results, column title, plot file.
SCORES = (("mAP50", "mAP50"), ("mAP50-95", "mAP50-95"), ("recall", "recall"))
TILE_HEIGHT = 200
LABEL_COLOUR = (64, 220, 64)  # RGB: ground truth
BOX_COLOUR = (255, 64, 64)  # RGB: detections at the operating confidence


def _draw(image: np.ndarray, boxes, colour: tuple[int, int, int], caption: str, with_scores: bool) -> np.ndarray:
    """uint8 RGB tile of ``TILE_HEIGHT`` rows with ``boxes`` drawn and a caption."""
    tile = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    scale = TILE_HEIGHT / tile.shape[0]
    tile = cv2.resize(tile, (max(1, round(tile.shape[1] * scale)), TILE_HEIGHT), interpolation=cv2.INTER_AREA)
    tile = np.ascontiguousarray(tile)
    for box in boxes:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box.box)
        cv2.rectangle(tile, (x0, y0), (x1, y1), colour, 1)
        text = f"{box.label} {box.score:.2f}" if with_scores else box.label
        cv2.putText(tile, text, (x0, max(8, y0 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
    cv2.rectangle(tile, (0, 0), (min(tile.shape[1], 8 + 7 * len(caption)), 15), (0, 0, 0), -1)
    cv2.putText(tile, caption, (4, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def annotated_row(sample: DetectSample, inputs: list[str], operating_conf: float) -> np.ndarray:
    """One grid row: the labels on the visible input, then each input with its confident detections."""
    first = sample.images["vi"] if "vi" in sample.images else sample.images[inputs[0]]
    tiles = [_draw(first, sample.truths, LABEL_COLOUR, f"labels ({sample.image})", with_scores=False)]
    for name in inputs:
        shown = [b for b in sample.detections[name] if b.score >= operating_conf]
        tiles.append(_draw(sample.images[name], shown, BOX_COLOUR, name, with_scores=True))
    return np.concatenate(tiles, axis=1)


def save_grid(samples: list[DetectSample], inputs: list[str], operating_conf: float, path: Path) -> None:
    rows = [annotated_row(s, inputs, operating_conf) for s in samples]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 88])


def save_score_plot(results: dict, score: str, path: Path) -> None:
    """Grouped bars: one group per preset, one bar per input."""
    presets, inputs = results["presets"], results["inputs"]
    figure = Figure(figsize=(max(6.0, 1.2 * len(presets) + 2.0), 3.4), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    width = 0.8 / len(inputs)
    positions = np.arange(len(presets))
    for index, name in enumerate(inputs):
        values = [results["summary"][p][name][score] for p in presets]
        heights = [np.nan if v is None else v for v in values]
        axis.bar(positions + (index - (len(inputs) - 1) / 2) * width, heights, width, label=name)
    axis.set_xticks(positions, presets, fontsize=9)
    axis.set_ylim(0.0, 1.0)
    suffix = f" at confidence >= {results['operating_conf']}" if score == "recall" else ""
    axis.set_title(f"{score}{suffix} (higher is better), {results['detector']['model']}", fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    axis.set_axisbelow(True)
    axis.legend(fontsize=8, ncols=min(len(inputs), 6), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    figure.tight_layout()
    figure.savefig(path)


def score_table(results: dict, score: str) -> tuple[list, list]:
    """Rows: presets (+ mean over presets); columns: inputs; the best input of each row bold."""
    inputs = results["inputs"]
    header = [("preset", "")] + [(name, results["input_specs"][name]) for name in inputs]
    rows = []
    lines = [(p, {n: results["summary"][p][n][score] for n in inputs}) for p in results["presets"]]
    if len(results["presets"]) > 1:
        lines.append(("mean over presets", {n: results["overall"][n][score] for n in inputs}))
    for label, values in lines:
        best = best_labels(values, higher_is_better=True)
        rows.append([(label, False)] + [(format_value(values[n]), n in best) for n in inputs])
    return header, rows


def class_table(results: dict, preset: str) -> tuple[list, list]:
    """Per class of one preset: AP50 / AP50-95 / recall of each input."""
    inputs = results["inputs"]
    header = [("class", ""), ("objects", "labelled objects in the frames of this preset")]
    header += [(f"{n} AP50 / AP50-95 / recall", "") for n in inputs]
    rows = []
    for name in results["classes"]:
        counted = results["summary"][preset][inputs[0]]["per_class"].get(name)
        row = [(name, False), (str(counted["labels"] if counted else 0), False)]
        for n in inputs:
            cls = results["summary"][preset][n]["per_class"].get(name)
            text = "–" if cls is None else " / ".join(format_value(cls[k]) for k in ("AP50", "AP50-95", "recall"))
            row.append((text, False))
        rows.append(row)
    return header, rows


def _sections(results: dict, grids: dict[str, str], plots: dict[str, str]) -> list[Section]:
    detector = results["detector"]
    timing = results["timing"]
    meta = [
        f"command: `{results['command']}`",
        f"dataset: `{results['dataset']}` ({len(results['images'])} pairs, labels `{results['labels']}`)"
        + (f"; seed {results['settings']['seed']}" if results["settings"].get("seed") is not None else ""),
        f"detector: `{detector['model']}` at {detector['imgsz']} px on {detector['device']}, confidence "
        f">= {detector['conf']}, NMS IoU {detector['iou']}; median {1000 * (timing['median_detect_s'] or 0):.1f} ms "
        "per image",
        "objects: " + ", ".join(f"{n} {c}" for n, c in results["objects"].items())
        + (f"; not scored (the detector does not know them): {', '.join(results['classes_not_scored'])}"
           if results["classes_not_scored"] else ""),
        "versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        f"created {results['created']}, wall time {results['wall_time_s']:.1f} s",
    ]
    fusion_times = [f"{n} {1000 * t:.1f} ms" for n, t in timing["median_fuse_s"].items() if t]
    if fusion_times:
        meta.insert(4, "median fusion time per pair: " + ", ".join(fusion_times))
    sections: list[Section] = [("h1", "Detection evaluation: fused vs single-camera inputs"), ("meta", meta)]
    if results["settings"].get("bag_eval"):
        what = ("the same detector sees, for every pair the bag evaluation processed, the thermal frame (ir) and "
                "the RGB frame (vi) after the node's pre-processing, and the frame each method fused; rows are "
                "the segments of the bag's degradation timeline")
    else:
        what = ("the same detector sees each input: the infrared image (ir), the visible image (vi) or a fuser's "
                "output, after the preset degraded the pair (the seeds of mex-fusion eval)")
    sections.append(("p", what[0].upper() + what[1:] + ". mAP50 and mAP50-95 as ultralytics val computes them "
                          "(COCO matching, 101-point AP; a perfect detector scores 0.995), over the scored classes; "
                          "higher is better. Recall counts the labelled objects found at IoU >= 0.5 by a box of "
                          f"confidence >= {results['operating_conf']}. The best input of each row is bold."))
    for score, title in SCORES:
        sections.append(("h2", f"{title} per preset and input"))
        sections.append(("table", score_table(results, score)))
    if plots:
        for score, path in plots.items():
            sections.append(("image", (path, f"{score} per preset and input")))
    sections.append(("h2", "Per class"))
    for preset in results["presets"]:
        description = results["preset_descriptions"].get(preset, "")
        sections.append(("h3", preset + (f": {description}" if description else "")))
        sections.append(("table", class_table(results, preset)))
        if preset in grids:
            sections.append(("p", f"Green: labels; red: detections of confidence >= {results['operating_conf']}."))
            sections.append(("image", (grids[preset], f"detections, preset {preset}")))
    return sections


def write_report(outcome: DetectEvalOutcome, out_dir: Path) -> dict[str, Path]:
    """Write results.json, report.md, report.html and the figures into ``out_dir`` (created)."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    results = outcome.results
    grids: dict[str, str] = {}
    for preset, samples in outcome.samples.items():
        if samples:
            relative = f"images/grid_{slug(preset)}.jpg"
            save_grid(samples, results["inputs"], results["operating_conf"], out_dir / relative)
            grids[preset] = relative
    plots: dict[str, str] = {}
    for score, _ in SCORES:
        relative = f"plots/{slug(score)}.png"
        save_score_plot(results, score, out_dir / relative)
        plots[score] = relative
    sections = _sections(results, grids, plots)
    paths = {"results": out_dir / "results.json", "markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["results"].write_text(json.dumps(results, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(sections), encoding="utf-8")
    document = render_html(sections).replace("<title>Fusion evaluation</title>",
                                             "<title>Detection evaluation</title>", 1)
    paths["html"].write_text(document, encoding="utf-8")
    return paths


def markdown_table(results: dict, score: str = "mAP50") -> str:
    """One score as a Markdown table (presets x inputs), e.g. for a release note."""
    return render_markdown([("table", score_table(results, score))]).strip()
