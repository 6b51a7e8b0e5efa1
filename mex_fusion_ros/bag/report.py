"""Report of an offline bag evaluation: ``bag_eval.json`` (all numbers) and ``report.html`` (figures).

Output folder layout (paths in the HTML are relative, so the folder can be moved):

    bag_eval.json          settings, sync statistics, problems, per-method summaries, per-pair records
    report.html            tables, figures, sample frames, links to the video and the output bags
    figures/*.png          metrics over time, degradation estimate vs truth, expert usage, latency
    samples/*.png          thermal | RGB | fused per method | clean references, one per timeline segment
    side_by_side.mp4       thermal | RGB | fused per method, every pair (mp4v)
    bags/<method>/         /fused/image of each method, stamped like the node's output

Figures use matplotlib's object API with the Agg canvas (no pyplot, no display needed).
"""

from __future__ import annotations

import html
import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mex_fusion_ros.bag.evaluate import BagEvalOutcome, PairRecord, percentiles
from mex_fusion_ros.data.degradations import DEGRADATION_TYPES
from mex_fusion_ros.fusion.base import DEFAULT_PRESENCE_THRESHOLD

SEGMENT_COLOURS = ("#ffffff", "#dbe9f6", "#fde0c5", "#e2f0d9", "#eadcf0", "#fff2cc", "#f4cccc")


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _metric_means(records: list[PairRecord], attribute: str) -> dict[str, float | None]:
    values: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for name, value in getattr(record, attribute).items():
            values[name].append(value)
    return {name: _mean(v) for name, v in values.items()}


def _segment_order(outcome: BagEvalOutcome) -> list[str]:
    return list(dict.fromkeys(segment["preset"] for segment in outcome.timeline))


def degradation_summary(records: list[PairRecord], timeline: list[dict]) -> dict | None:
    """Per degradation type: detection accuracy at the network's presence threshold (calibrated per
    type, 0.5 where not) and mean probability per true preset.

    None when the fuser gives no degradation estimate or the bag has no timeline.
    """
    truth_by_preset = {segment["preset"]: segment.get("severity") or {} for segment in timeline}
    scored = [r for r in records if r.degradation is not None and r.truth_preset in truth_by_preset]
    if not scored:
        return None
    summary: dict[str, dict] = {}
    for kind in DEGRADATION_TYPES:
        hits, per_preset, thresholds = [], defaultdict(list), set()
        for record in scored:
            probability = record.degradation["probabilities"].get(kind)
            if probability is None:
                continue
            # Records written before thresholds were recorded were judged at the default.
            threshold = (record.degradation.get("thresholds") or {}).get(kind, DEFAULT_PRESENCE_THRESHOLD)
            thresholds.add(threshold)
            present = truth_by_preset[record.truth_preset].get(kind, 0.0) > 0.0
            hits.append((probability >= threshold) == present)
            per_preset[record.truth_preset].append(probability)
        if hits:
            summary[kind] = {
                "accuracy": float(np.mean(hits)),
                "threshold": thresholds.pop() if len(thresholds) == 1 else sorted(thresholds),
                "mean_probability_by_true_preset": {p: float(np.mean(v)) for p, v in per_preset.items()},
            }
    return {"pairs": len(scored), "types": summary}


def expert_usage(records: list[PairRecord]) -> dict[str, dict[str, float]] | None:
    """Per gate: mean routing weight of each expert over all pairs (None when there is no routing)."""
    totals: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        for routing in record.routing:
            counts[routing["gate"]] += 1
            for expert, weight in zip(routing["experts"], routing["weights"]):
                totals[routing["gate"]][expert] += weight
    if not counts:
        return None
    return {
        gate: {f"expert_{e}": w / counts[gate] for e, w in sorted(experts.items())} for gate, experts in totals.items()
    }


