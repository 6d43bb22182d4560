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
    # NCCL carries CUDA gradients between ranks (train/nccl_communicator_cuda.cpp; the
    # kernels-only build has no train/). It ships with the CUDA toolkit here; a separate
    # install is found through NCCL_ROOT (CMake or environment variable), e.g. the pip wheel
    # nvidia-nccl-cu13 (site-packages/nvidia/nccl/{include,lib}), which has only libnccl.so.2.
    if(NOT HYMBA_KERNELS_ONLY)
      set(NCCL_ROOT "$ENV{NCCL_ROOT}" CACHE PATH "NCCL install (include/nccl.h, lib/libnccl.so[.2]) when not in the CUDA toolkit")
      set(nccl_hints)
      if(NCCL_ROOT)
        set(nccl_hints ${NCCL_ROOT})
      endif()
      # NAMES_PER_DIR: NCCL_ROOT's libnccl.so.2 wins over a libnccl.so elsewhere.
      find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${nccl_hints} ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
      find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 NAMES_PER_DIR
                   HINTS ${nccl_hints} ${CUDAToolkit_LIBRARY_DIR} PATH_SUFFIXES lib lib64)
      if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
        message(FATAL_ERROR "CUDA build without NCCL: install NCCL (nccl.h, libnccl.so), set NCCL_ROOT, or configure with -DHYMBA_CUDA=OFF")
      endif()
      message(STATUS "NCCL: ${NCCL_LIBRARY}")
      add_library(hymba_nccl INTERFACE IMPORTED)
      target_include_directories(hymba_nccl INTERFACE ${NCCL_INCLUDE_DIR})
      target_link_libraries(hymba_nccl INTERFACE ${NCCL_LIBRARY})
    endif()
  elseif(HYMBA_CUDA STREQUAL "ON")
    message(FATAL_ERROR "HYMBA_CUDA=ON but no CUDA compiler was found (looked for nvcc on PATH and /usr/local/cuda/bin/nvcc)")
  endif()
endif()

# ---- always needed (core, kernels) ----
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(Threads REQUIRED)
# A GPU node without our packages builds against a bundle (scripts/make-device-bundle.sh),
# which defines the OpenBLAS and GoogleTest targets itself.
set(HYMBA_DEVICE_BUNDLE "" CACHE PATH "Unpacked device bundle giving the libraries below (empty: the system's)")
if(HYMBA_DEVICE_BUNDLE)
  include(${CMAKE_CURRENT_LIST_DIR}/DeviceBundle.cmake)
else()
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)
endif()

# ---- the rest of the framework ----
set(HYMBA_WITH_MPI AUTO CACHE STRING "Data parallelism over MPI: AUTO (when MPI is found), ON or OFF")
set_property(CACHE HYMBA_WITH_MPI PROPERTY STRINGS AUTO ON OFF)
if(NOT HYMBA_KERNELS_ONLY)
  # A full device bundle (DeviceBundle.cmake) has defined these targets already.
  if(NOT TARGET yaml-cpp::yaml-cpp)
    find_package(yaml-cpp REQUIRED)
    # Debian's yaml-cpp 0.7 exports the target `yaml-cpp`; newer releases add yaml-cpp::yaml-cpp.
    if(NOT TARGET yaml-cpp::yaml-cpp)
      add_library(yaml-cpp::yaml-cpp ALIAS yaml-cpp)
    endif()
  endif()
  if(NOT TARGET spdlog::spdlog)
    find_package(spdlog REQUIRED)
  endif()
  if(NOT TARGET nlohmann_json::nlohmann_json)
    find_package(nlohmann_json REQUIRED)
  endif()
  if(NOT TARGET HDF5::HDF5)
    find_package(HDF5 REQUIRED COMPONENTS C)
  endif()
  # MPI starts and joins the ranks of a data-parallel job (train/distributed.h). Without it
  # hymba trains in one process (NCCL on one GPU still works); a GPU node without MPI, or a
  # laptop, builds with HYMBA_WITH_MPI=OFF (or AUTO, which turns it off when MPI is missing).
  set(HYMBA_MPI_ENABLED OFF)
  if(HYMBA_WITH_MPI STREQUAL "ON")
    find_package(MPI REQUIRED COMPONENTS CXX)
    set(HYMBA_MPI_ENABLED ON)
  elseif(NOT HYMBA_WITH_MPI STREQUAL "OFF")
    find_package(MPI COMPONENTS CXX)
    set(HYMBA_MPI_ENABLED ${MPI_CXX_FOUND})
  endif()
  message(STATUS "MPI (HYMBA_WITH_MPI=${HYMBA_WITH_MPI}): ${HYMBA_MPI_ENABLED}")
  if(NOT TARGET PkgConfig::SENTENCEPIECE)
    find_package(PkgConfig REQUIRED)
    pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
  endif()
endif()

if(HYMBA_BUILD_TESTS AND NOT TARGET GTest::gtest)
  find_package(GTest REQUIRED)
endif()
# The Google Benchmark programs are optional in a kernels-only build (GPU nodes lack the
# library); bench_gpu, a plain program, is built whenever CUDA is.
if(TARGET benchmark::benchmark)
  # from the device bundle
elseif(HYMBA_BUILD_BENCH AND NOT HYMBA_KERNELS_ONLY)
  find_package(benchmark REQUIRED)
elseif(HYMBA_BUILD_BENCH AND NOT HYMBA_DEVICE_BUNDLE)
  find_package(benchmark QUIET)
endif()
