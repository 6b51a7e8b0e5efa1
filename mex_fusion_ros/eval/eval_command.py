"""``mex-fusion eval``: fuse degraded real pairs with several methods, score them, write a report."""
from __future__ import annotations

import argparse
import ctypes
import shlex
import sys
from pathlib import Path

from mex_fusion_ros.data.degradations import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path,
                        help="dataset folder with ir/ (or infrared/) and vi/ (vis/, visible/) sub-folders")
    parser.add_argument("--preset", action="append", required=True, metavar="P",
                        help="degradation preset, repeatable; 'all' = the paper set. "
                             f"Valid: {', '.join(PRESETS)}")
    parser.add_argument("--method", action="append", default=[], metavar="M",
                        help="fuser spec, repeatable: average, max, laplacian, gff, cascade "
                             "('baselines' = all five), nano/small/paper (shipped weights), "
                             "NAME:weights.pt or weights.pt")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (results.json, report.md/.html)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N pairs (sorted by name)")
    parser.add_argument("--max-side", type=int, metavar="PIXELS",
                        help="shrink every pair so that its longer side is at most this "
                             "(default: original size)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degradations (default 0)")
    parser.add_argument("--device", default="auto", help="device of model methods: auto, cpu, cuda, cuda:N")
    parser.add_argument("--half", action="store_true", help="fp16 inference for model methods (CUDA)")
    parser.add_argument("--grid-images", type=int, default=2, metavar="N",
                        help="images per preset in the report's image grid (default 2)")
    parser.add_argument("--pairs", type=Path, metavar="FILE",
                        help="text file of pair names (one per line): evaluate only these pairs, e.g. a "
                             "held-out split such as config/splits/msrs_val.txt")
    parser.add_argument("--input-bits", type=int, default=8, choices=(8, 16, 0),
                        help="round the degraded inputs to 8 or 16 bits, as a camera or an image file "
                             "delivers them (0 = keep float); default 8")
    parser.add_argument("--save-inputs", type=Path, metavar="DIR",
                        help="write the degraded inputs as DIR/<preset>/ir|vi/<name>.png (+ inputs.json) "
                             "so another tool can fuse exactly what the methods fused")
    parser.add_argument("--external", action="append", default=[], metavar="NAME=DIR",
                        help="score fused images another tool wrote for the saved inputs "
                             "(DIR/<preset>/<name>.png) as method NAME; repeatable")
    parser.add_argument("--reference", action="append", default=[], type=Path, metavar="FILE.json",
                        help="reference figures {preset: {method: {metric: mean}}} (e.g. published "
                             "networks) shown beside the runs, marked (ref); repeatable")
    parser.add_argument("--presence-threshold", type=float, default=None, metavar="P",
                        help="judge every degradation type present at probability >= P instead of at the "
                             "thresholds calibrated for each network's weights (mex-fusion calibrate; 0.5 "
                             "for uncalibrated weights)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def command_line(args: argparse.Namespace) -> str:
    """The command as it could be typed again (recorded in results.json)."""
    parts = ["mex-fusion", "eval", "--data", str(args.data)]
    parts += [item for preset in args.preset for item in ("--preset", preset)]
    parts += [item for method in args.method for item in ("--method", method)]
    parts += [item for spec in args.external for item in ("--external", spec)]
    parts += [item for path in args.reference for item in ("--reference", str(path))]
    parts += ["--out", str(args.out), "--seed", str(args.seed)]
    for flag, value in (("--limit", args.limit), ("--max-side", args.max_side), ("--pairs", args.pairs),
                        ("--save-inputs", args.save_inputs)):
        if value is not None:
            parts += [flag, str(value)]
    if args.input_bits != 8:
        parts += ["--input-bits", str(args.input_bits)]
    if args.presence_threshold is not None:
        parts += ["--presence-threshold", str(args.presence_threshold)]
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.half:
        parts.append("--half")
    return shlex.join(parts)


def reuse_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process instead of returning it to the kernel.

    The metrics allocate and free tens of MB of numpy temporaries per image; with glibc's default
    thresholds each large block is a fresh mmap whose pages the kernel must fault in and zero, which
    measured 65 ms of system time per ``fusion_metrics`` call on a 543x358 pair (1 ms with this).
    Returns False where it does not apply (not glibc); the evaluation is then only slower.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    limit = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit systems
    return bool(libc.mallopt(m_trim_threshold, limit) and libc.mallopt(m_mmap_threshold, limit))


def run(args: argparse.Namespace) -> int:
    # Imported here: argument parsing and --help stay fast.
    from mex_fusion_ros.eval.report import write_report
    from mex_fusion_ros.eval.runner import EvalError, EvalSettings, run_evaluation

    settings = EvalSettings(
        data=args.data, presets=tuple(args.preset), methods=tuple(args.method), limit=args.limit,
        max_side=args.max_side, seed=args.seed, device=args.device, half=args.half,
        grid_images=max(0, args.grid_images), command=command_line(args), pairs=args.pairs,
        input_bits=args.input_bits, save_inputs=args.save_inputs, externals=tuple(args.external),
        references=tuple(args.reference), presence_threshold=args.presence_threshold,
    )
    if not args.method and not args.external:
        print("mex-fusion eval: error: give at least one --method or --external", file=sys.stderr)
        return 2
    reuse_freed_memory()
    try:
        outcome = run_evaluation(settings, progress=not args.no_progress)
    except EvalError as error:
        print(f"mex-fusion eval: error: {error}", file=sys.stderr)
        return 2
    paths = write_report(outcome, args.out)
    results = outcome.results
    print(f"evaluated {len(results['methods'])} methods x {len(results['presets'])} presets x "
          f"{len(results['images'])} pairs in {results['wall_time_s']:.1f} s")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
