/* Per-pixel math shared by the device renderer's stages (render.cu): sampling the photo the way
 * OpenCV does on the CPU path, the head's affine move, and RGB -> I420.
 *
 * The CPU renderer samples with cv2.remap / cv2.warpAffine, which snap every source coordinate to
 * 1/32 px (INTER_BITS = 5) before interpolating; doing the same here keeps the device within one
 * grey level of the CPU frames (exact float bilinear differs from OpenCV by up to 3 levels at edges).
 * The I420 conversion is cv2.cvtColor(COLOR_RGB2YUV_I420)'s, which the live sessions hand the encoder.
 *
 * Plain C99 that also builds as C++ and CUDA, like warp.cuh (whose LS_FN and clamps it uses).
 * Layouts: images (h, w, 3) uint8 RGB, contiguous, row-major; I420 (h * 3 / 2, w) uint8.
 */
#ifndef LIPSTREAM_SAMPLE_CUH
#define LIPSTREAM_SAMPLE_CUH

#include "warp.cuh"

#define LS_SUBPIXELS 32   /* OpenCV's INTER_TAB_SIZE: source coordinates in 1/32 px */
#define LS_SUBPIXEL_BITS 5
#define LS_AFFINE_SCALE 1024 /* warpAffine's AB_SCALE: its row and column terms in 1/1024 px */
#define LS_YUV_SHIFT 20      /* cvtColor's fixed-point BT.601 coefficients, scaled by 2^20 */

