/* lipstream's warp and composite kernels: one thread per output pixel of the region.
 * The math lives in warp.cuh (shared with the CPU build the tests run); this file only maps threads
 * to pixels. Compiled at run time by NVRTC (lipstream/kernels/cuda.py), or by nvcc in the tests.
 * extern "C" keeps the names unmangled for cuModuleGetFunction.
 */
#include "warp.cuh"

/* grid (ceil(out_w / bx), ceil(out_h / by)), block (bx, by) */
extern "C" __global__ void ls_warp_region(const unsigned char *src, int src_h, int src_w,
                                          const float *coords, unsigned char *out, int out_h,
                                          int out_w)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    ls_warp_pixel(src, src_h, src_w, coords, out, out_w, x, y);
}

/* grid ceil(n_pixels / bx), block bx */
extern "C" __global__ void ls_composite(unsigned char *out, const float *colour, const float *alpha,
                                        int n_pixels)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_pixels) return;
    ls_composite_pixel(out, colour, alpha, i);
}
