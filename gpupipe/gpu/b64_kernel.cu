// The batched base64 kernel of gpupipe (see gpupipe/gpu/base64_kernel.py and gpupipe/base64_batch.py).
// Shipped prebuilt by nvcc as b64_kernel.fatbin (python -m gpupipe.gpu.kernel_build; CI checks that
// the fatbin was built from this file); compiled by CuPy with NVRTC only when the fatbin is stale or
// refused. CI also runs it on the host through tests/cuda_host/ (a serial emulation of the launch
// grid), byte for byte against the NumPy twin (gpupipe.base64_batch.encode_packed) and base64.b64encode.
//
// Work split
// ----------
// A work item ("chunk") is 12 input bytes -> 16 output characters: three 4-byte loads and ONE
// 16-byte store. Frame f's full chunks are numbered chunk_off[f] .. chunk_off[f+1]-1 (len / 12 of
// them); its last len % 12 bytes (the tail, with the '=' padding) and its "data:<mime>;base64,"
// prefix are done by one thread per frame after the main loop, byte by byte. Both sides are aligned
// by the layout: inputs start 16-byte aligned, so chunk k starts 4-byte aligned (12k); payloads start
// 16-byte aligned, so chunk k's 16 characters are one aligned uint4 store.
//
// The chunks are cut into tiles of blockDim.x * CHUNKS_PER_THREAD; block b takes a contiguous range
// of tiles. In a tile, thread t takes chunks t, t + blockDim.x, t + 2*blockDim.x, ...: for each of
// them a warp reads 384 contiguous bytes (three 4-byte loads, lanes 12 bytes apart: the second and
// third load hit the sectors the first brought into L1) and writes 512 contiguous bytes with one
// 16-byte store per lane (16 or 17 32-byte sectors; only the two at the ends can be partial, when
// the payload is 16- but not 32-byte aligned, and the neighbouring warps write their other halves). A thread issues all its
// loads of a tile before it computes anything, so CHUNKS_PER_THREAD * 12 bytes per thread are in
// flight. A thread finds its frame once (binary search over chunk_off) and then only moves forward:
// its chunks increase, so the frame changes only when a chunk passes the frame's end (one compare
// with a value held in a register).
//
// Why this should approach copy bandwidth (reasoning from the SASS, not a measurement)
// ------------------------------------------------------------------------------------
// The kernel moves 12 bytes in + 16 out per chunk (7/3 of its input), a copy 2 per byte; the
// kernel step of scripts/gpu_session.sh counts both the same way (bytes read + bytes written).
// * Bytes in flight (Little's law): an H200 needs about 4.8 TB/s x ~0.7 us ~ 3.4 MB of reads in
//   flight, ~25 kB per SM (132 SMs). nvcc 13.0 gives this kernel 48 registers on sm_90 (0 spills,
//   0 stack), so 5 blocks of 256 threads fit an SM: 1280 threads x 4 chunks x 12 bytes = 60 kB of
//   loads in flight per SM, all 12 LDGs of a tile issued back to back before the first use.
//   The previous kernel (48-byte items, 32 registers) issued its three 16-byte loads one after
//   the other, each after ~250 instructions of work on the previous one: one 16-byte load in
//   flight per thread and a dependent DRAM round trip per third of an item.
// * Instructions: the previous kernel spent ~790 SASS instructions per 48 bytes (__vadd4,
//   __vcmpgeu4 and __vcmpeq4 have had no hardware instruction since Maxwell and expand to several
//   each). Here a 3-byte group is one PRMT, ~8 shift/logic ops for its four 6-bit indices and
//   ~13 for the four characters (SWAR in one 32-bit register: adds whose per-byte sums never
//   carry, flag * constant as one IMAD.HI); the whole-tile path is ~107 SASS instructions per
//   chunk, ~33 of them IMAD (FMA pipe) and ~74 on the integer ALU. At 64 integer ops per clock
//   per SM for each pipe that is ~1.2 ALU cycles per chunk and SM; a 256 MiB batch (22.4 M
//   chunks) is ~170 k chunks and ~200 k cycles per SM, ~100 us at ~1.98 GHz, under the ~160 us
//   a copy of the same 7/3 bytes takes at ~3.9 TB/s, and 40 resident warps per SM overlap the two.
// * Access: every warp-wide load or store touches only the sectors it needs (3 loads: 12-13
//   sectors, the 2nd and 3rd from L1; 1 store: 16-17 sectors, written whole), so L2 and DRAM see
//   the 7/3 bytes and nothing more.
// What only a GPU shows (speed, the profile) is measured by the `kernel` step of
// scripts/gpu_session.sh, with an Nsight Compute profile of one launch where `ncu` is installed.
#define CHUNK_IN 12
#define CHUNK_OUT 16
#define CHUNKS_PER_THREAD 4

