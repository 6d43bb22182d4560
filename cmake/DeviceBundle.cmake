# -DHYMBA_DEVICE_BUNDLE=<dir>: take the libraries from an unpacked bundle made by
# scripts/make-device-bundle.sh instead of the system, for GPU nodes that have CUDA, a
# compiler and CMake but none of our Debian packages (and maybe no pkg-config). Defines the
# same imported targets the system lookups give, so no other CMake file knows where they
# came from:
#   always:        PkgConfig::OPENBLAS, GTest::gtest, GTest::gtest_main
#   full bundle:   yaml-cpp::yaml-cpp, spdlog::spdlog (+ fmt::fmt), nlohmann_json::nlohmann_json,
#                  HDF5::HDF5, PkgConfig::SENTENCEPIECE, benchmark::benchmark
# A full bundle has lib/hymba-bundle.cmake (sonames and compile definitions found by the
# script's CMake probe); a kernels-only bundle serves only HYMBA_KERNELS_ONLY builds. MPI is
# never bundled: configure with -DHYMBA_WITH_MPI=OFF (or AUTO) on a node without it.
#
# Layout (see the script): include/openblas/{cblas,openblas_config,f77blas}.h,
# include/{gtest,gmock,yaml-cpp,spdlog,fmt,nlohmann,benchmark}/, include/hdf5/*.h,
# include/sentencepiece_{processor,trainer}.h, lib/*.so.N (each with RUNPATH $ORIGIN, so the
# libraries they load resolve inside lib/), lib/libgtest*.a.

get_filename_component(_hb "${HYMBA_DEVICE_BUNDLE}" ABSOLUTE)
foreach(_f include/openblas/cblas.h lib/libopenblas.so.0 include/gtest/gtest.h lib/libgtest.a lib/libgtest_main.a)
  if(NOT EXISTS "${_hb}/${_f}")
    message(FATAL_ERROR "HYMBA_DEVICE_BUNDLE=${HYMBA_DEVICE_BUNDLE}: ${_f} is missing; unpack "
                        ".device-bundle/hymba-device-bundle.tar.gz there (scripts/device-check.sh does) "
                        "or remake it with scripts/make-device-bundle.sh")
  endif()
endforeach()

# The build tree's RPATH gets lib/ (CMake adds the directory of every linked shared library),
# so the binaries find their direct libraries there; the libraries find theirs (libgfortran,
# libcurl, ...) through their own $ORIGIN RUNPATH.
add_library(PkgConfig::OPENBLAS SHARED IMPORTED)
set_target_properties(PkgConfig::OPENBLAS PROPERTIES
  IMPORTED_LOCATION "${_hb}/lib/libopenblas.so.0"
  IMPORTED_SONAME "libopenblas.so.0"
  INTERFACE_INCLUDE_DIRECTORIES "${_hb}/include/openblas")
set(OPENBLAS_FOUND TRUE)

if(HYMBA_BUILD_TESTS)
  add_library(GTest::gtest STATIC IMPORTED)
  set_target_properties(GTest::gtest PROPERTIES
    IMPORTED_LOCATION "${_hb}/lib/libgtest.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_hb}/include"
    INTERFACE_LINK_LIBRARIES Threads::Threads)
  add_library(GTest::gtest_main STATIC IMPORTED)
  set_target_properties(GTest::gtest_main PROPERTIES
    IMPORTED_LOCATION "${_hb}/lib/libgtest_main.a"
    INTERFACE_LINK_LIBRARIES GTest::gtest)
  set(GTest_FOUND TRUE)
endif()

