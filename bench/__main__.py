"""Run the benchmark rows and write bench/RESULTS.md and bench/results.json.

    python -m bench            # the full sizes (make bench)
    python -m bench --smoke    # one repetition, small sizes (the test suite runs this)

A full run of every row into bench/ also puts its table into README.md, between the markers.

Each row times ours and its yardstick interleaved (A B A B ...) so drift cancels, and reports
the medians and their ratio against the target (or, for a target in seconds added, their
difference: shown in the row's note, the ratio column left empty)."""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .rows import ROWS, Context

README = Path(__file__).resolve().parents[1] / "README.md"
DEFAULT_OUT = Path(__file__).resolve().parent
BEGIN, END = "<!-- bench table: written by `make bench` -->", "<!-- end of bench table -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="one repetition, small sizes")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per row")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where RESULTS.md and results.json go")
    parser.add_argument("--only", action="append", default=[], help="run only these rows (by key)")
    args = parser.parse_args(argv)
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="anna-run-bench-"))
    ctx = Context(work=work, smoke=args.smoke, reps=args.reps or (1 if args.smoke else 10))
    results = []
    started = time.monotonic()
    try:
        for row in ROWS:
            if args.only and row.key not in args.only:
                continue
            print(f"[bench] {row.title} ...", file=sys.stderr, flush=True)
            produced = row.run(ctx)
            for result in produced if isinstance(produced, list) else [produced]:
                results.append(result)
                print(f"[bench]   {format_line(result)}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {platform.system()}",
        "python": platform.python_version(),
        "smoke": args.smoke,
        "reps": ctx.reps,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": results}, indent=2) + "\n")
    table = render(results, meta)
    (args.out / "RESULTS.md").write_text(table)
    if not args.smoke and not args.only and args.out == DEFAULT_OUT:
        update_readme(README, table)
    print(table)
    return 0


def update_readme(readme: Path, table: str) -> bool:
    """Put the table of a full run between the README's markers, so the README shows the latest
    full run; False (README untouched) when the markers are not there."""
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return False
    body = table.split("\n", 2)[2].strip("\n")  # without the "# anna-run benchmarks" title
    readme.write_text(text[: start + len(BEGIN)] + "\n" + body + "\n" + text[end:])
    return True


def compile_bytecode() -> None:
    """Byte-compile anna_run as a wheel install would. An editable checkout under
    PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module on every start (~30 ms)."""
    import compileall

    import anna_run

    compileall.compile_dir(Path(anna_run.__file__).parent, quiet=1)


def format_line(r: dict) -> str:
    ours = "" if r["ours"] is None else f"{r['ours']:.3f} {r['unit']}"
    yard = "" if r["yardstick"] is None else f" vs {r['yardstick']:.3f} {r['unit']}"
    ratio = "" if r["ratio"] is None else f" ratio {r['ratio']:.2f}"
    added = "" if r.get("added") is None else f" added {r['added']:+.3f} {r['unit']}"
    return f"{ours}{yard}{ratio}{added} target {r['target']}: {r['verdict']}"


def render(results: list[dict], meta: dict) -> str:
    lines = [
        "# anna-run benchmarks",
        "",
        f"{meta['when']} · {meta['machine']} · Python {meta['python']} · "
        f"{meta['reps']} repetition(s) per side, interleaved · {meta['seconds']} s"
        + (" · **smoke run (small sizes)**" if meta["smoke"] else ""),
        "",
        "| row | ours (median) | yardstick (median) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ours = "—" if r["ours"] is None else f"{r['ours']:.3f} {r['unit']}"
        yard = "—" if r["yardstick"] is None else f"{r['yardstick']:.3f} {r['unit']} ({r['yardstick_name']})"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['title']} | {ours} | {yard} | {ratio} | {r['target']} | {r['verdict']} |")
    notes = [f"- **{r['title']}**: {r['note']}" for r in results if r.get("note")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
