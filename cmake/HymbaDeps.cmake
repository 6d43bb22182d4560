# Finds the dependencies. Everything comes from Debian packages (scripts/setup.sh) except
# CUDA, which lives under /usr/local/cuda.

# ---- CUDA ----
set(HYMBA_WITH_CUDA OFF)
if(NOT HYMBA_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_ARCHITECTURES ${HYMBA_CUDA_ARCHS})
    enable_language(CUDA)
    # CMake 3.25 predates nvcc's C++20 support; tell it the flag (nvcc >= 12 accepts it).
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(HYMBA_WITH_CUDA ON)
  elseif(HYMBA_CUDA STREQUAL "ON")
    message(FATAL_ERROR "HYMBA_CUDA=ON but no CUDA compiler was found (looked for nvcc on PATH and /usr/local/cuda/bin/nvcc)")
  endif()
endif()

# ---- always needed (core, kernels) ----
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(PkgConfig REQUIRED)
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)
find_package(Threads REQUIRED)

# ---- the rest of the framework ----
if(NOT HYMBA_KERNELS_ONLY)
  find_package(yaml-cpp REQUIRED)
  # Debian's yaml-cpp 0.7 exports the target `yaml-cpp`; newer releases add yaml-cpp::yaml-cpp.
  if(NOT TARGET yaml-cpp::yaml-cpp)
    add_library(yaml-cpp::yaml-cpp ALIAS yaml-cpp)
  endif()
  find_package(spdlog REQUIRED)
  find_package(nlohmann_json REQUIRED)
  find_package(HDF5 REQUIRED COMPONENTS C)
  find_package(MPI REQUIRED COMPONENTS CXX)
  pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
endif()

if(HYMBA_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(HYMBA_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
