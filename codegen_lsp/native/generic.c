/* generic.c: portable kernels (any x86-64 or other CPU; compiled without instruction-set
 * flags). Each output sums in 8 lanes (input t into lane t % 8) reduced in a fixed tree, the
 * same for every row count. Each weight row (int4: group) is converted to float32 once and
 * applied to every activation row of the call. */
#include <math.h>

#include "common.h"

#define LANES 8

static inline float reduce8(const float *a) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

static void q8_rows(const cg_gemv *g, int64_t j0, int64_t j1) {
    const int8_t *w = (const int8_t *)g->w;
    const float *scale = (const float *)g->s;
    int64_t m = g->m, k = g->k, kp = g->kp, n = g->n, body = k / LANES * LANES;
    for (int64_t j = j0; j < j1; j++) {
        const int8_t *row = w + j * k;
        if (j + 4 * CG_PREFETCH_AHEAD < n)
            for (int64_t t = 0; t < k; t += 64)
                __builtin_prefetch(row + 4 * CG_PREFETCH_AHEAD * k + t, 0, 0);
        for (int64_t i = 0; i < m; i++) {
            const float *xs = g->xf + i * kp;
            float acc[LANES] = {0};
            for (int64_t t = 0; t < body; t += LANES)
                for (int l = 0; l < LANES; l++) acc[l] += xs[t + l] * (float)row[t + l];
            for (int64_t t = body; t < k; t++) acc[t - body] += xs[t] * (float)row[t];
            float v = reduce8(acc) * scale[j];
            if (g->bias) v += g->bias[j];
            cg_store(g->y, i * n + j, v, g->dtype);
        }
    }
}

int cg_gemv_q8_generic(const void *x, int64_t m, int64_t k, const int8_t *w,
                       const float *scale, const float *bias, int64_t n, void *y, int dtype) {
    int rc = cg_check(x, m, k, w, scale, n, y, dtype, 1);
    if (rc || m == 0 || n == 0) return rc;
    return cg_gemv_run(q8_rows, 1, k, x, m, k, w, scale, bias, n, y, dtype);
}

#define ROWS 8 /* activation rows summed at a time (int4) */

static void q4_rows(const cg_gemv *g, int64_t j0, int64_t j1) {
    const uint8_t *w = (const uint8_t *)g->w;
    const uint16_t *sz = (const uint16_t *)g->s;
    int64_t m = g->m, k = g->k, kp = g->kp, n = g->n, groups = k / CG_Q4_GROUP;
    float dq[CG_Q4_GROUP], acc[ROWS][LANES];
    for (int64_t j = j0; j < j1; j++)
        for (int64_t i0 = 0; i0 < m; i0 += ROWS) {
            int64_t rows = m - i0 < ROWS ? m - i0 : ROWS;
            memset(acc, 0, sizeof acc);
            for (int64_t g0 = 0; g0 < groups; g0++) {
                const uint8_t *b = w + j * (k / 2) + g0 * 16;
                float s = cg_bf16_to_f32(sz[(j * groups + g0) * 2]);
                float z = cg_bf16_to_f32(sz[(j * groups + g0) * 2 + 1]);
                for (int t = 0; t < 16; t++) {
                    dq[t] = (float)((b[t] & 15) - 8) * s + z;
                    dq[t + 16] = (float)((b[t] >> 4) - 8) * s + z;
                }
                for (int64_t i = 0; i < rows; i++) {
                    const float *xs = g->xf + (i0 + i) * kp + g0 * CG_Q4_GROUP;
                    for (int t = 0; t < CG_Q4_GROUP; t += LANES)
                        for (int l = 0; l < LANES; l++) acc[i][l] += xs[t + l] * dq[t + l];
                }
            }
            for (int64_t i = 0; i < rows; i++) {
                float v = reduce8(acc[i]);
                if (g->bias) v += g->bias[j];
                cg_store(g->y, (i0 + i) * n + j, v, g->dtype);
            }
        }
}

int cg_gemv_q4_generic(const void *x, int64_t m, int64_t k, const uint8_t *w,
                       const uint16_t *sz, const float *bias, int64_t n, void *y, int dtype) {
    int rc = cg_check(x, m, k, w, sz, n, y, dtype, CG_Q4_GROUP);
    if (rc || m == 0 || n == 0) return rc;
    return cg_gemv_run(q4_rows, 1, k / 2, x, m, k, w, sz, bias, n, y, dtype);
}

/* attention (attend_impl.h) one float at a time: libm's expf */
typedef float CG_V;
#define CG_VW 1
static inline CG_V v_zero(void) { return 0.0f; }
static inline CG_V v_set1(float a) { return a; }
static inline CG_V v_load(const float *p) { return *p; }
static inline CG_V v_load_bf16(const uint16_t *p) { return cg_bf16_to_f32(*p); }
static inline CG_V v_load_i8(const int8_t *p) { return (float)*p; }
static inline void v_store(float *p, CG_V a) { *p = a; }
static inline CG_V v_add(CG_V a, CG_V b) { return a + b; }
static inline CG_V v_sub(CG_V a, CG_V b) { return a - b; }
static inline CG_V v_div(CG_V a, CG_V b) { return a / b; }
static inline CG_V v_fma(CG_V a, CG_V b, CG_V c) { return a * b + c; }
static inline float v_hsum(CG_V a) { return a; }
static inline CG_V v_exp(CG_V a) { return expf(a); }
#define CG_ATTEND_NAME cg_attend_generic
#include "attend_impl.h"