def summarise(outcome: BagEvalOutcome) -> dict:
    """Per-method summary: pairs, timing percentiles, mean metrics overall and per true preset, etc."""
    presets = _segment_order(outcome)
    methods = {}
    for method, records in outcome.records.items():
        by_preset = {p: [r for r in records if r.truth_preset == p] for p in presets}
        total_s = sum(r.total_ms for r in records) / 1e3
        methods[method] = {
            "pairs": len(records),
            "pairs_scored": sum(1 for r in records if r.metrics),
            "fps": len(records) / total_s if total_s > 0 else None,
            "timing_ms": {
                "total": percentiles([r.total_ms for r in records]),
                "preprocess": percentiles([r.preprocess_ms for r in records]),
                "inference": percentiles([r.inference_ms for r in records]),
                "forward": percentiles([r.forward_ms for r in records]),
                "postprocess": percentiles([r.postprocess_ms for r in records]),
            },
            "metrics": _metric_means(records, "metrics"),
            "reference_metrics": _metric_means(records, "reference_metrics"),
            "metrics_by_preset": {p: _metric_means(rs, "metrics") for p, rs in by_preset.items() if rs},
            "reference_metrics_by_preset": {
                p: _metric_means(rs, "reference_metrics") for p, rs in by_preset.items() if rs
            },
            "degradation": degradation_summary(records, outcome.timeline),
            "expert_usage": expert_usage(records),
        }
    return methods


# ----------------------------------------------------------------------------------------- figures
def _save(figure: Figure, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=90)
    return path.name


def _shade_segments(axes, outcome: BagEvalOutcome, t0: int, label: bool) -> None:
    for number, segment in enumerate(outcome.timeline):
        start, end = (segment["start_ns"] - t0) / 1e9, (segment["end_ns"] - t0) / 1e9
        axes.axvspan(start, end, color=SEGMENT_COLOURS[number % len(SEGMENT_COLOURS)], alpha=0.6, lw=0)
        if label:
            axes.text(
                (start + end) / 2,
                1.0,
                segment["preset"],
                transform=axes.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=8,
            )


def _t0(outcome: BagEvalOutcome) -> int:
    stamps = [r.stamp_ns for records in outcome.records.values() for r in records]
    return min(stamps) if stamps else 0


def _metrics_figure(outcome: BagEvalOutcome, attribute: str, title: str, path: Path) -> str | None:
    names = list(dict.fromkeys(n for rs in outcome.records.values() for r in rs for n in getattr(r, attribute)))
    if not names:
        return None
    t0 = _t0(outcome)
    columns = 2
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(12, 2.3 * rows))
    for number, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, number + 1)
        _shade_segments(axes, outcome, t0, label=number < columns)
        for method, records in outcome.records.items():
            points = [
                ((r.stamp_ns - t0) / 1e9, getattr(r, attribute)[name]) for r in records if name in getattr(r, attribute)
            ]
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, lw=1.2, label=method)
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        if number == 0:
            axes.legend(fontsize=8, loc="lower left")
    figure.suptitle(title)
    figure.supxlabel("bag time (s)")
    figure.tight_layout()
    return _save(figure, path)


def _degradation_figure(outcome: BagEvalOutcome, method: str, path: Path) -> str | None:
    records = [r for r in outcome.records[method] if r.degradation is not None]
    if not records:
        return None
    t0 = _t0(outcome)
    truth = {segment["preset"]: segment.get("severity") or {} for segment in outcome.timeline}
    figure = Figure(figsize=(12, 1.5 * len(DEGRADATION_TYPES) + 0.8))
    xs = [(r.stamp_ns - t0) / 1e9 for r in records]
    for number, kind in enumerate(DEGRADATION_TYPES):
        axes = figure.add_subplot(len(DEGRADATION_TYPES), 1, number + 1)
        _shade_segments(axes, outcome, t0, label=number == 0)
        axes.plot(
            xs,
            [r.degradation["probabilities"].get(kind, float("nan")) for r in records],
            lw=1.2,
            label="estimated probability",
        )
        axes.plot(
            xs,
            [r.degradation["severities"].get(kind, float("nan")) for r in records],
            lw=1.0,
            ls=":",
            label="estimated severity",
        )
        if truth:
            axes.step(
                xs,
                [truth.get(r.truth_preset, {}).get(kind, 0.0) for r in records],
                where="post",
                color="black",
                ls="--",
                lw=1.0,
                label="true severity",
            )
        axes.set_ylim(-0.05, 1.05)
        axes.set_ylabel(kind, rotation=0, ha="right", fontsize=8)
        if number == 0:
            axes.legend(fontsize=7, loc="upper left", ncol=3)
    figure.suptitle(f"{method}: degradation estimate vs the bag's timeline")
    figure.supxlabel("bag time (s)")
    figure.tight_layout()
    return _save(figure, path)


