"""Build driver for torchplastic: CMake (CMakeLists.txt) builds everything; this lists no sources.

It configures CMake against the torch of the running Python, builds libtorchplastic and the
extension torchplastic._C, and places both in the package. Environment:
  TORCHPLASTIC_BUILD_DIR   CMake build folder (default: build/setup-<python prefix hash>)
  TORCHPLASTIC_CMAKE_ARGS  extra CMake arguments, e.g. "-DWITH_CUDA=OFF -DBUILD_TESTING=ON"
"""

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import torch.utils

        if self.inplace or getattr(self, "editable_mode", False):
            out_dir = ROOT / "python" / "torchplastic"
        else:
            out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        tag = hashlib.sha1(sys.prefix.encode()).hexdigest()[:8]
        build_dir = Path(os.environ.get("TORCHPLASTIC_BUILD_DIR", ROOT / "build" / f"setup-{tag}"))
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DTORCHPLASTIC_PYTHON_OUTPUT_DIR={out_dir}",
        ]
        configure += shlex.split(os.environ.get("TORCHPLASTIC_CMAKE_ARGS", ""))
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "_C"], check=True)
        target = Path(self.get_ext_fullpath(ext.name))
        built = out_dir / target.name
        if built.resolve() != target.resolve():
            # Editable install: CMake wrote into the source package (beside libtorchplastic);
            # setuptools copies the extension from its own build folder, so hand it one.
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built, target)


setup(
    ext_modules=[CMakeExtension("torchplastic._C")],
    cmdclass={"build_ext": CMakeBuild},
    package_dir={"": "python"},
    packages=["torchplastic"],
    package_data={"torchplastic": ["*.so"]},
)
