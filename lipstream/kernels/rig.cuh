/* Per-pixel math of the rig (lipstream/engine/rig.py): mouth controls -> the backward field over
 * the lower face, for the device renderer (render.cu) and its CPU build in the tests.
 *
 * Two steps, as RigBasis.coarse_fields and RigBasis.field: per coarse grid point, the weighted sum
 * of the basis shapes, capped; per region pixel, that coarse field upsampled (cv2.resize's
 * INTER_LINEAR), each side's distance past its lip edge, the side chosen and the source coordinate
 * mixed. The head's move enters as RigBasis.place does it: an affine map of the pixel grid, and
 * the same similarity in face coordinates.
 *
 * Layouts (contiguous, row-major): basis (n_shapes, n_coarse * 8) float32; coarse (hc, wc, 8);
 * u, v, above, below (h, w) float32; coords (h, w, 2) float32; edges (n_bins,) float32.
 */
#ifndef LIPSTREAM_RIG_CUH
#define LIPSTREAM_RIG_CUH

#include "sample.cuh"

#define LS_FIELD_CHANNELS 8 /* upper (x, y), lower (x, y) in image axes, then both in face axes */

/* What a frame's field needs besides the per-avatar arrays; filled by lipstream/kernels/params.py. */
typedef struct {
    int x0, y0, h, w;       /* the region in the frame, px */
    int hc, wc;             /* the coarse grid */
    int n_bins;             /* entries of each lip edge */
    float edge_origin;      /* u of the first edge bin less half a bin, px */
    float corner_left;      /* u of this frame's inner mouth corners, px */
    float corner_right;
    float cheek_blend;      /* twice rig.CHEEK_BLEND: blend width per px past a corner */
    float open_centre;      /* the interior's box: |u - centre| < half */
    float open_half;
    ls_affine head;         /* frame -> photo pixels (identity when the head is still) */
    ls_affine face;         /* the same move in face coordinates (u, v) */
} ls_field_params;

/* Bounding box of the pixels the interior may cover: min x, min y, max x, max y (inclusive). */
#define LS_BOX_EMPTY_MIN 0x7fffffff
#define LS_BOX_EMPTY_MAX (-1)

#ifdef __CUDACC__
#define LS_ATOMIC_MIN(p, v) atomicMin((p), (v))
#define LS_ATOMIC_MAX(p, v) atomicMax((p), (v))
#else /* the CPU build runs one pixel at a time */
#define LS_ATOMIC_MIN(p, v) (*(p) = *(p) < (v) ? *(p) : (v))
#define LS_ATOMIC_MAX(p, v) (*(p) = *(p) > (v) ? *(p) : (v))
#endif

/* coarse[p] = -(sum_k controls_k basis_k + rest)[p], each side shortened to at most max_px.
 * weights: (n_shapes,) the negated controls then -1 for the rest shape. */
LS_FN void ls_coarse_point(const float *basis, const float *weights, int n_shapes, long n_values,
                           float max_px, float *coarse, long p)
{
    float *out = coarse + p * LS_FIELD_CHANNELS;
    int c, k, side;
    for (c = 0; c < LS_FIELD_CHANNELS; ++c) {
        float sum = 0.0f;
        for (k = 0; k < n_shapes; ++k)
            sum += weights[k] * basis[k * n_values + p * LS_FIELD_CHANNELS + c];
        out[c] = sum;
    }
    for (side = 0; side < 4; side += 2) { /* face axes are orthonormal: the same factor for both */
        float scale = fminf(max_px / fmaxf(sqrtf(out[side] * out[side] + out[side + 1] * out[side + 1]),
                                          1e-6f), 1.0f);
        out[side] *= scale;
        out[side + 1] *= scale;
        out[side + 4] *= scale;
        out[side + 5] *= scale;
    }
}

/* cv2.resize INTER_LINEAR's source index and weight for output index i (half-pixel centres) */
LS_FN int ls_resize_tap(int i, int n_out, int n_in, float *weight)
{
    float f = (float)((i + 0.5) * ((double)n_in / n_out) - 0.5);
    int s = (int)floorf(f);
    f -= (float)s;
    if (s < 0) { s = 0; f = 0.0f; }
    if (s >= n_in - 1) { s = n_in - 1; f = 0.0f; }
    *weight = f;
    return s;
}

