"""`python -m captioner.report SWEEP_DIR`: compare a sweep's runs (report.md, charts, a table).

The command's code is captioner/compare/report.py; this module only names it.
"""

from captioner.compare.report import main

if __name__ == "__main__":
    main()
