/* Per-pixel math of the mouth interior (lipstream/engine/mouth.py: `interior`, then the renderer's
 * composite) and of the blink (lipstream/engine/idle.py: `blink_coords`, then remap), for the
 * device renderer (render.cu) and its CPU build in the tests.
 *
 * The named constants come from the Python modules through the params structs
 * (lipstream/kernels/params.py fills them), so they are written once; the unnamed shading
 * coefficients below mirror mouth.py's line by line, and tests/test_kernels_render.py holds them
 * to the CPU path within one grey level.
 */
#ifndef LIPSTREAM_FACE_CUH
#define LIPSTREAM_FACE_CUH

#include "sample.cuh"

#define LS_PI 3.14159265358979f

typedef struct {
    float cavity[3], teeth[3], tongue[3]; /* MouthAssets colours, 0..255 */
    float face_px, edge_px;               /* MouthAssets sizes */
    float teeth_height, lower_teeth_height, incisor_width, teeth_span; /* mouth.py, face heights */
    float corner_fade, seam_darkness, wide_open;
    float centre, half, rounding;         /* this frame: the mouth's middle and half width (u, px) */
} ls_mouth_params;

LS_FN float ls_unit(float v) { return ls_clampf(v, 0.0f, 1.0f); }

/* 0 at a tooth's edge, 0.5 at its middle (mouth._tooth_phase) */
LS_FN float ls_tooth_phase(float du, const ls_mouth_params *m)
{
    float phase = du / (m->incisor_width * m->face_px);
    return fabsf(phase - rintf(phase));
}

/* Coverage of the interior at a pixel (the alpha of mouth.interior) */
LS_FN float ls_interior_alpha(float above, float below, float u, const ls_mouth_params *m)
{
    float inside = ls_unit((m->half - fabsf(u - m->centre)) / ((m->corner_fade + 0.5f * m->rounding) * m->half));
    float coverage = ls_unit(fminf(above, below) / m->edge_px + 0.5f);
    float seam = m->seam_darkness * ls_unit(1.0f - fabsf(above - below) / 2.0f); /* where lips meet */
    return fmaxf(coverage, seam) * inside;
}

/* colour += (target - colour) * amount, per channel */
LS_FN void ls_toward(float *colour, const float *target, float scale, float amount)
{
    int c;
    for (c = 0; c < LS_CHANNELS; ++c)
        colour[c] += (target[c] * scale - colour[c]) * amount;
}

/* Colour of the interior at a pixel (mouth.interior): cavity, tongue, lower then upper teeth */
LS_FN void ls_interior_colour(float above, float below, float u, const ls_mouth_params *m, float *colour)
{
    float f = m->face_px, soft = m->edge_px, du = u - m->centre;
    float a = fmaxf(above, 0.0f), b = fmaxf(below, 0.0f), gap = a + b;
    float s = ls_clampf(du / m->half, -1.0f, 1.0f), middle = sqrtf(1.0f - s * s);
    float t = a / fmaxf(gap, 1.0f); /* 0 at the upper lip, 1 at the lower */
    float shade = (0.6f + 0.4f * middle) * (1.0f - 0.55f * sinf(LS_PI * t) * middle);
    float wide = ls_unit((gap / f - m->wide_open) / 0.04f);
    float tongue = powf(ls_unit((t - 0.55f) / 0.45f), 0.7f) * middle * wide;
    float lower_h = m->lower_teeth_height * f * wide * sqrtf(ls_unit(1.0f - (s / 0.55f) * (s / 0.55f)));
    float tips = 0.75f + 0.25f * ls_unit(ls_tooth_phase(du + 0.5f * m->incisor_width * f, m) / 0.2f);
    float lower = ls_unit((lower_h * tips - b) / soft + 0.5f) * (lower_h > 0.5f ? 1.0f : 0.0f);
    float span = sqrtf(ls_unit(1.0f - (s / m->teeth_span) * (s / m->teeth_span)));
    float height = (1.0f - 0.7f * m->rounding) * m->teeth_height * f * span;
    float cover, tooth;
    int c;
    for (c = 0; c < LS_CHANNELS; ++c)
        colour[c] = m->cavity[c] * shade;
    ls_toward(colour, m->tongue, 0.55f + 0.45f * t, tongue);
    shade = (0.45f + 0.25f * middle) * ls_clampf(b / fmaxf(lower_h, 1.0f), 0.6f, 1.0f);
    ls_toward(colour, m->teeth, shade, lower);
    height *= 0.82f + 0.18f * sqrtf(ls_unit(ls_tooth_phase(du, m) / 0.2f));
    cover = ls_unit((height - a) / soft + 0.5f);
    tooth = (0.55f + 0.45f * span) * (0.78f + 0.22f * ls_unit(a / (0.35f * m->teeth_height * f)))
            * (0.8f + 0.2f * ls_unit(ls_tooth_phase(du, m) / 0.25f));
    ls_toward(colour, m->teeth, tooth, cover);
}

/* The renderer's composite: pixel += (colour - pixel) * alpha, rounded to nearest */
LS_FN void ls_blend_pixel(unsigned char *pixel, const float *colour, float alpha)
{
    int c;
    for (c = 0; c < LS_CHANNELS; ++c)
        pixel[c] = (unsigned char)ls_clampf((colour[c] - pixel[c]) * alpha + pixel[c] + 0.5f, 0.0f, 255.0f);
}

/* The interior painted over one pixel of the frame */
LS_FN void ls_interior_pixel(float above, float below, float u, const ls_mouth_params *m,
                             unsigned char *pixel)
{
    float colour[LS_CHANNELS];
    ls_interior_colour(above, below, u, m, colour);
    ls_blend_pixel(pixel, colour, ls_interior_alpha(above, below, u, m));
}

typedef struct {
    int x0, y0, h, w;   /* the eye region in the frame */
    float y_axis[2];    /* the face's downward axis, image coordinates */
    float lid_travel;   /* idle.LID_TRAVEL */
    float amount;       /* how closed: 0 open, 1 shut */
    ls_affine head;     /* frame -> photo pixels (identity when the head is still) */
} ls_blink_params;

/* Where eye pixel (x, y) samples the photo with the lid lowered (idle.blink_coords).
 * v, upper, lower, brow, lash: the region's (h, w) planes in EyeRegion's order. */
LS_FN void ls_blink_coords(const float *planes, const ls_blink_params *p, int x, int y, float *sx, float *sy)
{
    long i = (long)y * p->w + x, n = (long)p->h * p->w;
    float gx = (float)(p->x0 + x), gy = (float)(p->y0 + y);
    float hx = ls_affine_x(p->head, gx, gy), hy = ls_affine_y(p->head, gx, gy);
    float v = planes[i] + ((hx - gx) * p->y_axis[0] + (hy - gy) * p->y_axis[1]);
    float upper = planes[n + i], lower = planes[2 * n + i], brow = planes[3 * n + i], lash = planes[4 * n + i];
    float lid = upper + p->lid_travel * p->amount * (lower - upper); /* the lid edge */
    float stretch = (upper - lash - brow) / fmaxf(lid - lash - brow, 1e-3f);
    float source_v = v < lid - lash ? brow + (v - brow) * stretch : v - (lid - upper);
    float shift = v >= brow && v < lid ? source_v - v : 0.0f;
    *sx = hx + shift * p->y_axis[0];
    *sy = hy + shift * p->y_axis[1];
}

#endif /* LIPSTREAM_FACE_CUH */
