// Portability macros shared by host C++ and CUDA code.
#pragma once

#if defined(__CUDACC__)
#define HYMBA_HD __host__ __device__ __forceinline__
#else
#define HYMBA_HD inline
#endif

// "#pragma unroll" for __host__ __device__ bodies: device passes only, since the host pass
// would warn on an unknown pragma.
#if defined(__CUDA_ARCH__)
#define HYMBA_UNROLL _Pragma("unroll")
#else
#define HYMBA_UNROLL
#endif
