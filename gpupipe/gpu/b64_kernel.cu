// The batched base64 kernel of gpupipe (see gpupipe/gpu/base64_kernel.py and gpupipe/base64_batch.py).
// Shipped prebuilt by nvcc as b64_kernel.fatbin (python -m gpupipe.gpu.kernel_build; CI checks that
// the fatbin was built from this file); compiled by CuPy with NVRTC only when the fatbin is stale or
// refused. CI also runs it on the host through tests/cuda_host/ (a serial emulation of the launch
// grid), byte for byte against the NumPy twin and base64.b64encode.
#define CHUNK_IN 48
#define CHUNK_OUT 64

__device__ __forceinline__ unsigned int b64_map4(unsigned int idx) {
    // Four packed 6-bit indices -> four ASCII characters (see gpupipe/base64_batch.py).
    unsigned int off = 0x41414141u;
    off = __vadd4(off, __vcmpgeu4(idx, 0x1a1a1a1au) & 0x06060606u);
    off = __vadd4(off, __vcmpgeu4(idx, 0x34343434u) & 0xb5b5b5b5u);
    off = __vadd4(off, __vcmpeq4(idx, 0x3e3e3e3eu) & 0xf1f1f1f1u);
    off = __vadd4(off, __vcmpeq4(idx, 0x3f3f3f3fu) & 0xf4f4f4f4u);
    return __vadd4(idx, off);
}

__device__ __forceinline__ unsigned int b64_group(unsigned int b0, unsigned int b1, unsigned int b2) {
    unsigned int i0 = b0 >> 2;
    unsigned int i1 = ((b0 & 3u) << 4) | (b1 >> 4);
    unsigned int i2 = ((b1 & 15u) << 2) | (b2 >> 6);
    unsigned int i3 = b2 & 63u;
    return b64_map4(i0 | (i1 << 8) | (i2 << 16) | (i3 << 24));
}

extern "C" __global__ void __launch_bounds__(256)
b64_batch(const unsigned char* __restrict__ in,
          unsigned char* __restrict__ out,
          const long long* __restrict__ table,      // n rows: in_off, len, payload, prefix_off, prefix_len
          const long long* __restrict__ chunk_off,  // n + 1
          const int n,
          const long long total_chunks)
{
    const long long total = total_chunks + n;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < total; c += stride) {
        if (c >= total_chunks) {                      // one item per frame: copy its prefix
            const long long* t = table + 5 * (c - total_chunks);
            const unsigned char* p = in + t[3];
            unsigned char* d = out + (t[2] - t[4]);
            for (long long k = 0; k < t[4]; ++k) d[k] = p[k];
            continue;
        }
        int lo = 0, hi = n - 1;                       // the last frame whose first chunk <= c
        while (lo < hi) {
            const int mid = (lo + hi + 1) >> 1;
            if (__ldg(chunk_off + mid) <= c) lo = mid; else hi = mid - 1;
        }
        const long long* t = table + 5 * lo;
        const long long k = c - __ldg(chunk_off + lo);
        const long long pos = k * CHUNK_IN;
        const long long r = __ldg(t + 1) - pos;
        const unsigned char* src = in + __ldg(t) + pos;
        unsigned char* dst = out + __ldg(t + 2) + k * CHUNK_OUT;
        if (r >= CHUNK_IN) {
            const uint4* s4 = reinterpret_cast<const uint4*>(src);
            const uint4 a = __ldg(s4), b = __ldg(s4 + 1), e = __ldg(s4 + 2);
            const unsigned int w[12] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w, e.x, e.y, e.z, e.w};
            unsigned int o[16];
            #pragma unroll
            for (int j = 0; j < 16; ++j) {
                const int q = 3 * j;
                const unsigned int b0 = (w[q >> 2] >> (8 * (q & 3))) & 0xffu;
                const unsigned int b1 = (w[(q + 1) >> 2] >> (8 * ((q + 1) & 3))) & 0xffu;
                const unsigned int b2 = (w[(q + 2) >> 2] >> (8 * ((q + 2) & 3))) & 0xffu;
                o[j] = b64_group(b0, b1, b2);
            }
            uint4* d4 = reinterpret_cast<uint4*>(dst);
            d4[0] = make_uint4(o[0], o[1], o[2], o[3]);
            d4[1] = make_uint4(o[4], o[5], o[6], o[7]);
            d4[2] = make_uint4(o[8], o[9], o[10], o[11]);
            d4[3] = make_uint4(o[12], o[13], o[14], o[15]);
        } else {                                      // the frame's last, shorter item
            const int rr = (int)r;
            const int full = rr / 3;
            for (int j = 0; j < full; ++j) {
                const unsigned int v = b64_group(src[3 * j], src[3 * j + 1], src[3 * j + 2]);
                dst[4 * j] = v & 0xffu; dst[4 * j + 1] = (v >> 8) & 0xffu;
                dst[4 * j + 2] = (v >> 16) & 0xffu; dst[4 * j + 3] = v >> 24;
            }
            const int rem = rr - 3 * full;
            if (rem) {
                const unsigned int b0 = src[3 * full];
                const unsigned int b1 = rem == 2 ? src[3 * full + 1] : 0u;
                const unsigned int v = b64_group(b0, b1, 0u);
                unsigned char* d = dst + 4 * full;
                d[0] = v & 0xffu; d[1] = (v >> 8) & 0xffu;
                d[2] = rem == 2 ? (unsigned char)((v >> 16) & 0xffu) : (unsigned char)'=';
                d[3] = '=';
            }
        }
    }
}
