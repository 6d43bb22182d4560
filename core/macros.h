// Portability macros shared by host C++ and CUDA code.
#pragma once

#if defined(__CUDACC__)
#define HYMBA_HD __host__ __device__ __forceinline__
#else
#define HYMBA_HD inline
#endif
