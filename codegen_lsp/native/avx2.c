/* avx2.c: kernels for AVX2 + FMA, 8 float32 lanes. Compiled with its own flags (see
 * build.py); only called when dispatch.c found the CPU and OS support. The same structure as
 * avx512.c: one vector accumulator per output over its inputs in order, a zero-padded last
 * piece, a fixed horizontal sum; each block of weight rows converted once and applied to up to
 * 8 activation rows (fewer weight rows per block as rows grow: 16 registers), prefetching
 * ahead. */
#include <immintrin.h>

#include "common.h"

#define INLINE static inline __attribute__((always_inline))
#define MAXB 8 /* activation rows per pass over a weight block */
#define MAXR 4 /* weight rows per block */

typedef float cg_out[MAXB][MAXR];

INLINE float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

INLINE __m256 q8_load(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

INLINE void q8_block(const float *xf, int64_t kp, int64_t k, const int8_t *w, const int8_t *ahead,
                     cg_out out, const int R, const int B) {
    __m256 acc[MAXB][MAXR];
#pragma GCC unroll 8
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) acc[b][r] = _mm256_setzero_ps();
    int64_t body = k / 8 * 8;
    for (int64_t t = 0; t < body; t += 8) {
        if (ahead && (t & 63) == 0)
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) _mm_prefetch((const char *)(ahead + r * k + t), _MM_HINT_T0);
        __m256 wv[MAXR];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = q8_load(w + r * k + t);
#pragma GCC unroll 8
        for (int b = 0; b < B; b++) {
            __m256 xv = _mm256_load_ps(xf + b * kp + t);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[b][r] = _mm256_fmadd_ps(wv[r], xv, acc[b][r]);
        }
    }
    if (body < k) {
        __m256 wv[MAXR];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            int8_t tail[8] = {0};
            memcpy(tail, w + r * k + body, (size_t)(k - body));
            wv[r] = q8_load(tail);
        }
#pragma GCC unroll 8
        for (int b = 0; b < B; b++) {
            __m256 xv = _mm256_load_ps(xf + b * kp + body); /* zeros past k */
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[b][r] = _mm256_fmadd_ps(wv[r], xv, acc[b][r]);
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) out[b][r] = hsum8(acc[b][r]);
}

typedef void (*q8_fn)(const float *, int64_t, int64_t, const int8_t *, const int8_t *, cg_out);
#define Q8_FN(R, B)                                                                              \
    static void q8_##R##_##B(const float *xf, int64_t kp, int64_t k, const int8_t *w,            \
                             const int8_t *ahead, cg_out out) {                                  \
        q8_block(xf, kp, k, w, ahead, out, R, B);                                                \
    }
Q8_FN(4, 1) Q8_FN(4, 2)
Q8_FN(2, 1) Q8_FN(2, 2) Q8_FN(2, 3) Q8_FN(2, 4)
Q8_FN(1, 1) Q8_FN(1, 2) Q8_FN(1, 3) Q8_FN(1, 4) Q8_FN(1, 5) Q8_FN(1, 6) Q8_FN(1, 7) Q8_FN(1, 8)
/* [R][B]: R * B accumulators + R weights + 1 input in 16 registers: R = 4 up to 2 rows, 2 up
 * to 4, else 1; R = 1 also for the last rows of w */
static const q8_fn q8_fns[MAXR + 1][MAXB + 1] = {
    [4] = {0, q8_4_1, q8_4_2},
    [2] = {0, q8_2_1, q8_2_2, q8_2_3, q8_2_4},
    [1] = {0, q8_1_1, q8_1_2, q8_1_3, q8_1_4, q8_1_5, q8_1_6, q8_1_7, q8_1_8},
};

