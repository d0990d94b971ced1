/* avx512.c: kernels for AVX-512 (F, BW, VL, DQ), 16 float32 lanes. Compiled with its own
 * flags (see build.py); only called when dispatch.c found the CPU and OS support.
 *
 * GEMV: each output (i, j) keeps one vector accumulator over its inputs in order (16 at a
 * time, a masked last piece), reduced by one _mm512_reduce_add_ps: the same operations
 * whatever the number of rows in the call or the block the row falls in. A block of R weight
 * rows is converted to float32 once per piece of inputs and applied to every activation row
 * of the call (up to 8 at a time: R shrinks as rows grow, so the accumulators stay in
 * registers), so an 8-row call reads and converts the weights once. Each block prefetches the
 * block CG_PREFETCH_AHEAD blocks ahead (the hardware prefetcher does not follow several
 * interleaved 1-4 KB streams). */
#include <immintrin.h>

#include "common.h"

#define INLINE static inline __attribute__((always_inline))
#define MAXB 8 /* activation rows per pass over a weight block */
#define MAXR 4 /* weight rows per block */

typedef float cg_out[MAXB][MAXR];

/* ---- int8 ---- */

INLINE __m512 q8_load(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

INLINE __m512 q8_load_tail(const int8_t *p, __mmask16 mask) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, p)));
}

/* sums of weight rows w .. w + (R-1) k against activation rows xf .. xf + (B-1) kp */
INLINE void q8_block(const float *xf, int64_t kp, int64_t k, const int8_t *w, const int8_t *ahead,
                     cg_out out, const int R, const int B) {
    __m512 acc[MAXB][MAXR];
#pragma GCC unroll 8
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) acc[b][r] = _mm512_setzero_ps();
    int64_t body = k / 16 * 16;
    for (int64_t t = 0; t < body; t += 16) {
        if (ahead && (t & 63) == 0)
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) _mm_prefetch((const char *)(ahead + r * k + t), _MM_HINT_T0);
        __m512 wv[MAXR];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = q8_load(w + r * k + t);
#pragma GCC unroll 8
        for (int b = 0; b < B; b++) {
            __m512 xv = _mm512_load_ps(xf + b * kp + t);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[b][r] = _mm512_fmadd_ps(wv[r], xv, acc[b][r]);
        }
    }
    if (body < k) {
        __mmask16 mask = (__mmask16)((1u << (k - body)) - 1u);
        __m512 wv[MAXR];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = q8_load_tail(w + r * k + body, mask);
#pragma GCC unroll 8
        for (int b = 0; b < B; b++) {
            __m512 xv = _mm512_load_ps(xf + b * kp + body); /* zeros past k */
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[b][r] = _mm512_fmadd_ps(wv[r], xv, acc[b][r]);
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) out[b][r] = _mm512_reduce_add_ps(acc[b][r]);
}

typedef void (*q8_fn)(const float *, int64_t, int64_t, const int8_t *, const int8_t *, cg_out);
#define Q8_FN(R, B)                                                                              \
    static void q8_##R##_##B(const float *xf, int64_t kp, int64_t k, const int8_t *w,            \
                             const int8_t *ahead, cg_out out) {                                  \
        q8_block(xf, kp, k, w, ahead, out, R, B);                                                \
    }
Q8_FN(4, 1) Q8_FN(4, 2) Q8_FN(4, 3) Q8_FN(4, 4) Q8_FN(4, 5) Q8_FN(4, 6)
Q8_FN(3, 1) Q8_FN(3, 2) Q8_FN(3, 3) Q8_FN(3, 4) Q8_FN(3, 5) Q8_FN(3, 6) Q8_FN(3, 7) Q8_FN(3, 8)
Q8_FN(1, 1) Q8_FN(1, 2) Q8_FN(1, 3) Q8_FN(1, 4) Q8_FN(1, 5) Q8_FN(1, 6) Q8_FN(1, 7) Q8_FN(1, 8)
/* [R][B]: R = 4 up to 6 rows (24 accumulators), else 3 (24); 1 for the last rows of w */
static const q8_fn q8_fns[MAXR + 1][MAXB + 1] = {
    [4] = {0, q8_4_1, q8_4_2, q8_4_3, q8_4_4, q8_4_5, q8_4_6},
    [3] = {0, q8_3_1, q8_3_2, q8_3_3, q8_3_4, q8_3_5, q8_3_6, q8_3_7, q8_3_8},
    [1] = {0, q8_1_1, q8_1_2, q8_1_3, q8_1_4, q8_1_5, q8_1_6, q8_1_7, q8_1_8},
};

