// Host stand-ins for the CUDA built-ins that gpupipe/gpu/b64_kernel.cu uses, so that the kernel's
// own source compiles with a host C++ compiler and runs in CI (no GPU) under launch.cpp, which
// walks the launch grid serially. Semantics follow the CUDA headers (crt/device_functions.h):
// __vadd4 adds per byte ignoring carries; __vcmpgeu4 / __vcmpeq4 give 0xff per byte where true.
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

static inline unsigned int emu_bytewise(unsigned int a, unsigned int b, int op) {
    unsigned int r = 0;
    for (int i = 0; i < 4; ++i) {
        const unsigned int x = (a >> (8 * i)) & 0xffu, y = (b >> (8 * i)) & 0xffu;
        unsigned int v;
        if (op == 0) v = (x + y) & 0xffu;          // __vadd4
        else if (op == 1) v = x >= y ? 0xffu : 0u;  // __vcmpgeu4
        else v = x == y ? 0xffu : 0u;               // __vcmpeq4
        r |= v << (8 * i);
    }
    return r;
}
static inline unsigned int __vadd4(unsigned int a, unsigned int b) { return emu_bytewise(a, b, 0); }
static inline unsigned int __vcmpgeu4(unsigned int a, unsigned int b) { return emu_bytewise(a, b, 1); }
static inline unsigned int __vcmpeq4(unsigned int a, unsigned int b) { return emu_bytewise(a, b, 2); }