static void q8_rows(const cg_gemv *g, int64_t j0, int64_t j1) {
    const int8_t *w = (const int8_t *)g->w;
    const float *scale = (const float *)g->s;
    int64_t m = g->m, k = g->k, kp = g->kp, n = g->n;
    const int R = m <= 2 ? 4 : m <= 4 ? 2 : 1;
    cg_out out;
    for (int64_t j = j0; j < j1;) {
        int r = j1 - j >= R ? R : 1;
        int64_t next = j + (int64_t)R * CG_PREFETCH_AHEAD;
        const int8_t *ahead = r == R && next + R <= n ? w + next * k : NULL;
        for (int64_t i = 0; i < m; i += MAXB) {
            int b = m - i < MAXB ? (int)(m - i) : MAXB;
            q8_fns[r][b](g->xf + i * kp, kp, k, w + j * k, i == 0 ? ahead : NULL, out);
            for (int bb = 0; bb < b; bb++)
                for (int rr = 0; rr < r; rr++) {
                    float v = out[bb][rr] * scale[j + rr];
                    if (g->bias) v += g->bias[j + rr];
                    cg_store(g->y, (i + bb) * n + j + rr, v, g->dtype);
                }
        }
        j += r;
    }
}

int cg_gemv_q8_avx2(const void *x, int64_t m, int64_t k, const int8_t *w, const float *scale,
                    const float *bias, int64_t n, void *y, int dtype) {
    int rc = cg_check(x, m, k, w, scale, n, y, dtype, 1);
    if (rc || m == 0 || n == 0) return rc;
    return cg_gemv_run(q8_rows, m <= 2 ? 4 : m <= 4 ? 2 : 1, k, x, m, k, w, scale, bias, n, y,
                       dtype);
}

/* the 32 weights of one group, 8 inputs per vector: 0-7, 8-15, 16-23, 24-31 */
INLINE void q4_group(const uint8_t *bytes, const uint16_t *sz, __m256 v[4]) {
    __m128i raw = _mm_loadu_si128((const __m128i *)bytes);
    __m256i e0 = _mm256_cvtepu8_epi32(raw), e1 = _mm256_cvtepu8_epi32(_mm_srli_si128(raw, 8));
    __m256i low = _mm256_set1_epi32(15), eight = _mm256_set1_epi32(8);
    __m256 s = _mm256_set1_ps(cg_bf16_to_f32(sz[0])), z = _mm256_set1_ps(cg_bf16_to_f32(sz[1]));
    __m256i q[4] = {_mm256_sub_epi32(_mm256_and_si256(e0, low), eight),
                    _mm256_sub_epi32(_mm256_and_si256(e1, low), eight),
                    _mm256_sub_epi32(_mm256_srli_epi32(e0, 4), eight),
                    _mm256_sub_epi32(_mm256_srli_epi32(e1, 4), eight)};
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) v[p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q[p]), s, z);
}

INLINE void q4_block(const float *xf, int64_t kp, int64_t k, const uint8_t *w, const uint16_t *sz,
                     int64_t j, int64_t ahead_row, cg_out out, const int R, const int B) {
    int64_t groups = k / CG_Q4_GROUP, rb = k / 2;
    __m256 acc[MAXB][MAXR];
#pragma GCC unroll 8
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) acc[b][r] = _mm256_setzero_ps();
    for (int64_t g = 0; g < groups; g++) {
        if (ahead_row >= 0 && (g & 3) == 0) {
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                _mm_prefetch((const char *)(w + (ahead_row + r) * rb + g * 16), _MM_HINT_T0);
                if ((g & 15) == 0)
                    _mm_prefetch((const char *)(sz + ((ahead_row + r) * groups + g) * 2), _MM_HINT_T0);
            }
        }
        __m256 wv[MAXR][4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            q4_group(w + (j + r) * rb + g * 16, sz + ((j + r) * groups + g) * 2, wv[r]);
#pragma GCC unroll 8
        for (int b = 0; b < B; b++) {
            const float *xs = xf + b * kp + g * CG_Q4_GROUP;
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                __m256 xv = _mm256_load_ps(xs + 8 * p);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) acc[b][r] = _mm256_fmadd_ps(wv[r][p], xv, acc[b][r]);
            }
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) out[b][r] = hsum8(acc[b][r]);
}

typedef void (*q4_fn)(const float *, int64_t, int64_t, const uint8_t *, const uint16_t *, int64_t,
                      int64_t, cg_out);
#define Q4_FN(R, B)                                                                              \
    static void q4_##R##_##B(const float *xf, int64_t kp, int64_t k, const uint8_t *w,           \
                             const uint16_t *sz, int64_t j, int64_t ahead_row, cg_out out) {     \
        q4_block(xf, kp, k, w, sz, j, ahead_row, out, R, B);                                     \
    }