static void q8_rows(const cg_gemv *g, int64_t j0, int64_t j1) {
    const int8_t *w = (const int8_t *)g->w;
    const float *scale = (const float *)g->s;
    int64_t m = g->m, k = g->k, kp = g->kp, n = g->n;
    const int R = m <= 6 ? 4 : 3;
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

int cg_gemv_q8_avx512(const void *x, int64_t m, int64_t k, const int8_t *w,
                      const float *scale, const float *bias, int64_t n, void *y, int dtype) {
    int rc = cg_check(x, m, k, w, scale, n, y, dtype, 1);
    if (rc || m == 0 || n == 0) return rc;
    return cg_gemv_run(q8_rows, m <= 6 ? 4 : 3, k, x, m, k, w, scale, bias, n, y, dtype);
}

/* ---- int4 ---- */

/* the 32 weights of one group: inputs 0-15 in *lo, 16-31 in *hi */
INLINE void q4_group(const uint8_t *bytes, const uint16_t *sz, __m512 *lo, __m512 *hi) {
    __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)bytes));
    __m512i eight = _mm512_set1_epi32(8);
    __m512i ql = _mm512_sub_epi32(_mm512_and_si512(e, _mm512_set1_epi32(15)), eight);
    __m512i qh = _mm512_sub_epi32(_mm512_srli_epi32(e, 4), eight);
    __m512 s = _mm512_set1_ps(cg_bf16_to_f32(sz[0]));
    __m512 z = _mm512_set1_ps(cg_bf16_to_f32(sz[1]));
    *lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ql), s, z);
    *hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(qh), s, z);
}

/* rows j .. j+R-1 of w (groups of 32) against activation rows xf .. xf + (B-1) kp */
INLINE void q4_block(const float *xf, int64_t kp, int64_t k, const uint8_t *w, const uint16_t *sz,
                     int64_t j, int64_t ahead_row, cg_out out, const int R, const int B) {
    int64_t groups = k / CG_Q4_GROUP, rb = k / 2;
    __m512 acc[MAXB][MAXR];
#pragma GCC unroll 8
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) acc[b][r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; g++) {
        if (ahead_row >= 0 && (g & 3) == 0) {
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                _mm_prefetch((const char *)(w + (ahead_row + r) * rb + g * 16), _MM_HINT_T0);
                if ((g & 15) == 0)
                    _mm_prefetch((const char *)(sz + ((ahead_row + r) * groups + g) * 2), _MM_HINT_T0);
            }
        }
        __m512 lo[MAXR], hi[MAXR];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            q4_group(w + (j + r) * rb + g * 16, sz + ((j + r) * groups + g) * 2, &lo[r], &hi[r]);
#pragma GCC unroll 8
        for (int b = 0; b < B; b++) {
            const float *xs = xf + b * kp + g * CG_Q4_GROUP;
            __m512 xl = _mm512_load_ps(xs), xh = _mm512_load_ps(xs + 16);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                acc[b][r] = _mm512_fmadd_ps(lo[r], xl, acc[b][r]);
                acc[b][r] = _mm512_fmadd_ps(hi[r], xh, acc[b][r]);
            }
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) out[b][r] = _mm512_reduce_add_ps(acc[b][r]);
}

typedef void (*q4_fn)(const float *, int64_t, int64_t, const uint8_t *, const uint16_t *, int64_t,
                      int64_t, cg_out);
