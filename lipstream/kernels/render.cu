/* The device renderer's kernels (lipstream/kernels/device_render.py launches them in this order on
 * one stream per session): head move, rig coarse field, rig field + warp, mouth interior, blink,
 * RGB -> I420. One thread per output pixel (per coarse point, per 2x2 block for I420); the math is
 * in rig.cuh, face.cuh and sample.cuh, which also build for the CPU. Frames and photo are square,
 * `size` px, (size, size, 3) uint8 RGB. extern "C" keeps the names unmangled for cuModuleGetFunction.
 */
#include "rig.cuh"
#include "face.cuh"

#define LS_THREAD_XY                                      \
    int x = blockIdx.x * blockDim.x + threadIdx.x;        \
    int y = blockIdx.y * blockDim.y + threadIdx.y

/* moved = photo turned and shifted by the head pose; grid over (size, size) */
extern "C" __global__ void ls_head_move(const unsigned char *photo, int size, ls_affine_d inverse,
                                        unsigned char *moved)
{
    LS_THREAD_XY;
    if (x >= size || y >= size) return;
    ls_head_pixel(photo, size, size, inverse, x, y, moved + ((long)y * size + x) * LS_CHANNELS);
}

/* the coarse field, one thread per coarse point; thread 0 also empties this frame's open box */
extern "C" __global__ void ls_rig_coarse(const float *basis, const float *weights, int n_shapes,
                                         int n_coarse, float max_px, float *coarse, int *box)
{
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p == 0) {
        box[0] = box[1] = LS_BOX_EMPTY_MIN;
        box[2] = box[3] = LS_BOX_EMPTY_MAX;
    }
    if (p >= n_coarse) return;
    ls_coarse_point(basis, weights, n_shapes, (long)n_coarse * LS_FIELD_CHANNELS, max_px, coarse, p);
}

/* the field over the mouth region, the photo sampled through it into the frame, the open box grown;
 * grid over (p.w, p.h) */
extern "C" __global__ void ls_rig_field(const unsigned char *photo, int size, const float *coarse,
                                        const float *rig_u, const float *rig_v,
                                        const float *upper_edge, const float *lower_edge,
                                        ls_field_params p, unsigned char *frame, float *coords,
                                        float *above, float *below, float *face_u, int *box)
{
    long i;
    LS_THREAD_XY;
    if (x >= p.w || y >= p.h) return;
    i = (long)y * p.w + x;
    ls_field_pixel(coarse, rig_u, rig_v, upper_edge, lower_edge, &p, x, y, coords, above, below, face_u);
    ls_remap_pixel(photo, size, size, coords[2 * i], coords[2 * i + 1],
                   frame + ((long)(p.y0 + y) * size + p.x0 + x) * LS_CHANNELS);
    ls_open_box_pixel(above[i], below[i], face_u[i], &p, x, y, box);
}

/* the interior painted over the box of the region the field kernel found; grid over (p.w, p.h) */
extern "C" __global__ void ls_mouth_interior(unsigned char *frame, int size, const float *above,
                                             const float *below, const float *face_u,
                                             ls_field_params p, ls_mouth_params m, const int *box)
{
    long i;
    LS_THREAD_XY;
    if (x >= p.w || y >= p.h || x < box[0] || y < box[1] || x > box[2] || y > box[3]) return;
    i = (long)y * p.w + x;
    ls_interior_pixel(above[i], below[i], face_u[i], &m,
                      frame + ((long)(p.y0 + y) * size + p.x0 + x) * LS_CHANNELS);
}

/* one eye region re-sampled with the lid lowered; grid over (p.w, p.h) */
extern "C" __global__ void ls_blink(const unsigned char *photo, int size, const float *planes,
                                    ls_blink_params p, unsigned char *frame)
{
    float sx, sy;
    LS_THREAD_XY;
    if (x >= p.w || y >= p.h) return;
    ls_blink_coords(planes, &p, x, y, &sx, &sy);
    ls_remap_pixel(photo, size, size, sx, sy, frame + ((long)(p.y0 + y) * size + p.x0 + x) * LS_CHANNELS);
}

/* the frame as I420 (size * 3 / 2, size); grid over (size / 2, size / 2) blocks */
extern "C" __global__ void ls_i420(const unsigned char *frame, int size, unsigned char *i420)
{
    LS_THREAD_XY;
    if (2 * x >= size || 2 * y >= size) return;
    ls_i420_block(frame, size, size, i420, x, y);
}
