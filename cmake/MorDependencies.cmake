# Third-party packages: Debian's (yaml-cpp, spdlog, fmt, CLI11, nlohmann-json, PCRE2, zstd, GoogleTest,
# Google Benchmark) and
# LibTorch from the PyPI torch wheel, found through torch.utils.cmake_prefix_path.
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(CLI11 REQUIRED)
find_package(Threads REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(zstd REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
# cpp-httplib: Debian ships it as a library built with OpenSSL/zlib/brotli support; the pkg-config
# target carries the matching CPPHTTPLIB_* definitions and the link flags.
pkg_check_modules(CPPHTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)

if(NOT Torch_DIR)
  # Fall back to the project's virtualenv (tools/setup.sh), or any python that has torch.
  set(_mor_venv "$ENV{MOR_VENV}")
  if(NOT _mor_venv)
    set(_mor_venv "$ENV{HOME}/.local/share/mor/venv")
  endif()
  find_program(MOR_TORCH_PYTHON NAMES python3 python HINTS "${_mor_venv}/bin" NO_DEFAULT_PATH)
  if(NOT MOR_TORCH_PYTHON)
    find_program(MOR_TORCH_PYTHON NAMES python3 python)
  endif()
  if(MOR_TORCH_PYTHON)
    execute_process(COMMAND ${MOR_TORCH_PYTHON} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE _mor_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
                    ERROR_QUIET RESULT_VARIABLE _mor_torch_rc)
    if(_mor_torch_rc EQUAL 0)
      list(APPEND CMAKE_PREFIX_PATH "${_mor_torch_prefix}")
    endif()
  endif()
endif()

# Torch's cuda.cmake ignores CMAKE_CUDA_ARCHITECTURES and would autodetect a GPU; pin the list.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(ENV{TORCH_CUDA_ARCH_LIST} "8.0;9.0")
endif()
if(NOT DEFINED ENV{CUDA_HOME} AND EXISTS /usr/local/cuda)
  set(ENV{CUDA_HOME} /usr/local/cuda)
endif()
find_package(Torch REQUIRED)
message(STATUS "mor: LibTorch ${Torch_VERSION} from ${Torch_DIR}")

# c10d's ProcessGroupGloo.hpp includes gloo headers, which the torch wheel does not ship. Debian's
# libgloo-dev provides them; only the headers are used (torch links its own gloo), and c10d only
# holds pointers to gloo types, so the older header version is harmless.
find_path(MOR_GLOO_INCLUDE_DIR gloo/config.h)
if(NOT MOR_GLOO_INCLUDE_DIR)
  message(FATAL_ERROR "gloo headers not found (gloo/config.h): install the Debian package libgloo-dev "
                      "(tools/setup.sh does)")
endif()

if(MOR_WITH_CUDA)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  string(REGEX MATCH "^[0-9]+" _nvcc_major "${CMAKE_CUDA_COMPILER_VERSION}")
  execute_process(COMMAND ${MOR_TORCH_PYTHON} -c "import torch; print(torch.version.cuda or '')"
                  OUTPUT_VARIABLE _torch_cuda OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  string(REGEX MATCH "^[0-9]+" _torch_cuda_major "${_torch_cuda}")
  if(_torch_cuda_major AND NOT _torch_cuda_major STREQUAL _nvcc_major)
    message(FATAL_ERROR "nvcc ${CMAKE_CUDA_COMPILER_VERSION} and torch's CUDA ${_torch_cuda} differ in "
                        "major version: the kernels would load a second libcudart. Use a matching toolkit "
                        "or configure with -DMOR_WITH_CUDA=OFF.")
  endif()
endif()

if(MOR_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
endif()
if(MOR_BUILD_BENCHMARKS)
  find_package(benchmark REQUIRED)
endif()
