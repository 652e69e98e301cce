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


def test_cpp_fragments_are_lines_of_the_examples_make_test_builds():
    # A fragment of a C++ program in the docs: each of its lines (comments aside) is a line of
    # one of the programs in examples/cpp, which make test-install compiles and runs.
    sources = ""
    for path in glob.glob(os.path.join(ROOT, "examples", "cpp", "*.cpp")):
        with open(path, encoding="utf-8") as f:
            sources += f.read()
    program_lines = {line.split("//")[0].strip() for line in sources.splitlines()}
    checked = 0
    for path in FILES:
        with open(path, encoding="utf-8") as f:
            for block in re.findall(r"^```cpp\n(.*?)^```", f.read(), re.S | re.M):
                if block.startswith("// main.cpp"):
                    continue  # the quick start, checked whole above
                for line in block.splitlines():
                    code = line.split("//")[0].strip()
                    if code:
                        assert code in program_lines, f"{os.path.relpath(path, ROOT)}: {code!r} is in no example"
                        checked += 1
    assert checked >= 4
