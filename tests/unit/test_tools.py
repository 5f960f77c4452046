"""The pre-commit hooks in tools/: the secrets scan and the notebook output check."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCAN = runpy.run_path(str(ROOT / "tools" / "scan_secrets.py"))
# Built at run time, so this file itself never holds what the scan refuses.
REAL_LOOKING = "943" + "4765919"  # passes Modulus 11, not in the synthetic 999 range
PEM = "-----BEGIN " + "PRIVATE KEY-----"


def test_a_real_looking_nhs_number_is_found_and_a_synthetic_one_is_not():
    findings = SCAN["findings"]
    spaced = f"{REAL_LOOKING[:3]} {REAL_LOOKING[3:6]} {REAL_LOOKING[6:]}"
    assert findings(f"patient {spaced} seen") == [
        (1, "a valid NHS number that is not synthetic (999...)")
    ]
    assert findings(f"patient {REAL_LOOKING}") != []
    assert findings("synthetic 9990000018 and 999 000 0018") == []
    # Ten digits that fail Modulus 11 are not NHS numbers (e.g. timestamps, counts).
    assert findings(REAL_LOOKING[:-1] + "8") == []


def test_keys_are_found():
    findings = SCAN["findings"]
    assert findings("key: rsk_abcdef12_" + "x" * 32) == [(1, "a riskstrat API key")]
    assert findings(PEM) == [(1, "a private key")]


def test_the_repository_holds_no_secrets():
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    paths = [str(ROOT / f) for f in files if (ROOT / f).is_file()]
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "scan_secrets.py"), *paths],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


def test_notebook_outputs_are_refused(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": "1", "outputs": [], "execution_count": None}]}
    clean = tmp_path / "clean.ipynb"
    clean.write_text(json.dumps(nb))
    nb["cells"][0]["outputs"] = [{"output_type": "stream", "text": "999 000 0018"}]
    dirty = tmp_path / "dirty.ipynb"
    dirty.write_text(json.dumps(nb))
    check = [sys.executable, str(ROOT / "tools" / "check_notebooks.py")]
    assert subprocess.run([*check, str(clean)]).returncode == 0
    refused = subprocess.run([*check, str(dirty)], capture_output=True, text=True)
    assert refused.returncode == 1 and "cell 1 has outputs" in refused.stderr
