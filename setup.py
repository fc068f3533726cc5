"""Builds gdram_ext._C: the CPU kernels always, the CUDA kernels when nvcc is found.

Install with ``pip install --no-build-isolation .`` so that the kernels are compiled against the
torch that will run them (torch's C++ ABI changes between releases; an isolated build
environment could pick another torch). Environment:

* ``GDRAM_EXT_CUDA=0`` skips the CUDA kernels even when nvcc is there.
* ``CUDA_HOME`` defaults to ``/usr/local/cuda`` when that folder exists.
* ``TORCH_CUDA_ARCH_LIST`` defaults to the visible GPU's architecture, or to ``9.0+PTX``
  (Hopper SASS plus PTX that newer GPUs compile at load) when no GPU is visible.
"""

import os
import shutil
from pathlib import Path

if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda").is_dir():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"  # torch's guess through a PATH wrapper can be wrong

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = Path(__file__).parent


def want_cuda() -> bool:
    if os.environ.get("GDRAM_EXT_CUDA", "1") == "0":
        return False
    nvcc = Path(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None
    return torch.version.cuda is not None and nvcc is not None and (nvcc.exists() or shutil.which("nvcc") is not None)


def extension():
    sources = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc").glob("*.cpp"))]
    sources += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc" / "cpu").glob("*.cpp"))]
    cxx = ["-O3", "-fopenmp"]  # at::parallel_for runs serially in code built without OpenMP
    link = ["-fopenmp"]
    if not want_cuda():
        return CppExtension("gdram_ext._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)
    if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0+PTX"
    sources += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc" / "cuda").glob("*.cu"))]
    return CUDAExtension(
        "gdram_ext._C",
        sources,
        define_macros=[("GDRAM_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
        extra_link_args=link,
    )


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension})
