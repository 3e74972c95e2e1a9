"""`python -m workbench` lists the entry points."""

print(
    "MedAlign Workbench entry points:\n"
    "  python -m workbench.cli {notebook,pipeline,sweep}    run notebooks headless into papermill_runs/\n"
    "  python -m workbench.train --config NAME [--a.b v]    train one method\n"
    "  python -m workbench.ober --input IN --output OUT     label reports\n"
    "  python -m workbench.mining --input ober.parquet ...  mine triplets\n"
    "  python -m workbench.bench NAME|all                   benchmarks"
)