# A shared library of the bundle as an imported target: lib/<soname>, headers in include/.
function(hymba_bundle_shared target soname)
  cmake_parse_arguments(ARG "" "" "DEFINITIONS;LINKS;INCLUDES" ${ARGN})
  if(NOT EXISTS "${_hb}/lib/${soname}")
    message(FATAL_ERROR "HYMBA_DEVICE_BUNDLE=${HYMBA_DEVICE_BUNDLE}: lib/${soname} is missing "
                        "(remake the bundle with scripts/make-device-bundle.sh)")
  endif()
  if(NOT ARG_INCLUDES)
    set(ARG_INCLUDES "${_hb}/include")
  endif()
  add_library(${target} SHARED IMPORTED)
  set_target_properties(${target} PROPERTIES
    IMPORTED_LOCATION "${_hb}/lib/${soname}"
    IMPORTED_SONAME "${soname}"
    INTERFACE_INCLUDE_DIRECTORIES "${ARG_INCLUDES}")
  if(ARG_DEFINITIONS)
    set_property(TARGET ${target} PROPERTY INTERFACE_COMPILE_DEFINITIONS "${ARG_DEFINITIONS}")
  endif()
  if(ARG_LINKS)
    set_property(TARGET ${target} PROPERTY INTERFACE_LINK_LIBRARIES "${ARG_LINKS}")
  endif()
endfunction()

set(HYMBA_BUNDLE_FRAMEWORK FALSE)
if(EXISTS "${_hb}/lib/hymba-bundle.cmake")
  include("${_hb}/lib/hymba-bundle.cmake")
endif()

if(NOT HYMBA_KERNELS_ONLY)
  if(NOT HYMBA_BUNDLE_FRAMEWORK)
    message(FATAL_ERROR "HYMBA_DEVICE_BUNDLE=${HYMBA_DEVICE_BUNDLE} is a kernels-only bundle (no "
                        "lib/hymba-bundle.cmake): configure with -DHYMBA_KERNELS_ONLY=ON, or remake it "
                        "with scripts/make-device-bundle.sh (without --kernels-only) for the whole tree")
  endif()
  hymba_bundle_shared(yaml-cpp::yaml-cpp "${HYMBA_BUNDLE_YAML_CPP}")

  set(_spdlog_links Threads::Threads)
  if(HYMBA_BUNDLE_FMT)
    hymba_bundle_shared(fmt::fmt "${HYMBA_BUNDLE_FMT}" DEFINITIONS "${HYMBA_BUNDLE_FMT_DEFINITIONS}")
    list(APPEND _spdlog_links fmt::fmt)
  endif()
  hymba_bundle_shared(spdlog::spdlog "${HYMBA_BUNDLE_SPDLOG}"
    DEFINITIONS "${HYMBA_BUNDLE_SPDLOG_DEFINITIONS}" LINKS "${_spdlog_links}")

  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
  set_target_properties(nlohmann_json::nlohmann_json PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_hb}/include")

  # FindHDF5 gives an INTERFACE target; a SHARED one links the same library and keeps its
  # directory in the RPATH. HDF5's headers include each other without a prefix.
  hymba_bundle_shared(HDF5::HDF5 "${HYMBA_BUNDLE_HDF5}"
    DEFINITIONS "${HYMBA_BUNDLE_HDF5_DEFINITIONS}" INCLUDES "${_hb}/include/hdf5")

  # pkg-config's target links both the processor and the trainer library.
  list(GET HYMBA_BUNDLE_SENTENCEPIECE 0 _sp)
  list(GET HYMBA_BUNDLE_SENTENCEPIECE 1 _sp_train)
  hymba_bundle_shared(hymba_bundle_sentencepiece "${_sp}")
  hymba_bundle_shared(hymba_bundle_sentencepiece_train "${_sp_train}")
  add_library(PkgConfig::SENTENCEPIECE INTERFACE IMPORTED)
  set_target_properties(PkgConfig::SENTENCEPIECE PROPERTIES
    INTERFACE_LINK_LIBRARIES "hymba_bundle_sentencepiece;hymba_bundle_sentencepiece_train")
endif()

if(HYMBA_BUILD_BENCH AND HYMBA_BUNDLE_FRAMEWORK)
  hymba_bundle_shared(benchmark::benchmark "${HYMBA_BUNDLE_BENCHMARK}"
    DEFINITIONS "${HYMBA_BUNDLE_BENCHMARK_DEFINITIONS}" LINKS Threads::Threads)
endif()

if(HYMBA_BUNDLE_FRAMEWORK)
  message(STATUS "OpenBLAS, GoogleTest and the framework's libraries from the device bundle ${_hb}")
else()
  message(STATUS "OpenBLAS and GoogleTest from the device bundle ${_hb}")
endif()
unset(_hb)
unset(_f)
unset(_sp)
unset(_sp_train)
unset(_spdlog_links)