def _experts_figure(outcome: BagEvalOutcome, method: str, path: Path) -> str | None:
    records = [r for r in outcome.records[method] if r.routing]
    if not records:
        return None
    t0 = _t0(outcome)
    gates = list(dict.fromkeys(route["gate"] for r in records for route in r.routing))
    figure = Figure(figsize=(12, 2.0 * len(gates) + 0.8))
    for number, gate in enumerate(gates):
        axes = figure.add_subplot(len(gates), 1, number + 1)
        _shade_segments(axes, outcome, t0, label=number == 0)
        experts = sorted({e for r in records for route in r.routing if route["gate"] == gate for e in route["experts"]})
        xs, weights = [], np.zeros((len(experts), len(records)))
        for column, record in enumerate(records):
            xs.append((record.stamp_ns - t0) / 1e9)
            for route in record.routing:
                if route["gate"] == gate:
                    for expert, weight in zip(route["experts"], route["weights"]):
                        weights[experts.index(expert), column] = weight
        axes.stackplot(xs, weights, labels=[f"expert {e}" for e in experts], alpha=0.85)
        axes.set_ylabel(gate, rotation=0, ha="right", fontsize=8)
        axes.legend(fontsize=7, loc="upper left", ncol=min(8, len(experts)))
    figure.suptitle(f"{method}: expert routing weights per gate")
    figure.supxlabel("bag time (s)")
    figure.tight_layout()
    return _save(figure, path)


def _detection_figure(outcome: BagEvalOutcome, path: Path, max_classes: int = 4) -> str | None:
    """Detections per class over time, one panel per class (the most frequent ones), a line per source."""
    detection = outcome.detection
    if not detection or not detection["counts"]:
        return None
    totals: dict[str, int] = defaultdict(int)
    for rows in detection["counts"].values():
        for row in rows:
            for name, n in row["counts"].items():
                totals[name] += n
    classes = sorted(totals, key=lambda c: -totals[c])[:max_classes]
    if not classes:
        return None
    t0 = _t0(outcome)
    figure = Figure(figsize=(12, 2.2 * len(classes) + 0.8))
    for number, name in enumerate(classes):
        axes = figure.add_subplot(len(classes), 1, number + 1)
        _shade_segments(axes, outcome, t0, label=number == 0)
        for source, rows in detection["counts"].items():
            axes.plot(
                [(r["stamp_ns"] - t0) / 1e9 for r in rows],
                [r["counts"].get(name, 0) for r in rows],
                lw=1.0,
                label=source,
            )
        axes.set_ylabel(name)
        if number == 0:
            axes.legend(fontsize=7, loc="upper left", ncol=4)
    figure.suptitle(f"Detections per class ({detection['model']}, confidence >= {detection['conf']})")
    figure.supxlabel("bag time (s)")
    figure.tight_layout()
    return _save(figure, path)


def _detection_section(outcome: BagEvalOutcome, figure: str | None) -> list[str]:
    detection = outcome.detection
    if not detection:
        return [
            "<h2>Detection</h2><p>No detector was run (<code>--detector MODEL</code> adds detection counts "
            "and, with labels, mAP for fused vs thermal-only vs RGB-only inputs).</p>"
        ]
    parts = ["<h2>Detection</h2>"]
    rows = []
    for source, rows_of_source in detection["counts"].items():
        total = sum(sum(r["counts"].values()) for r in rows_of_source)
        result = detection["map"].get(source, {})
        rows.append([html.escape(source), str(total), _fmt(result.get("mAP50")), _fmt(result.get("mAP50-95"))])
    parts.append(_table(["input", "detections", "mAP50", "mAP50-95"], rows))
    if detection["labels"]:
        parts.append(f"<p>Labels: <code>{html.escape(detection['labels'])}</code>.</p>")
    else:
        parts.append("<p>No labels for this bag: counts only.</p>")
    if figure:
        parts.append(f"<img src='figures/{figure}'>")
    return parts


