"""The README's Python example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "torch.Size([1000, 8])" in out
    # the fitted posterior is the right one: reference mean of mu is ~4.4 (posteriordb)
    assert 3.0 < namespace["guide"].median()["mu"].item() < 6.0
