"""pre-commit hook: no real-looking NHS numbers, API keys or private keys in committed text.

Synthetic NHS numbers start with 999 and are allowed (tests and fixtures use them). A
ten-digit number that passes the Modulus 11 check and does not start with 999 is refused,
as are riskstrat API keys (``rsk_<prefix>_<secret>``) and PEM private keys.
"""

from __future__ import annotations

import re
import sys

NHS_LIKE = re.compile(r"(?<![\w.-])(\d{3})[ -]?(\d{3})[ -]?(\d{4})(?![\w.-])")
API_KEY = re.compile(r"\brsk_[A-Za-z0-9]{6,}_[A-Za-z0-9_-]{20,}")
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def _mod11_valid(digits: str) -> bool:
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(digits[9])


def findings(text: str) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for m in NHS_LIKE.finditer(line):
            digits = "".join(m.groups())
            if not digits.startswith("999") and _mod11_valid(digits):
                found.append((number, "a valid NHS number that is not synthetic (999...)"))
        if API_KEY.search(line):
            found.append((number, "a riskstrat API key"))
        if PRIVATE_KEY.search(line):
            found.append((number, "a private key"))
    return found


def main(paths: list[str]) -> int:
    bad = 0
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        for line, what in findings(text):
            print(f"{path}:{line}: {what}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
