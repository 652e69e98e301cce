"""The Python code blocks of the README and of docs/ run as written: each file's blocks in
order, in one namespace (a later block may use what an earlier one defined), in a scratch
folder for the files they write."""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                                                             recursive=True))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path):
    with open(path, encoding="utf-8") as f:
        return BLOCK.findall(f.read())


@pytest.mark.parametrize("path", [p for p in FILES if python_blocks(p)],
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc_snippet__"}
    for k, block in enumerate(python_blocks(path)):
        code = compile(block, f"{os.path.relpath(path, ROOT)}, python block {k + 1}", "exec")
        exec(code, namespace)  # noqa: S102 (the project's own documentation)


def test_every_documentation_file_is_checked():
    assert len(FILES) >= 10 and sum(len(python_blocks(p)) for p in FILES) >= 8


def test_readme_cpp_quick_start_is_the_example_make_test_builds():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        block = re.search(r"^```cpp\n(// main\.cpp\n.*?)^```", f.read(), re.S | re.M).group(1)
    with open(os.path.join(ROOT, "examples", "cpp", "quickstart.cpp"), encoding="utf-8") as f:
        assert block == f.read(), "README's C++ quick start differs from examples/cpp/quickstart.cpp"
