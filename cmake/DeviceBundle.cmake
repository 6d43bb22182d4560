# -DHYMBA_DEVICE_BUNDLE=<dir>: take OpenBLAS and GoogleTest from an unpacked bundle made by
# scripts/make-device-bundle.sh instead of the system, for GPU nodes that have CUDA, a
# compiler and CMake but none of our Debian packages (and maybe no pkg-config). Defines the
# same imported targets the system lookups give (PkgConfig::OPENBLAS, GTest::gtest,
# GTest::gtest_main), so no other CMake file knows where they came from.
#
# Layout (see the script): include/openblas/{cblas,openblas_config,f77blas}.h,
# include/{gtest,gmock}/, lib/libopenblas.so.0 (+ libgfortran, libquadmath), lib/libgtest*.a.

get_filename_component(_hb "${HYMBA_DEVICE_BUNDLE}" ABSOLUTE)
foreach(_f include/openblas/cblas.h lib/libopenblas.so.0 include/gtest/gtest.h lib/libgtest.a lib/libgtest_main.a)
  if(NOT EXISTS "${_hb}/${_f}")
    message(FATAL_ERROR "HYMBA_DEVICE_BUNDLE=${HYMBA_DEVICE_BUNDLE}: ${_f} is missing; unpack "
                        ".device-bundle/hymba-device-bundle.tar.gz there (scripts/device-check.sh does) "
                        "or remake it with scripts/make-device-bundle.sh")
  endif()
endforeach()

# The build tree's RPATH gets lib/ (CMake adds the directory of every linked shared library),
# so the binaries find libopenblas.so.0 there; libopenblas finds libgfortran through its own
# $ORIGIN RUNPATH when the bundle script had patchelf, else through LD_LIBRARY_PATH.
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

message(STATUS "OpenBLAS and GoogleTest from the device bundle ${_hb}")
unset(_hb)
unset(_f)
