// Host stand-ins for the CUDA built-ins that gpupipe/gpu/b64_kernel.cu uses, so that the kernel's
// own source compiles with a host C++ compiler and runs in CI (no GPU) under launch.cpp, which
// walks the launch grid serially. Semantics follow the CUDA documentation of each built-in.
// uint4 keeps CUDA's 16-byte alignment, so UBSan flags a misaligned vector load or store, as the
// GPU would fault on one.
#pragma once
#include <cstdint>

#define __device__
#define __forceinline__ inline
#define __global__
#define __launch_bounds__(...)

struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
static inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
    return uint4{x, y, z, w};
}

struct emu_dim3 {
    unsigned int x, y, z;
};
extern emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

template <class T>
static inline T __ldg(const T* p) { return *p; }

// __byte_perm(x, y, s): byte i of the result is byte ((s >> 4i) & 7) of the 8-byte value y:x
// (bytes 0-3 from x, 4-7 from y); the fourth bit of each selector nibble is ignored.
static inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
    const unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned int r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned int)((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
    return r;
}

// __umulhi(x, y): the high 32 bits of the 64-bit product.
static inline unsigned int __umulhi(unsigned int x, unsigned int y) {
    return (unsigned int)(((unsigned long long)x * y) >> 32);
}
