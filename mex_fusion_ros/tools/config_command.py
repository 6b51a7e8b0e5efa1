"""``mex-fusion config``: validate a parameters file, or print the defaults file."""
from __future__ import annotations

import argparse
import json
import sys

from mex_fusion_ros.config import (
    ConfigError,
    default_config_path,
    load_config,
    render_defaults_yaml,
    render_markdown_reference,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="parameters file to validate (default: the installed fusion.yaml)")
    parser.add_argument("--defaults", action="store_true", help="print the defaults file with every key documented")
    parser.add_argument("--markdown", action="store_true", help="print the parameter reference as Markdown tables")
    parser.add_argument("--json", action="store_true", help="print the merged, validated parameters as JSON")


def run(args: argparse.Namespace) -> int:
    if args.defaults:
        print(render_defaults_yaml(), end="")
        return 0
    if args.markdown:
        print(render_markdown_reference(), end="")
        return 0
    path = args.file or default_config_path()
    try:
        config = load_config(path)
    except ConfigError as error:
        print(f"mex-fusion config: invalid: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(config, indent=2))
    else:
        print(f"{path}: valid ({', '.join(f'{n}: {len(p)} parameters' for n, p in config.items())})")
    return 0
