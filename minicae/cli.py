"""Command-line interface: argument parsing, printing and exit codes only."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _cmd_info(args):
    from .backend import info

    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"minicae backends (default: {data['default']})")
    for name, entry in data["backends"].items():
        mark = "yes" if entry["available"] else "no "
        print(f"  {name:<6} {mark}  {entry['detail']}")
    print(f"NumPy {data['numpy']}; BLAS:")
    for pool in data["blas"]:
        print("  " + ", ".join(f"{k}={v}" for k, v in pool.items() if v is not None))
    for key, value in data["env"].items():
        print(f"  env {key}={value}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="minicae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="list backends, BLAS and threads")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        print(f"minicae {args.command}: error: {exc}", file=sys.stderr)
        return 2
