"""`make bench` / `make bench-smoke`: run the benchmark harness and (optionally) write BENCHMARKS.md.

.venv/bin/python bench/run.py --write BENCHMARKS.md     # full size (about 15 minutes on 2 cores)
.venv/bin/python bench/run.py --smoke                   # 20 LLMs, small counts everywhere, no targets
.venv/bin/python bench/run.py --only fairness --write BENCHMARKS.md   # `make bench-fairness`: the fair-share
                                   # phase alone (a few minutes); --write replaces just its section of the file
.venv/bin/python bench/run.py --only connections --write BENCHMARKS.md   # `make bench-connections`: the
                                   # connections phase alone (issue #15), likewise
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import cast

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import FULL, SMOKE, run_bench
from bench.report import ALONE, render, render_only, splice_only
from bench.results import Results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="the toy size the test suite runs (no targets)")
    p.add_argument("--write", type=Path, metavar="FILE", help="write the Markdown report here (e.g. BENCHMARKS.md)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the raw results as JSON")
    p.add_argument("--logs", type=Path, metavar="DIR", help="keep the operator, emulator logs here")
    p.add_argument("--from-json", type=Path, metavar="FILE", help="render results saved by --json (no run)")
    p.add_argument(
        "--only",
        choices=sorted(ALONE),
        help="run one phase alone; with --write, only its section of an existing file is replaced",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record the operator with py-spy during the first convergence run (py-spy must be installed)",
    )
    args = p.parse_args(argv)

    if args.from_json:
        results = cast(Results, json.loads(args.from_json.read_text()))
    else:
        results = run_bench(SMOKE if args.smoke else FULL, keep_dir=args.logs, profile_dir=args.profile, only=args.only)
    if results.get("only"):
        text = render_only(results)
        if args.write and args.write.exists():
            text = splice_only(args.write.read_text(), results)
    else:
        text = render(results)
    if args.json and not args.from_json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    if args.write:
        args.write.write_text(text)
        print(f"wrote {args.write}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
