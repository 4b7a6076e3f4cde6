// PNG un-filtering on the device: one block per image, one thread per row of a band of blockDim.x
// rows, a wavefront over the row's pixels (see gpupipe/png_unfilter.py, the NumPy twin that tests
// check against Pillow). src: each image's inflated stream (height rows of 1 filter byte + row_bytes);
// dst: each image's un-filtered rows (height * row_bytes). dims: height, row_bytes, bpp per image.
// status[img] is set to 1 when a row's filter type is over 4 (the image is then left to the CPU path).
extern "C" __global__ void png_unfilter(const unsigned char* __restrict__ src, unsigned char* dst,
                                        const long long* src_off, const long long* dst_off,
                                        const int* dims, int* status) {
  const int img = blockIdx.x;
  const unsigned char* s = src + src_off[img];
  unsigned char* d = dst + dst_off[img];
  const int height = dims[3 * img], row_bytes = dims[3 * img + 1], bpp = dims[3 * img + 2];
  const long long in_stride = (long long)row_bytes + 1;
  const int npx = (row_bytes + bpp - 1) / bpp;
  const int t = threadIdx.x;
  for (int r0 = 0; r0 < height; r0 += blockDim.x) {
    const int rows = min((int)blockDim.x, height - r0);
    const int r = r0 + t;
    const bool mine = t < rows;
    const unsigned char* in = s + (long long)r * in_stride + 1;
    unsigned char* out = d + (long long)r * row_bytes;
    const unsigned char* prev = out - row_bytes;
    const int f = mine ? in[-1] : 0;
    if (mine && f > 4) status[img] = 1;
    for (int step = 0; step < npx + rows - 1; ++step) {
      const int x = step - t;
      if (mine && f <= 4 && x >= 0 && x < npx) {
        for (int c = 0; c < bpp; ++c) {
          const int i = x * bpp + c;
          if (i >= row_bytes) break;
          const int a = i >= bpp ? out[i - bpp] : 0;
          const int b = r > 0 ? prev[i] : 0;
          const int cc = (r > 0 && i >= bpp) ? prev[i - bpp] : 0;
          int pred = 0;
          switch (f) {
            case 1: pred = a; break;
            case 2: pred = b; break;
            case 3: pred = (a + b) >> 1; break;
            case 4: {
              const int p = a + b - cc, pa = abs(p - a), pb = abs(p - b), pc = abs(p - cc);
              pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : cc);
              break;
            }
            default: break;
          }
          out[i] = (unsigned char)((in[i] + pred) & 0xFF);
        }
      }
      __syncthreads();
    }
    __syncthreads();
  }
}
