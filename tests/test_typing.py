"""The public API's types, as mypy sees them from a caller's code (tests/typing/)."""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

CASES = Path(__file__).parent / "typing"


def test_revealed_types_are_the_documented_ones() -> None:
    path = CASES / "public_api.py"
    lines = path.read_text(encoding="utf-8").splitlines()
    expected = {
        number: line.split("# ", 1)[1].strip()
        for number, line in enumerate(lines, start=1)
        if "reveal_type(" in line and "# " in line
    }
    out, err, _ = api.run(["--strict", "--no-incremental", "--follow-imports=silent", str(path)])
    revealed = {
        int(m.group(1)): m.group(2)
        for m in re.finditer(r'public_api\.py:(\d+): note: Revealed type is "([^"]+)"', out)
    }
    assert revealed == expected, out + err
    assert ": error:" not in out, out
