"""pre-commit hook: notebooks are committed without outputs or execution counts.

Outputs of an analyst's run can hold patient-level rows; CI runs the notebooks afresh, so
nothing of value is lost by stripping them (what nbstripout does, without a download).
"""

from __future__ import annotations

import json
import sys


def main(paths: list[str]) -> int:
    bad = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            notebook = json.load(f)
        for number, cell in enumerate(notebook.get("cells", []), start=1):
            if cell.get("outputs") or cell.get("execution_count") is not None:
                bad.append(f"{path}: cell {number} has outputs; clear them before committing")
    print("\n".join(bad), file=sys.stderr) if bad else None
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