// Four 6-bit indices, one per byte (each 0..63) -> their four base64 characters, SWAR without a table.
// char = idx + 'A' (65), +6 if idx >= 26, +3 if idx == 63, -75 if idx >= 52, -15 if idx >= 62.
// A flag "idx >= k" is bit 7 of idx + (128 - k): at most 63 + 102 < 256, so no byte carries into the
// next; "idx == 63" is bit 7 of idx + 65. The partial sums stay in 0..255 per byte in this order (<= 137 after the additions; a byte
// that loses 75 holds >= 123 and one that loses 15 more holds >= 58), so the 32-bit adds and
// subtractions act per byte.
__device__ __forceinline__ unsigned int b64_map4(unsigned int x) {
    const unsigned int base = x + 0x41414141u;
    const unsigned int ge26 = (x + 0x66666666u) & 0x80808080u;
    const unsigned int ge52 = (x + 0x4c4c4c4cu) & 0x80808080u;
    const unsigned int ge62 = (x + 0x42424242u) & 0x80808080u;
    const unsigned int eq63 = base & 0x80808080u;
    // flag * k for flags in bit 7 of each byte: the high word of flag * (k << 25) (k < 128), one IMAD.HI.
    return base + __umulhi(ge26, 6u << 25) + __umulhi(eq63, 3u << 25) - __umulhi(ge52, 75u << 25)
           - __umulhi(ge62, 15u << 25);
}

// v holds a 3-byte group b0 b1 b2 in its top three bytes (b0 << 24 | b1 << 16 | b2 << 8; bits 0..7
// are ignored) -> its four 6-bit indices, the first in the lowest byte (the first character).
__device__ __forceinline__ unsigned int b64_indices(unsigned int v) {
    return (v >> 26) | ((v >> 12) & 0x3f00u) | ((v << 2) & 0x3f0000u) | ((v << 16) & 0x3f000000u);
}

// One chunk: the little-endian words w0 w1 w2 (bytes B0..B11) -> 16 characters as a uint4.
// __byte_perm(x, y, s): byte i of the result is byte (s >> 4i) & 7 of y:x (0-3 from x, 4-7 from y).
__device__ __forceinline__ uint4 b64_chunk(unsigned int w0, unsigned int w1, unsigned int w2) {
    uint4 o;
    o.x = b64_map4(b64_indices(__byte_perm(w0, w0, 0x0120u)));  // B0 B1 B2
    o.y = b64_map4(b64_indices(__byte_perm(w0, w1, 0x3450u)));  // B3 B4 B5
    o.z = b64_map4(b64_indices(__byte_perm(w1, w2, 0x2340u)));  // B6 B7 B8
    o.w = b64_map4(b64_indices(__byte_perm(w2, w2, 0x1230u)));  // B9 B10 B11
    return o;
}