LS_FN int ls_clampi(int v, int lo, int hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* floor(a / 2^bits) for negative a too (>> on a negative int is implementation-defined in C99) */
LS_FN int ls_floor_shift(int a, int bits)
{
    return a >= 0 ? a >> bits : -((-a + (1 << bits) - 1) >> bits);
}

/* A float source coordinate in 1/32 px, as remap rounds it (to nearest, halves to even). The
 * clamp keeps NaN, infinities and far-off points inside int range; past the edge every tap is
 * replicated anyway, so one pixel beyond is as good as any farther. */
LS_FN int ls_subpixel(float v, int size)
{
    return (int)rintf(ls_clampf(v, -1.0f, (float)size) * (float)LS_SUBPIXELS);
}

/* out (3 bytes) = src at (x32, y32) in 1/32 px, bilinear, edge pixels replicated */
LS_FN void ls_sample_q(const unsigned char *src, int src_h, int src_w, int x32, int y32,
                       unsigned char *out)
{
    int sx = ls_floor_shift(x32, LS_SUBPIXEL_BITS), sy = ls_floor_shift(y32, LS_SUBPIXEL_BITS);
    float fx = (float)(x32 - sx * LS_SUBPIXELS) / LS_SUBPIXELS;
    float fy = (float)(y32 - sy * LS_SUBPIXELS) / LS_SUBPIXELS;
    int x0 = ls_clampi(sx, 0, src_w - 1), x1 = ls_clampi(sx + 1, 0, src_w - 1);
    long row0 = (long)ls_clampi(sy, 0, src_h - 1) * src_w, row1 = (long)ls_clampi(sy + 1, 0, src_h - 1) * src_w;
    int c;
    for (c = 0; c < LS_CHANNELS; ++c) {
        float top = src[(row0 + x0) * LS_CHANNELS + c] * (1.0f - fx) + src[(row0 + x1) * LS_CHANNELS + c] * fx;
        float bottom = src[(row1 + x0) * LS_CHANNELS + c] * (1.0f - fx) + src[(row1 + x1) * LS_CHANNELS + c] * fx;
        out[c] = ls_round_up_u8(top * (1.0f - fy) + bottom * fy);
    }
}

/* cv2.remap(src, coords, INTER_LINEAR, BORDER_REPLICATE) at one point (sx, sy) */
LS_FN void ls_remap_pixel(const unsigned char *src, int src_h, int src_w, float sx, float sy,
                          unsigned char *out)
{
    ls_sample_q(src, src_h, src_w, ls_subpixel(sx, src_w), ls_subpixel(sy, src_h), out);
}

/* A 2x3 affine map, row-major: (x, y) -> (m[0] x + m[1] y + m[2], m[3] x + m[4] y + m[5]) */
typedef struct {
    float m[6];
} ls_affine;

/* The same in double: the head's whole-frame move needs it (see ls_head_pixel) */
typedef struct {
    double m[6];
} ls_affine_d;

LS_FN float ls_affine_x(ls_affine a, float x, float y) { return a.m[0] * x + a.m[1] * y + a.m[2]; }
LS_FN float ls_affine_y(ls_affine a, float x, float y) { return a.m[3] * x + a.m[4] * y + a.m[5]; }

/* cv2.warpAffine(src, M, INTER_LINEAR, BORDER_REPLICATE) at output pixel (x, y); `inverse` is
 * M inverted (output -> source), which warpAffine computes first. It sums a row term and a
 * column term, each rounded to 1/1024 px, then rounds to 1/32 px: so does this. */
LS_FN void ls_head_pixel(const unsigned char *src, int h, int w, ls_affine_d inverse, int x, int y,
                         unsigned char *out)
{
    /* in double, as OpenCV: at 500 px a float's rounding would move some points by 1/32 px */
    const double *m = inverse.m;
    const int half = LS_AFFINE_SCALE / LS_SUBPIXELS / 2, bits = 10 - LS_SUBPIXEL_BITS;
    int ax = (int)rint((m[1] * y + m[2]) * LS_AFFINE_SCALE) + (int)rint(m[0] * x * LS_AFFINE_SCALE);
    int ay = (int)rint((m[4] * y + m[5]) * LS_AFFINE_SCALE) + (int)rint(m[3] * x * LS_AFFINE_SCALE);
    ls_sample_q(src, h, w, ls_floor_shift(ax + half, bits), ls_floor_shift(ay + half, bits), out);
}

/* BT.601 limited range in 2^-20 units, cvtColor's RGB -> YUV 4:2:0 coefficients */
#define LS_YR 269484
#define LS_YG 528482
#define LS_YB 102760
#define LS_UR (-155188)
#define LS_UG (-305135)
#define LS_UB 460324
#define LS_VG (-385875)
#define LS_VB (-74448)

LS_FN unsigned char ls_luma(const unsigned char *p)
{
    int y = LS_YR * p[0] + LS_YG * p[1] + LS_YB * p[2] + (16 << LS_YUV_SHIFT) + (1 << (LS_YUV_SHIFT - 1));
    return (unsigned char)ls_clampi(y >> LS_YUV_SHIFT, 0, 255);
}

/* The 2x2 block whose top-left pixel is (2 bx, 2 by): four Y samples, and U and V taken from that
 * top-left pixel (cvtColor's chroma siting: no averaging). rgb (h, w, 3); i420 (h * 3 / 2, w). */
LS_FN void ls_i420_block(const unsigned char *rgb, int h, int w, unsigned char *i420, int bx, int by)
{
    long x = 2L * bx, y = 2L * by;
    const unsigned char *p = rgb + (y * w + x) * LS_CHANNELS;
    int dy, dx, u, v;
    const int offset = (128 << LS_YUV_SHIFT) + (1 << (LS_YUV_SHIFT - 1));
    for (dy = 0; dy < 2; ++dy)
        for (dx = 0; dx < 2; ++dx)
            i420[(y + dy) * w + x + dx] = ls_luma(p + ((long)dy * w + dx) * LS_CHANNELS);
    u = LS_UR * p[0] + LS_UG * p[1] + LS_UB * p[2] + offset;
    v = LS_UB * p[0] + LS_VG * p[1] + LS_VB * p[2] + offset; /* V's red weight is U's blue (0.439) */
    i420[(long)h * w + (long)by * (w / 2) + bx] = (unsigned char)ls_clampi(u >> LS_YUV_SHIFT, 0, 255);
    i420[(long)h * w + (long)(h / 2) * (w / 2) + (long)by * (w / 2) + bx] =
        (unsigned char)ls_clampi(v >> LS_YUV_SHIFT, 0, 255);
}

#endif /* LIPSTREAM_SAMPLE_CUH */
