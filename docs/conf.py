"""Sphinx configuration of the torchplastic documentation (`make docs`)."""

import torchplastic

project = "torchplastic"
author = "the torchplastic authors"
release = torchplastic.__version__
version = release

extensions = [
    "myst_parser",            # pages in Markdown
    "sphinx.ext.autodoc",     # the API reference, from the docstrings
    "sphinx.ext.napoleon",    # their "Args:" / "Returns:" sections
    "sphinx.ext.mathjax",     # the math page
]
myst_enable_extensions = ["dollarmath", "colon_fence"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = f"torchplastic {release}"
html_static_path = []