/* All eight channels of the coarse field at region pixel (x, y) */
LS_FN void ls_upsample(const float *coarse, const ls_field_params *p, int x, int y, float *fine)
{
    float fx, fy;
    int sx = ls_resize_tap(x, p->w, p->wc, &fx), sy = ls_resize_tap(y, p->h, p->hc, &fy);
    int sx1 = sx + 1 < p->wc ? sx + 1 : sx, sy1 = sy + 1 < p->hc ? sy + 1 : sy;
    const float *a = coarse + ((long)sy * p->wc + sx) * LS_FIELD_CHANNELS;
    const float *b = coarse + ((long)sy * p->wc + sx1) * LS_FIELD_CHANNELS;
    const float *c = coarse + ((long)sy1 * p->wc + sx) * LS_FIELD_CHANNELS;
    const float *d = coarse + ((long)sy1 * p->wc + sx1) * LS_FIELD_CHANNELS;
    int k;
    for (k = 0; k < LS_FIELD_CHANNELS; ++k)
        fine[k] = (a[k] * (1.0f - fx) + b[k] * fx) * (1.0f - fy) + (c[k] * (1.0f - fx) + d[k] * fx) * fy;
}

/* v of the pixel's source minus the lip edge at the source's u (RigBasis._past_edge) */
LS_FN float ls_past_edge(float du, float dv, float u, float v, const float *edge,
                         const ls_field_params *p)
{
    int bin = ls_clampi((int)(du + u - p->edge_origin), 0, p->n_bins - 1); /* truncation, as astype */
    return dv + v - edge[bin];
}

/* The field at region pixel (x, y): coords (2 floats), above, below, and the pixel's u with the
 * head's move undone. rig_u, rig_v: the still region's face coordinates. */
LS_FN void ls_field_pixel(const float *coarse, const float *rig_u, const float *rig_v,
                          const float *upper_edge, const float *lower_edge,
                          const ls_field_params *p, int x, int y, float *coords, float *above,
                          float *below, float *face_u)
{
    long i = (long)y * p->w + x;
    float f[LS_FIELD_CHANNELS], gx = (float)(p->x0 + x), gy = (float)(p->y0 + y);
    float u = ls_affine_x(p->face, rig_u[i], rig_v[i]), v = ls_affine_y(p->face, rig_u[i], rig_v[i]);
    float a, b, beyond, side;
    ls_upsample(coarse, p, x, y, f);
    a = ls_past_edge(f[4], f[5], u, v, upper_edge, p);
    b = -ls_past_edge(f[6], f[7], u, v, lower_edge, p);
    beyond = fmaxf(fmaxf(p->corner_left - u, u - p->corner_right) * p->cheek_blend, 0.1f);
    side = ls_clampf((a - b) / beyond + 0.5f, 0.0f, 1.0f); /* 0: upper side, 1: lower side */
    coords[2 * i] = (f[2] - f[0]) * side + f[0] + ls_affine_x(p->head, gx, gy);
    coords[2 * i + 1] = (f[3] - f[1]) * side + f[1] + ls_affine_y(p->head, gx, gy);
    above[i] = a;
    below[i] = b;
    face_u[i] = u;
}

/* Grow box (4 ints) by pixel (x, y) if the interior may cover it (render._open_box's test) */
LS_FN void ls_open_box_pixel(float above, float below, float u, const ls_field_params *p, int x,
                             int y, int *box)
{
    int shown = fminf(above, below) > -0.5f || fabsf(above - below) < 2.0f;
    if (!shown || !(fabsf(u - p->open_centre) < p->open_half)) return;
    LS_ATOMIC_MIN(&box[0], x);
    LS_ATOMIC_MIN(&box[1], y);
    LS_ATOMIC_MAX(&box[2], x);
    LS_ATOMIC_MAX(&box[3], y);
}

#endif /* LIPSTREAM_RIG_CUH */
