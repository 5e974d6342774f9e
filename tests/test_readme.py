"""The README's Python example runs as written, on the example mammogram it names."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

from mcgenref.synthesis.example import write_example

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1, "README should have exactly one Python example"
    write_example(tmp_path / "example.dcm")
    out = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        with contextlib.redirect_stdout(out):
            exec(compile(blocks[0], "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    lines = out.getvalue().splitlines()
    # the example's two clusters are found (tests/golden holds the exact MC table)
    assert len(lines) >= 6
    x_mm, y_mm, area, peak = map(float, lines[0].split())
    assert 0 < x_mm and 0 < y_mm and area > 0 and 0.5 < peak <= 1.0
