"""`make bench`'s driver end to end on smoke-test settings: every benchmark runs and RESULTS.md gets its lines."""

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_run_all_quick_writes_one_ratio_line_per_benchmark_and_keeps_the_gpu_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    gpu = "## GPU (H200): measured twice\n\nmeasured by hand: MFU 0.31\n"
    results.write_text(f"# old results\n\n{gpu}")
    subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--quick", "--output", str(results)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    text = results.read_text()
    lines = re.findall(r"^(bench_\w+): (\d+\.\d\d) \(goal ([\d.]+)\)$", text, flags=re.MULTILINE)
    assert [name for name, _, _ in lines] == [
        "bench_pretrain",
        "bench_data",
        "bench_sft",
        "bench_activation",
        "bench_allocator",
    ]
    assert all(float(ratio) > 0 for _, ratio, _ in lines)
    goals = {name: float(goal) for name, _, goal in lines}
    assert goals == {
        "bench_pretrain": 0.95,
        "bench_data": 0.8,
        "bench_sft": 1.3,
        "bench_activation": 1.05,
        "bench_allocator": 1.1,
    }
    assert text.endswith(gpu)  # a GPU measurement is never thrown away by a CPU run


def test_a_learning_row_goes_into_the_runs_table_whatever_follows_it(tmp_path):
    from benchmarks.learning import RUNS_SECTION, add_row

    learning = tmp_path / "LEARNING.md"
    learning.write_text(
        f"# x\n\n{RUNS_SECTION}\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\nA note.\n\n## GRPO\n\n| 9 |\n"
    )
    add_row(learning, "| 3 | 4 |")
    assert learning.read_text() == (
        f"# x\n\n{RUNS_SECTION}\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n| 3 | 4 |\n\nA note.\n\n## GRPO\n\n| 9 |\n"
    )