def _latency_figure(outcome: BagEvalOutcome, path: Path) -> str | None:
    if not any(outcome.records.values()):
        return None
    figure = Figure(figsize=(8, 3.5))
    axes = figure.add_subplot(1, 1, 1)
    for method, records in outcome.records.items():
        if records:
            axes.hist([r.total_ms for r in records], bins=40, alpha=0.6, label=method)
    axes.set_xlabel("processing time per pair (ms): preprocess + fuse + postprocess")
    axes.set_ylabel("pairs")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


# ----------------------------------------------------------------------------------------- HTML
def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metric_table(summary: dict, key: str) -> str:
    names = list(dict.fromkeys(n for s in summary.values() for n in s[key]))
    if not names:
        return ""
    rows = [[html.escape(method)] + [_fmt(s[key].get(n)) for n in names] for method, s in summary.items()]
    return _table(["method", *names], rows)


def _preset_table(summary: dict, key: str, metric: str) -> str:
    presets = list(dict.fromkeys(p for s in summary.values() for p in s[key]))
    if not presets:
        return ""
    rows = [
        [html.escape(method)] + [_fmt(s[key].get(p, {}).get(metric)) for p in presets] for method, s in summary.items()
    ]
    return _table([f"{metric} by true preset", *presets], rows)


def _relative(path: str | Path, out: Path) -> str:
    """``path`` relative to the report folder (the report may be written elsewhere than the run)."""
    return os.path.relpath(Path(path).resolve(), out.resolve())


def _live_section(live: dict) -> list[str]:
    """HTML of a live replay (``replay.LiveReplayOutcome.to_json()`` + ``comparison`` of the frames)."""
    parts = ["<h2>Live replay through the ROS graph</h2>"]
    published = ", ".join(f"{html.escape(t)} {n}" for t, n in live["published"].items())
    parts.append(
        f"<p>Nodes: {html.escape(', '.join(live['nodes']))}. Published {published}; the fusion node "
        f"published <b>{live['fused_frames']} fused frames</b> in {live['wall_s']:.1f} s.</p>"
    )
    latency = live.get("latency_ms") or {}
    if latency:
        parts.append(
            "<p>Latency from the RGB frame's publication to the fused frame's arrival (DDS both ways, "
            "sync, fusion): "
            + ", ".join(f"{k} {_fmt(latency[k])} ms" for k in ("p50", "p90", "p99", "max") if k in latency)
            + "</p>"
        )
    comparison = live.get("comparison")
    if comparison:
        parts.append(
            f"<p>Offline evaluation saw {comparison['frames_a']} pairs, the live graph fused "
            f"{comparison['frames_b']}; {comparison['common']} pairs were seen by both and "
            f"<b>{comparison['identical']} of them are bit-identical</b>"
            + (
                f" (max |difference| {comparison['max_abs_diff']})"
                if comparison["identical"] < comparison["common"]
                else ""
            )
            + ".</p>"
        )
    return parts