#define Q4_FN(R, B)                                                                              \
    static void q4_##R##_##B(const float *xf, int64_t kp, int64_t k, const uint8_t *w,           \
                             const uint16_t *sz, int64_t j, int64_t ahead_row, cg_out out) {     \
        q4_block(xf, kp, k, w, sz, j, ahead_row, out, R, B);                                     \
    }
Q4_FN(4, 1) Q4_FN(4, 2) Q4_FN(4, 3) Q4_FN(4, 4) Q4_FN(4, 5)
Q4_FN(2, 1) Q4_FN(2, 2) Q4_FN(2, 3) Q4_FN(2, 4) Q4_FN(2, 5) Q4_FN(2, 6) Q4_FN(2, 7) Q4_FN(2, 8)
Q4_FN(1, 1) Q4_FN(1, 2) Q4_FN(1, 3) Q4_FN(1, 4) Q4_FN(1, 5) Q4_FN(1, 6) Q4_FN(1, 7) Q4_FN(1, 8)
/* [R][B]: R = 4 up to 5 rows (8 weight + 20 accumulator registers), else 2 */
static const q4_fn q4_fns[MAXR + 1][MAXB + 1] = {
    [4] = {0, q4_4_1, q4_4_2, q4_4_3, q4_4_4, q4_4_5},
    [2] = {0, q4_2_1, q4_2_2, q4_2_3, q4_2_4, q4_2_5, q4_2_6, q4_2_7, q4_2_8},
    [1] = {0, q4_1_1, q4_1_2, q4_1_3, q4_1_4, q4_1_5, q4_1_6, q4_1_7, q4_1_8},
};

static void q4_rows(const cg_gemv *g, int64_t j0, int64_t j1) {
    const uint8_t *w = (const uint8_t *)g->w;
    const uint16_t *sz = (const uint16_t *)g->s;
    int64_t m = g->m, k = g->k, kp = g->kp, n = g->n;
    const int R = m <= 5 ? 4 : 2;
    cg_out out;
    for (int64_t j = j0; j < j1;) {
        int r = j1 - j >= R ? R : 1;
        int64_t next = j + (int64_t)R * CG_PREFETCH_AHEAD;
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

int cg_gemv_q4_avx512(const void *x, int64_t m, int64_t k, const uint8_t *w,
                      const uint16_t *sz, const float *bias, int64_t n, void *y, int dtype) {
    int rc = cg_check(x, m, k, w, sz, n, y, dtype, CG_Q4_GROUP);
    if (rc || m == 0 || n == 0) return rc;
    return cg_gemv_run(q4_rows, m <= 5 ? 4 : 2, k / 2, x, m, k, w, sz, bias, n, y, dtype);
}

/* ---- attention (attend_impl.h), 16 lanes ---- */

/* exp(x) for x <= 0 (scores minus their maximum): Cephes' expf polynomial on
 * x - n ln 2, times 2^n; x below -87.3 gives 2^-126 times a small factor, not 0 */
INLINE __m512 v_exp(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3365f)), _mm512_set1_ps(88.3762f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

typedef __m512 CG_V;
#define CG_VW 16
INLINE CG_V v_zero(void) { return _mm512_setzero_ps(); }
INLINE CG_V v_set1(float a) { return _mm512_set1_ps(a); }
INLINE CG_V v_load(const float *p) { return _mm512_loadu_ps(p); }
INLINE CG_V v_load_bf16(const uint16_t *p) {
    __m512i e = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 16));
}
INLINE CG_V v_load_i8(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
INLINE void v_store(float *p, CG_V a) { _mm512_storeu_ps(p, a); }
INLINE CG_V v_add(CG_V a, CG_V b) { return _mm512_add_ps(a, b); }
INLINE CG_V v_sub(CG_V a, CG_V b) { return _mm512_sub_ps(a, b); }
INLINE CG_V v_div(CG_V a, CG_V b) { return _mm512_div_ps(a, b); }
INLINE CG_V v_fma(CG_V a, CG_V b, CG_V c) { return _mm512_fmadd_ps(a, b, c); }
INLINE float v_hsum(CG_V a) { return _mm512_reduce_add_ps(a); }
#define CG_ATTEND_NAME cg_attend_avx512
#include "attend_impl.h"
