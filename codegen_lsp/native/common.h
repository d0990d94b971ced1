/* common.h: helpers every kernel file shares (argument checks, bf16 conversion, the padded
 * float32 copy of the activations). Everything here is static: each instruction-set file gets
 * its own copy compiled with its own flags. */
#ifndef CODEGEN_NATIVE_COMMON_H
#define CODEGEN_NATIVE_COMMON_H

#include <stdlib.h>
#include <string.h>

#include "codegen_native.h"

#define CG_PAD 32 /* activations are copied into rows of k rounded up to this, zero padded */
#define CG_PREFETCH_AHEAD 2 /* row blocks ahead that each block's loop prefetches */

static inline float cg_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* round to nearest even, as torch does; NaN stays NaN */
static inline uint16_t cg_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline void cg_store(void *y, int64_t index, float v, int dtype) {
    if (dtype == CG_BF16)
        ((uint16_t *)y)[index] = cg_f32_to_bf16(v);
    else
        ((float *)y)[index] = v;
}

static inline int64_t cg_padded(int64_t k) { return (k + CG_PAD - 1) / CG_PAD * CG_PAD; }

static inline int cg_check(const void *x, int64_t m, int64_t k, const void *w, const void *s,
                           int64_t n, const void *y, int dtype, int64_t k_multiple) {
    if (m < 0 || n < 0 || k < 1 || k % k_multiple) return CG_EBADARG;
    if (dtype != CG_F32 && dtype != CG_BF16) return CG_EBADARG;
    if (m > 0 && n > 0 && (!x || !w || !s || !y)) return CG_EBADARG;
    return CG_OK;
}

/* x [m, k] (float32 or bf16) as float32 rows of cg_padded(k), zeros after k; free() it */
static inline float *cg_padded_x(const void *x, int64_t m, int64_t k, int dtype) {
    int64_t kp = cg_padded(k);
    float *out = (float *)aligned_alloc(64, (size_t)(m * kp) * sizeof(float));
    if (!out) return NULL;
    for (int64_t i = 0; i < m; i++) {
        float *row = out + i * kp;
        if (dtype == CG_BF16) {
            const uint16_t *src = (const uint16_t *)x + i * k;
            for (int64_t t = 0; t < k; t++) row[t] = cg_bf16_to_f32(src[t]);
        } else {
            memcpy(row, (const float *)x + i * k, (size_t)k * sizeof(float));
        }
        for (int64_t t = k; t < kp; t++) row[t] = 0.0f;
    }
    return out;
}

/* One GEMV call, cut into parts of whole weight rows that the team's threads share (team.c).
 * `rows_fn` computes outputs j0 .. j1 - 1 of every activation row from the padded copy `xf`. */
typedef struct cg_gemv cg_gemv;
typedef void (*cg_rows_fn)(const cg_gemv *g, int64_t j0, int64_t j1);
struct cg_gemv {
    const float *xf;
    int64_t m, k, kp, n;
    const void *w, *s; /* weights and their scales (int4: scale, zero pairs) */
    const float *bias;
    void *y;
    int dtype;
    int64_t rows; /* weight rows per part */
    cg_rows_fn rows_fn;
};

#define CG_PART_BYTES 32768 /* weight bytes per part: a few microseconds of streaming */

static void cg_gemv_part(void *ctx, int64_t part, int worker) {
    const cg_gemv *g = (const cg_gemv *)ctx;
    (void)worker;
    int64_t j0 = part * g->rows, j1 = j0 + g->rows < g->n ? j0 + g->rows : g->n;
    g->rows_fn(g, j0, j1);
}

/* pad the activations, cut the rows into parts (a multiple of `block` rows each; matrices
 * under four parts stay whole) and run them; `row_bytes`: bytes of one weight row */
static inline int cg_gemv_run(cg_rows_fn rows_fn, int64_t block, int64_t row_bytes,
                              const void *x, int64_t m, int64_t k, const void *w, const void *s,
                              const float *bias, int64_t n, void *y, int dtype) {
    float *xf = cg_padded_x(x, m, k, dtype);
    if (!xf) return CG_ENOMEM;
    int64_t rows = (CG_PART_BYTES + row_bytes - 1) / row_bytes;
    rows = (rows + block - 1) / block * block;
    if ((n + CG_MAX_PARTS - 1) / CG_MAX_PARTS > rows)
        rows = ((n + CG_MAX_PARTS - 1) / CG_MAX_PARTS + block - 1) / block * block;
    if (n < 4 * rows) rows = n;
    cg_gemv g = {xf, m, k, cg_padded(k), n, w, s, bias, y, dtype, rows, rows_fn};
    cg_team_run(cg_gemv_part, &g, (n + rows - 1) / rows, rows * row_bytes);
    free(xf);
    return CG_OK;
}

/* the attention kernels' argument check (see codegen_native.h) */
static inline int cg_attend_check(const void *q, int64_t batch, int64_t nq, int64_t heads,
                                  int64_t dim, const void *k, const void *v, const float *k_scale,
                                  const float *v_scale, int64_t max_len, const int64_t *lengths,
                                  const void *y, int dtype, int kv_dtype) {
    if (batch < 0 || nq < 0 || heads < 0 || dim < 1 || dim > CG_ATTEND_MAX_DIM) return CG_EBADARG;
    if (dtype != CG_F32 && dtype != CG_BF16) return CG_EBADARG;
    if (kv_dtype != CG_F32 && kv_dtype != CG_BF16 && kv_dtype != CG_I8) return CG_EBADARG;
    if (batch == 0 || nq == 0 || heads == 0) return CG_OK;
    if (!q || !k || !v || !lengths || !y) return CG_EBADARG;
    if (kv_dtype == CG_I8 && (!k_scale || !v_scale)) return CG_EBADARG;
    for (int64_t i = 0; i < nq; i++)
        if (lengths[i] < 1 || lengths[i] > max_len) return CG_EBADARG;
    return CG_OK;
}

#endif
