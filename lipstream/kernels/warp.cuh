/* The per-pixel math of lipstream's warp and composite, shared by the CUDA kernels (warp.cu) and a
 * plain C/C++ build on the CPU, so tests check it against reference.py without a GPU.
 *
 * Plain C99 that also compiles as C++ and as CUDA (nvcc or NVRTC). NVRTC has no system headers, so
 * nothing is included under __CUDACC__: floorf, rintf, fminf and fmaxf are device built-ins there.
 *
 * Layouts (all contiguous, row-major):
 *   src     (src_h, src_w, 3) uint8 RGB
 *   coords  (out_h, out_w, 2) float32 absolute source pixels (x, y)
 *   out     (out_h, out_w, 3) uint8 RGB
 *   colour  (n, 3) float32 in 0..255, alpha (n,) float32 in [0, 1]
 */
#ifndef LIPSTREAM_WARP_CUH
#define LIPSTREAM_WARP_CUH

#ifdef __CUDACC__
#define LS_FN __host__ __device__ __forceinline__
#else
#include <math.h>
#define LS_FN static inline
#endif

#define LS_CHANNELS 3

/* The four source pixels around a sample point and the point's offset from the top-left one. */
typedef struct {
    int x0, y0;
    float fx, fy;
} ls_tap;

LS_FN float ls_clampf(float v, float lo, float hi)
{
    /* fmaxf/fminf map NaN to a bound, so a NaN coordinate reads a corner, never out of bounds */
    return fminf(fmaxf(v, lo), hi);
}

/* reference.bilinear: clamp to the image (edge replication), then the top-left pixel of the 2x2
 * neighbourhood, kept one short of the last row/column so the right/bottom taps stay inside. */
LS_FN ls_tap ls_bilinear_tap(float sx, float sy, int src_w, int src_h)
{
    ls_tap t;
    float x = ls_clampf(sx, 0.0f, (float)(src_w - 1));
    float y = ls_clampf(sy, 0.0f, (float)(src_h - 1));
    t.x0 = (int)floorf(x);
    t.y0 = (int)floorf(y);
    if (t.x0 > src_w - 2) t.x0 = src_w - 2;
    if (t.y0 > src_h - 2) t.y0 = src_h - 2;
    t.fx = x - (float)t.x0;
    t.fy = y - (float)t.y0;
    return t;
}

/* One channel of src at the tap, interpolated along x on both rows, then along y. */
LS_FN float ls_bilinear_channel(const unsigned char *src, int src_w, ls_tap t, int c)
{
    long row = (long)src_w * LS_CHANNELS;
    const unsigned char *p = src + (long)t.y0 * row + (long)t.x0 * LS_CHANNELS + c;
    float top = (float)p[0] * (1.0f - t.fx) + (float)p[LS_CHANNELS] * t.fx;
    float bottom = (float)p[row] * (1.0f - t.fx) + (float)p[row + LS_CHANNELS] * t.fx;
    return top * (1.0f - t.fy) + bottom * t.fy;
}

/* reference warp: np.round is round-half-to-even, as rintf is in the default rounding mode. */
LS_FN unsigned char ls_round_even_u8(float v)
{
    return (unsigned char)ls_clampf(rintf(v), 0.0f, 255.0f);
}

/* reference composite: floor(v + 0.5), i.e. halves round up. */
LS_FN unsigned char ls_round_up_u8(float v)
{
    return (unsigned char)ls_clampf(floorf(v + 0.5f), 0.0f, 255.0f);
}

/* out[y, x] = src bilinearly sampled at coords[y, x]. */
LS_FN void ls_warp_pixel(const unsigned char *src, int src_h, int src_w, const float *coords,
                         unsigned char *out, int out_w, int x, int y)
{
    long i = (long)y * out_w + x;
    ls_tap t = ls_bilinear_tap(coords[2 * i], coords[2 * i + 1], src_w, src_h);
    int c;
    for (c = 0; c < LS_CHANNELS; ++c)
        out[i * LS_CHANNELS + c] = ls_round_even_u8(ls_bilinear_channel(src, src_w, t, c));
}

/* out[i] = out[i] * (1 - alpha[i]) + colour[i] * alpha[i], in place. */
LS_FN void ls_composite_pixel(unsigned char *out, const float *colour, const float *alpha, long i)
{
    float a = alpha[i];
    int c;
    for (c = 0; c < LS_CHANNELS; ++c) {
        long k = i * LS_CHANNELS + c;
        out[k] = ls_round_up_u8((float)out[k] * (1.0f - a) + colour[k] * a);
    }
}

#endif /* LIPSTREAM_WARP_CUH */
