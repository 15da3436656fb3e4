"""The README's Python example runs and prints what the README says."""
import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_readme_python_example(tmp_path):
    text = open(README).read()
    section = text[text.index("## Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    prog = tmp_path / "example.py"
    prog.write_text(code)
    out = subprocess.run([sys.executable, str(prog)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr
    assert "99 results, sum 328181" in out.stdout
    assert "sum of cubes: 24999500002500000000" in out.stdout
    assert re.search(r"^13 crashed: worker \d+ exited with status 3 while running task \d+$", out.stdout, re.M)
    assert "12 -> 144" in out.stdout and "14 -> 196" in out.stdout
    assert re.search(r"\d+ task\(s\) completed in the last \d+\.\d\d seconds", out.stderr)
    assert "Starting executor monitor" in out.stderr
    assert "Shutting down monitor..." in out.stderr
    assert "WorkerCrashed('worker" in out.stderr and "raised an exception" in out.stderr