def write_report(outcome: BagEvalOutcome, out: Path, live: dict | None = None) -> dict[str, Path]:
    """Write ``bag_eval.json`` and ``report.html`` (with figures) into ``out``; returns their paths.

    ``live``: a live replay of the same bag (``replay.LiveReplayOutcome.to_json()`` plus a
    ``comparison`` from ``compare_command.compare_bags``) to report beside the offline run.
    """
    out.mkdir(parents=True, exist_ok=True)
    figures = out / "figures"
    summary = summarise(outcome)
    document = outcome.to_json()
    document["summary"] = summary
    if live is not None:
        document["live_replay"] = live
    json_path = out / "bag_eval.json"
    json_path.write_text(json.dumps(document, indent=1, default=str))

    figure_files = {
        "metrics": _metrics_figure(
            outcome,
            "metrics",
            "No-reference metrics (fused vs the degraded inputs)",
            figures / "metrics_over_time.png",
        ),
        "reference": _metrics_figure(
            outcome,
            "reference_metrics",
            "Metrics against the clean reference frames",
            figures / "reference_metrics_over_time.png",
        ),
        "latency": _latency_figure(outcome, figures / "latency_histogram.png"),
        "detection": _detection_figure(outcome, figures / "detections_over_time.png"),
    }
    per_method_figures = {}
    for number, method in enumerate(outcome.records):
        per_method_figures[method] = (
            _degradation_figure(outcome, method, figures / f"degradation_{number}.png"),
            _experts_figure(outcome, method, figures / f"experts_{number}.png"),
        )

    sync = outcome.sync
    parts = [
        f"<h1>Offline bag evaluation: {html.escape(Path(outcome.settings['bag']).name)}</h1>",
        f"<p>Bag <code>{html.escape(outcome.settings['bag'])}</code> "
        f"({html.escape(outcome.bag_info['storage'])}, "
        f"{outcome.bag_info['duration_s']:.2f} s). Methods: {html.escape(', '.join(outcome.records))}. "
        f"<b>{outcome.pairs_processed} pairs processed</b> in {outcome.elapsed_s:.1f} s "
        f"(including metrics and writing).</p>",
    ]
    if outcome.stopped_early:
        problem = bag_problem_text(outcome.stopped_early, outcome.pairs_processed)
        parts.append(f"<p class='warn'>{html.escape(problem)}</p>")
    if outcome.problems:
        parts.append(
            "<p class='warn'>Problems: "
            + "; ".join(f"{html.escape(k)} ({v})" for k, v in outcome.problems.items())
            + "</p>"
        )
    if outcome.failures:
        parts.append(
            "<p class='warn'>Fusion failures: "
            + "; ".join(f"{html.escape(k)} ({v})" for k, v in outcome.failures.items())
            + "</p>"
        )
    if outcome.timeline:
        parts.append(
            "<p>Degradation timeline: " + " → ".join(html.escape(s["preset"]) for s in outcome.timeline) + "</p>"
        )

    parts.append("<h2>Synchronisation</h2>")
    rows = []
    for camera in ("thermal", "rgb"):
        counts = sync[camera]
        dropped = ", ".join(f"{k} {v}" for k, v in counts["dropped"].items()) or "none"
        rows.append([camera, str(counts["received"]), str(counts["matched"]), html.escape(dropped)])
    parts.append(
        f"<p>Mode {sync['mode']}, slop {sync['slop_s'] * 1e3:.1f} ms, thermal offset "
        f"{sync['thermal_offset_s'] * 1e3:.1f} ms, queue {sync['queue_size']}: {sync['pairs']} pairs.</p>"
    )
    parts.append(_table(["camera", "frames received", "paired", "dropped (reason count)"], rows))
    skews = [abs(r.skew_ms) for records in outcome.records.values() for r in records[:]]
    if skews:
        parts.append(f"<p>|skew| between paired stamps: median {np.median(skews):.2f} ms, max {max(skews):.2f} ms.</p>")

    parts.append("<h2>Processing time per pair</h2>")
    rows = []
    for method, s in summary.items():
        t = s["timing_ms"]["total"]
        f = s["timing_ms"]["forward"]
        rows.append(
            [
                html.escape(method),
                str(s["pairs"]),
                _fmt(s["fps"]),
                _fmt(t.get("mean")),
                _fmt(t.get("p50")),
                _fmt(t.get("p90")),
                _fmt(t.get("p99")),
                _fmt(t.get("max")),
                _fmt(f.get("p50")),
            ]
        )
    parts.append(_table(["method", "pairs", "pairs/s", "mean ms", "p50", "p90", "p99", "max", "forward p50"], rows))
    if figure_files["latency"]:
        parts.append(f"<img src='figures/{figure_files['latency']}'>")

    parts.append(
        "<h2>Quality</h2><p>No-reference metrics: the fused frame against the degraded, registered "
        "inputs (mean over scored pairs; EN, SD, SF, AG use the fused frame alone).</p>"
    )
    parts.append(_metric_table(summary, "metrics"))
    if any(s["reference_metrics"] for s in summary.values()):
        parts.append("<p>Against the clean reference frames (<code>/reference/*</code>):</p>")
        parts.append(_metric_table(summary, "reference_metrics"))
        parts.append(_preset_table(summary, "reference_metrics_by_preset", "VIF"))
        parts.append(_preset_table(summary, "reference_metrics_by_preset", "Q_abf"))
    parts.append(_preset_table(summary, "metrics_by_preset", "EN"))
    for key in ("metrics", "reference"):
        if figure_files[key]:
            parts.append(f"<img src='figures/{figure_files[key]}'>")

    parts.append("<h2>Degradation estimate and expert routing</h2>")
    any_network = False
    for method, (degradation_png, experts_png) in per_method_figures.items():
        degradation = summary[method]["degradation"]
        if degradation:
            any_network = True
            rows = [
                [kind, _fmt(v["threshold"]) if not isinstance(v["threshold"], list)
                 else ", ".join(_fmt(t) for t in v["threshold"]), _fmt(v["accuracy"])]
                + [_fmt(v["mean_probability_by_true_preset"].get(p)) for p in _segment_order(outcome)]
                for kind, v in degradation["types"].items()
            ]
            parts.append(f"<h3>{html.escape(method)}</h3>")
            parts.append(
                _table(["type", "threshold", "accuracy", *[f"mean p | {p}" for p in _segment_order(outcome)]], rows)
            )
        for png in (degradation_png, experts_png):
            if png:
                any_network = True
                parts.append(f"<img src='figures/{png}'>")
    if not any_network:
        parts.append(
            "<p>None of the methods reports a degradation estimate or expert routing (classical baselines do not).</p>"
        )

    parts.append("<h2>Sample frames</h2>")
    for sample in outcome.samples:
        rel = _relative(sample["path"], out)
        parts.append(
            f"<p>{html.escape(sample['label'])} (pair {sample['index']}): "
            f"{html.escape(' | '.join(sample['panels']))}</p><img src='{html.escape(str(rel))}'>"
        )
    if outcome.video:
        parts.append(
            f"<p>Side-by-side video (thermal | RGB | fused per method): "
            f"<a href='{html.escape(_relative(outcome.video, out))}'>{Path(outcome.video).name}</a></p>"
        )
    if outcome.bags:
        parts.append(
            "<p>Fused output bags (<code>/fused/image</code>): "
            + ", ".join(
                f"{html.escape(m)}: <code>{html.escape(_relative(p, out))}</code>" for m, p in outcome.bags.items()
            )
            + "</p>"
        )
    if live is not None:
        parts += _live_section(live)
    parts += _detection_section(outcome, figure_files["detection"])
    parts.append(f"<p>All numbers: <a href='{json_path.name}'>{json_path.name}</a></p>")

    style = (
        "body{font-family:sans-serif;max-width:1300px;margin:auto} "
        "table{border-collapse:collapse;margin:8px 0}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right} img{max-width:100%}"
        ".warn{color:#a40000}"
    )
    html_path = out / "report.html"
    html_path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>bag eval</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    return {"json": json_path, "html": html_path}


def bag_problem_text(problem: str, pairs: int) -> str:
    """What happened to the bag, in the words the report and ``bag eval`` print.

    A cut-off bag "ended early"; a damaged one (or one with broken metadata) was read on past the
    damage, so its pairs are not only those before it.
    """
    if "truncated" in problem:
        return f"The bag ended early: {problem}. Everything here covers the {pairs} pairs read before that."
    return f"Bag problem: {problem}. Everything here covers the {pairs} pairs made from what could be read."