Q4_FN(2, 1) Q4_FN(2, 2) Q4_FN(2, 3)
Q4_FN(1, 1) Q4_FN(1, 2) Q4_FN(1, 3) Q4_FN(1, 4) Q4_FN(1, 5) Q4_FN(1, 6) Q4_FN(1, 7) Q4_FN(1, 8)
/* [R][B]: 4R weight + R * B accumulator registers: R = 2 up to 3 rows, else 1 */
static const q4_fn q4_fns[MAXR + 1][MAXB + 1] = {
    [2] = {0, q4_2_1, q4_2_2, q4_2_3},
    [1] = {0, q4_1_1, q4_1_2, q4_1_3, q4_1_4, q4_1_5, q4_1_6, q4_1_7, q4_1_8},
};

static void q4_rows(const cg_gemv *g, int64_t j0, int64_t j1) {
    const uint8_t *w = (const uint8_t *)g->w;
    const uint16_t *sz = (const uint16_t *)g->s;
    int64_t m = g->m, k = g->k, kp = g->kp, n = g->n;
    const int R = m <= 3 ? 2 : 1;
    cg_out out;
    for (int64_t j = j0; j < j1;) {
        int r = j1 - j >= R ? R : 1;
        int64_t next = j + 4 * CG_PREFETCH_AHEAD; /* rows ahead, whatever R */
        int64_t ahead = r == R && next + R <= n ? next : -1;
        for (int64_t i = 0; i < m; i += MAXB) {
            int b = m - i < MAXB ? (int)(m - i) : MAXB;
            q4_fns[r][b](g->xf + i * kp, kp, k, w, sz, j, i == 0 ? ahead : -1, out);
            for (int bb = 0; bb < b; bb++)
                for (int rr = 0; rr < r; rr++) {
                    float v = out[bb][rr];
                    if (g->bias) v += g->bias[j + rr];
                    cg_store(g->y, (i + bb) * n + j + rr, v, g->dtype);
                }
        }
        j += r;
    }
}

int cg_gemv_q4_avx2(const void *x, int64_t m, int64_t k, const uint8_t *w, const uint16_t *sz,
                    const float *bias, int64_t n, void *y, int dtype) {
    int rc = cg_check(x, m, k, w, sz, n, y, dtype, CG_Q4_GROUP);
    if (rc || m == 0 || n == 0) return rc;
    return cg_gemv_run(q4_rows, m <= 3 ? 2 : 1, k / 2, x, m, k, w, sz, bias, n, y, dtype);
}

/* ---- attention (attend_impl.h), 8 lanes ---- */

/* exp(x) for x <= 0 (scores minus their maximum): Cephes' expf polynomial on
 * x - n ln 2, times 2^n; x below -87.3 gives 2^-126 times a small factor, not 0 */
INLINE __m256 v_exp(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3365f)), _mm256_set1_ps(88.3762f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

typedef __m256 CG_V;
#define CG_VW 8
INLINE CG_V v_zero(void) { return _mm256_setzero_ps(); }
INLINE CG_V v_set1(float a) { return _mm256_set1_ps(a); }
INLINE CG_V v_load(const float *p) { return _mm256_loadu_ps(p); }
INLINE CG_V v_load_bf16(const uint16_t *p) {
    __m256i e = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 16));
}
INLINE CG_V v_load_i8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
INLINE void v_store(float *p, CG_V a) { _mm256_storeu_ps(p, a); }
INLINE CG_V v_add(CG_V a, CG_V b) { return _mm256_add_ps(a, b); }
INLINE CG_V v_sub(CG_V a, CG_V b) { return _mm256_sub_ps(a, b); }
INLINE CG_V v_div(CG_V a, CG_V b) { return _mm256_div_ps(a, b); }
INLINE CG_V v_fma(CG_V a, CG_V b, CG_V c) { return _mm256_fmadd_ps(a, b, c); }
INLINE float v_hsum(CG_V a) { return hsum8(a); }
#define CG_ATTEND_NAME cg_attend_avx2
#include "attend_impl.h"
