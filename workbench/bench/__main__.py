"""`python -m workbench.bench NAME [args]`: run one benchmark (or `all`), last line key=value."""

import sys

from workbench.bench import format_summary, list_benchmarks, run_benchmark


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(f"usage: python -m workbench.bench NAME [args]   NAME in {list_benchmarks() + ['all']}")
        return 0 if len(sys.argv) >= 2 else 2
    name, rest = sys.argv[1], sys.argv[2:]
    if name == "all":
        combined = {}
        for bench in list_benchmarks():
            print(f"== {bench}", flush=True)
            figures = run_benchmark(bench, rest)
            print(format_summary(figures), flush=True)
            combined.update({f"{bench}.{k}": v for k, v in figures.items()})
        print(format_summary(combined))
        return 0
    figures = run_benchmark(name, rest)
    print(format_summary(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