extern "C" __global__ void __launch_bounds__(256)
b64_batch(const unsigned char* __restrict__ in,
          unsigned char* __restrict__ out,
          const long long* __restrict__ table,      // n rows: in_off, len, payload, prefix_off, prefix_len
          const long long* __restrict__ chunk_off,  // n + 1: the first full chunk of each frame, then the total
          const int n,
          const long long total_chunks)
{
    const long long tile = (long long)blockDim.x * CHUNKS_PER_THREAD;
    const long long tiles = (total_chunks + tile - 1) / tile;
    const long long per_block = (tiles + gridDim.x - 1) / gridDim.x;
    const long long begin = (long long)blockIdx.x * per_block * tile;
    const long long end = begin + per_block * tile < total_chunks ? begin + per_block * tile : total_chunks;
    long long c = begin + threadIdx.x;
    if (c < end) {
        int lo = 0, hi = n - 1;                       // the last frame whose first chunk <= c
        while (lo < hi) {
            const int mid = (lo + hi + 1) >> 1;
            if (__ldg(chunk_off + mid) <= c) lo = mid; else hi = mid - 1;
        }
        int f = lo;
        long long next = __ldg(chunk_off + f + 1);    // the frame's end (its first chunk is <= c)
        long long first = __ldg(chunk_off + f);
        long long in_base = __ldg(table + 5 * f) - first * CHUNK_IN;       // chunk k's input: in + in_base + 12k
        long long out_base = __ldg(table + 5 * f + 2) - first * CHUNK_OUT;  // its output: out + out_base + 16k
        for (; c < end; c += tile) {
            unsigned int w[CHUNKS_PER_THREAD][3];
            const long long last = c + (CHUNKS_PER_THREAD - 1) * (long long)blockDim.x;
            if (last < next && last < end) {          // the whole tile in this frame: the common case
                const unsigned int* s = reinterpret_cast<const unsigned int*>(in + in_base + c * CHUNK_IN);
                uint4* d = reinterpret_cast<uint4*>(out + out_base + c * CHUNK_OUT);
                #pragma unroll
                for (int u = 0; u < CHUNKS_PER_THREAD; ++u) {  // every load of the tile first
                    const unsigned int* p = s + 3u * u * blockDim.x;
                    w[u][0] = __ldg(p);
                    w[u][1] = __ldg(p + 1);
                    w[u][2] = __ldg(p + 2);
                }
                #pragma unroll
                for (int u = 0; u < CHUNKS_PER_THREAD; ++u) d[u * blockDim.x] = b64_chunk(w[u][0], w[u][1], w[u][2]);
            } else {                                  // the tile crosses a frame's end or the block's
                uint4* dst[CHUNKS_PER_THREAD];
                #pragma unroll
                for (int u = 0; u < CHUNKS_PER_THREAD; ++u) {
                    const long long k = c + (long long)u * blockDim.x;
                    dst[u] = nullptr;
                    if (k < end) {
                        while (k >= next) {           // past this frame's last chunk (frames of < 12 bytes have none)
                            ++f;
                            first = next;
                            next = __ldg(chunk_off + f + 1);
                            in_base = __ldg(table + 5 * f) - first * CHUNK_IN;
                            out_base = __ldg(table + 5 * f + 2) - first * CHUNK_OUT;
                        }
                        const unsigned int* p = reinterpret_cast<const unsigned int*>(in + in_base + k * CHUNK_IN);
                        w[u][0] = __ldg(p);
                        w[u][1] = __ldg(p + 1);
                        w[u][2] = __ldg(p + 2);
                        dst[u] = reinterpret_cast<uint4*>(out + out_base + k * CHUNK_OUT);
                    }
                }
                #pragma unroll
                for (int u = 0; u < CHUNKS_PER_THREAD; ++u)
                    if (dst[u] != nullptr) *dst[u] = b64_chunk(w[u][0], w[u][1], w[u][2]);
            }
        }
    }
    // One thread per frame: its prefix, then its last len % 12 bytes with the '=' padding.
    const long long threads = (long long)gridDim.x * blockDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < n; p += threads) {
        const long long* t = table + 5 * p;
        const long long len = __ldg(t + 1), prefix_len = __ldg(t + 4);
        const unsigned char* pre = in + __ldg(t + 3);
        unsigned char* d = out + (__ldg(t + 2) - prefix_len);
        for (long long j = 0; j < prefix_len; ++j) d[j] = pre[j];
        const long long full = len / CHUNK_IN;
        const int r = (int)(len - full * CHUNK_IN);
        const unsigned char* s = in + __ldg(t) + full * CHUNK_IN;
        d = out + __ldg(t + 2) + full * CHUNK_OUT;
        for (int j = 0; j < r; j += 3, d += 4) {
            const unsigned int b1 = j + 1 < r ? s[j + 1] : 0u, b2 = j + 2 < r ? s[j + 2] : 0u;
            const unsigned int v = b64_map4(b64_indices(((unsigned int)s[j] << 24) | (b1 << 16) | (b2 << 8)));
            d[0] = (unsigned char)(v & 0xffu);
            d[1] = (unsigned char)((v >> 8) & 0xffu);
            d[2] = j + 1 < r ? (unsigned char)((v >> 16) & 0xffu) : (unsigned char)'=';
            d[3] = j + 2 < r ? (unsigned char)(v >> 24) : (unsigned char)'=';
        }
    }
}
