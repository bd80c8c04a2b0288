"""Run the CPU benchmarks, each in a fresh process with its defaults, and rewrite benchmarks/RESULTS.md.

RESULTS.md opens with one line per benchmark, `<benchmark>: <measured ratio> (goal <goal ratio>)`, then gives each
benchmark's command, environment, repeats and settings. A "GPU (...)" section already in the file is kept verbatim.

python benchmarks/run_all.py                                  # make bench: the full CPU run
python benchmarks/run_all.py --quick --output /tmp/RESULTS.md  # smoke test of this script: tiny settings, seconds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO_ROOT

# The benchmarks, each run with its defaults; --quick adds these settings (numbers too small to mean anything).
QUICK = {
    "bench_pretrain": ["--repeats", "1", "--warmup", "1", "--measure", "2", "--max_documents", "20"],
    "bench_data": ["--repeats", "1", "--max_documents", "50"],
    "bench_sft": ["--repeats", "1", "--examples", "16"],
    "bench_activation": ["--repeats", "1", "--warmup", "1", "--measure", "2", "--max_documents", "20"],
    "bench_allocator": ["--repeats", "1", "--steps", "3", "--max_documents", "20"],
}
GPU_HEADING = "## GPU ("  # "## GPU (H100)", "## GPU (H200): measured twice, ...": whatever the GPU and the note
GPU_NOT_MEASURED = """## GPU (H100)

The MFU of recipes/gpt2/pretrain.yaml (GPT-2 124M, bf16) has not been measured in this run. On an H100/H200,
`bash benchmarks/gpu_check.sh OUT_DIR` measures it and runs the gpt2 pipeline on CUDA (benchmarks/README.md); the
benchmark alone:

    python benchmarks/bench_pretrain.py --recipe recipes/gpt2/pretrain.yaml
"""


def run_benchmark(name: str, args: list[str], workdir: Path) -> tuple[dict, str, float]:
    """Run one benchmark in its own process; its result, the command that reproduces it, and its wall time."""
    json_path = workdir / f"{name}.json"
    command = [f"benchmarks/{name}.py", *args]
    print(f"== {' '.join(command)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    # The child's stdout (its JSON, the Trainer's logs) goes to our stderr: our stdout is left for the summary.
    subprocess.run([sys.executable, *command, "--json", str(json_path)], cwd=REPO_ROOT, stdout=sys.stderr, check=True)
    seconds = time.perf_counter() - started
    return json.loads(json_path.read_text()), " ".join(["python", *command]), seconds


def summary_line(name: str, result: dict) -> str:
    return f"{name}: {result['ratio']:.2f} (goal {result['goal']:g})"


def fmt(key: str, value) -> str:
    if isinstance(value, list):
        return ", ".join(fmt(key, item) for item in value)
    if isinstance(value, float):
        if "share" in key or key.startswith("mfu"):
            return f"{value:.1%}"
        return f"{value:,.0f}" if value >= 100 else f"{value:.3f}"
    return str(value)


def details(name: str, result: dict, command: str, seconds: float) -> str:
    measured = {k: v for k, v in result.items() if k not in ("benchmark", "ratio", "goal", "environment", "settings")}
    lines = [f"## {name}", "", f"{result['benchmark']}: ratio of medians {result['ratio']:.3f}.", "", "```", command]
    lines += ["```", "", "Measured:", ""]
    lines += [f"- {key}: {fmt(key, value)}" for key, value in measured.items()]
    lines += ["", "Settings:", ""]
    lines += [f"- {key}: {fmt(key, value)}" for key, value in result["settings"].items()]
    lines += [f"- wall time of the whole benchmark process: {seconds:.0f} s", "", "Environment:", ""]
    lines += [f"- {key}: {value}" for key, value in result["environment"].items()]
    return "\n".join(lines)


def gpu_section(previous: Path) -> str:
    """The previous file's GPU section verbatim (up to the next `## ` heading), or the not-measured note."""
    text = previous.read_text() if previous.exists() else ""
    start = text.find(f"\n{GPU_HEADING}")
    if start < 0:
        return GPU_NOT_MEASURED
    end = text.find("\n## ", start + 1)
    return text[start + 1 : end + 1 if end >= 0 else len(text)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the script, not the speed")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_") as workdir:
        runs = {name: run_benchmark(name, QUICK[name] if args.quick else [], Path(workdir)) for name in QUICK}
    summary = [summary_line(name, result) for name, (result, _, _) in runs.items()]
    sections = [details(name, *run) for name, run in runs.items()]
    title = "# Benchmark results" + (" (--quick: smoke-test settings, not a measurement)" if args.quick else "")
    text = "\n\n".join([title, "\n".join(summary), *sections, gpu_section(args.output)])
    args.output.write_text(text.rstrip("\n") + "\n")
    print("\n".join(summary))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
