"""Every public Python name has a docstring (the API reference of `make docs` is built from
them), and so do the public methods of the public classes."""

import inspect as pyinspect

import pytest

import torchplastic as tp

NAMESPACES = {"torchplastic": tp, "torchplastic.functional": tp.functional,
              "torchplastic.inspect": tp.inspect, "torchplastic.rules": tp.rules,
              "torchplastic.reference": tp.reference, "torchplastic.cpp": tp.cpp}


def public_names():
    for prefix, module in NAMESPACES.items():
        names = getattr(module, "__all__", None) or [
            n for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]
        for name in names:
            yield f"{prefix}.{name}", getattr(module, name)


@pytest.mark.parametrize("qualified, obj", list(public_names()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_name_has_a_docstring(qualified, obj):
    if isinstance(obj, (str, dict)) or pyinspect.ismodule(obj):
        return  # __version__, RULES (documented by a #: comment), submodules (their own docstring)
    assert (obj.__doc__ or "").strip(), f"{qualified} has no docstring"
    if pyinspect.isclass(obj):
        for name, member in vars(obj).items():
            if not name.startswith("_") and pyinspect.isfunction(member):
                assert (member.__doc__ or "").strip(), f"{qualified}.{name} has no docstring"


def test_submodules_have_docstrings():
    for prefix, module in NAMESPACES.items():
        assert (module.__doc__ or "").strip(), prefix


def test_public_classes_and_functions_have_an_example():
    missing = [q for q, obj in public_names()
               if (pyinspect.isclass(obj) or pyinspect.isfunction(obj)) and ">>>" not in (obj.__doc__ or "")]
    assert not missing, f"no example (>>>) in the docstring of {missing}"


@pytest.mark.parametrize("name", list(NAMESPACES) + ["torchplastic.nn", "torchplastic.state"])
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    import doctest
    import importlib

    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"
