// Runs b64_batch (gpupipe/gpu/b64_kernel.cu, compiled for the host with shim.h) over a launch grid,
// one thread after another: the kernel's threads share no memory and never synchronise, so a
// serial walk gives the same bytes as the GPU. Buffers are heap blocks of exactly the batch's
// sizes, so AddressSanitizer reports any read or write outside them.
//
//   b64emu IN TABLE OUT_SIZE GRID BLOCK OUT
// IN: the packed input (gpupipe.base64_batch.pack_batch); TABLE: BatchLayout.kernel_table() as int64;
// OUT: where the OUT_SIZE-byte output buffer goes, pre-filled with 0xEE so that the caller can
// check that nothing outside the URI spans was written.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

extern "C" void b64_batch(const unsigned char* in, unsigned char* out, const long long* table,
                          const long long* chunk_off, const int n, const long long total_chunks);

// One launch of b64_batch with `grid` blocks of `block` threads, walked serially. Also what the
// shared-library build (-DEMU_SHARED) exports to tests/fake_cupy.py.
extern "C" void emu_launch(unsigned int grid, unsigned int block, const unsigned char* in, unsigned char* out,
                           const long long* table, const long long* chunk_off, int n, long long total_chunks) {
    blockDim = {block, 1, 1};
    gridDim = {grid, 1, 1};
    for (unsigned int b = 0; b < grid; ++b)
        for (unsigned int t = 0; t < block; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            b64_batch(in, out, table, chunk_off, n, total_chunks);
        }
}

#ifndef EMU_SHARED
static std::vector<unsigned char> slurp(const char* path) {
    std::vector<unsigned char> v;
    FILE* f = std::fopen(path, "rb");
    if (!f) { std::perror(path); std::exit(2); }
    unsigned char buf[1 << 16];
    size_t k;
    while ((k = std::fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + k);
    std::fclose(f);
    return v;
}

int main(int argc, char** argv) {
    if (argc != 7) {
        std::fprintf(stderr, "usage: %s IN TABLE OUT_SIZE GRID BLOCK OUT\n", argv[0]);
        return 2;
    }
    const std::vector<unsigned char> in_v = slurp(argv[1]), table_v = slurp(argv[2]);
    const size_t out_size = std::strtoull(argv[3], nullptr, 10);
    const unsigned int grid = std::strtoul(argv[4], nullptr, 10), block = std::strtoul(argv[5], nullptr, 10);
    const size_t rows = table_v.size() / sizeof(long long);
    if (table_v.size() % sizeof(long long) || rows < 1 || (rows - 1) % 6) {
        std::fprintf(stderr, "bad table: %zu bytes\n", table_v.size());
        return 2;
    }
    const int n = (int)((rows - 1) / 6);
    // Exact-size heap copies (malloc aligns to 16, as cudaMalloc does to far more).
    unsigned char* in = (unsigned char*)std::malloc(in_v.size() ? in_v.size() : 1);
    if (!in_v.empty()) std::memcpy(in, in_v.data(), in_v.size());
    long long* table = (long long*)std::malloc(table_v.size());
    std::memcpy(table, table_v.data(), table_v.size());
    unsigned char* out = (unsigned char*)std::malloc(out_size ? out_size : 1);
    std::memset(out, 0xEE, out_size);
    emu_launch(grid, block, in, out, table, table + 5 * n, n, table[5 * n + n]);
    FILE* f = std::fopen(argv[6], "wb");
    if (!f || std::fwrite(out, 1, out_size, f) != out_size) { std::perror(argv[6]); return 2; }
    std::fclose(f);
    std::free(in);
    std::free(table);
    std::free(out);
    return 0;
}
#endif  // EMU_SHARED
