# hymba_library(NAME folder DEPS ...): one static library per folder, from every .cpp in it
# (and, in CUDA builds, every .cu), so adding a file needs no CMake edit.
set(HYMBA_WARNINGS -Wall -Wextra -Wno-unused-parameter)
# CPU kernels are written to auto-vectorize; without -march GCC targets SSE2 only (measured:
# SiLU 2.6x and softmax 1.4x faster with AVX2+FMA). A build runs on the machine that uses it
# (CI, a GPU node, a laptop), so native is the default; turn it off to ship binaries.
option(HYMBA_NATIVE_ARCH "Compile CPU code with -march=native" ON)
if(HYMBA_NATIVE_ARCH)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-march=native>)
endif()

function(hymba_library name dir)
  cmake_parse_arguments(ARG "" "EXCLUDE" "DEPS" ${ARGN})
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${dir}/*.cpp)
  if(ARG_EXCLUDE)
    list(FILTER srcs EXCLUDE REGEX "${ARG_EXCLUDE}")
  endif()
  if(HYMBA_WITH_CUDA)
    file(GLOB_RECURSE cu_srcs CONFIGURE_DEPENDS ${dir}/*.cu)
    list(APPEND srcs ${cu_srcs})
  endif()
  # Sources that only make sense with CUDA end in _cuda.cpp.
  if(NOT HYMBA_WITH_CUDA)
    list(FILTER srcs EXCLUDE REGEX "_cuda\\.cpp$")
  endif()
  if(NOT srcs)
    # A folder with no code yet still gives a target, so dependents link to it unchanged.
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${PROJECT_SOURCE_DIR})
    target_link_libraries(${name} INTERFACE ${ARG_DEPS})
    return()
  endif()
  add_library(${name} STATIC ${srcs})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${HYMBA_WARNINGS}>)
  target_compile_options(${name} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr --extended-lambda -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter>)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  if(HYMBA_WITH_CUDA)
    target_compile_definitions(${name} PUBLIC HYMBA_WITH_CUDA=1)
    target_link_libraries(${name} PUBLIC CUDA::cudart CUDA::cublas CUDA::cublasLt)
    set_target_properties(${name} PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)
  endif()
endfunction()
