/* avx512.c: kernels for AVX-512 (F, BW, VL, DQ), 16 float32 lanes. Compiled with its own
 * flags (see build.py); only called when dispatch.c found the CPU and OS support.
 *
 * Each output (i, j) keeps one vector accumulator over its inputs in order (16 at a time, a
 * masked last piece), reduced by one _mm512_reduce_add_ps: the same operations whatever the
 * number of rows in the call or the block the row falls in. Weight rows stream 4 at a time;
 * each block prefetches the block CG_PREFETCH_AHEAD blocks ahead (the hardware prefetcher
 * does not follow four interleaved 1-4 KB streams). */
#include <immintrin.h>

#include "common.h"

#define INLINE static inline __attribute__((always_inline))
#define Q8_NR 4 /* weight rows per block */
#define Q8_MB 4 /* activation rows per pass over a block */
#define Q4_NR 4
#define Q4_MB 2

INLINE __m512 q8_load(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

INLINE __m512 q8_load_tail(const int8_t *p, __mmask16 mask) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, p)));
}

/* sums of rows j.. j+R-1 of w against activation rows i .. i+B-1 into out[b][r] */
INLINE void q8_block(const float *xf, int64_t kp, int64_t k, const int8_t *w, int64_t j, int R,
                     int64_t i, int B, const int8_t *ahead, float out[Q8_MB][Q8_NR]) {
    __m512 acc[Q8_MB][Q8_NR];
#pragma GCC unroll 4
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) acc[b][r] = _mm512_setzero_ps();
    int64_t body = k / 16 * 16;
    for (int64_t t = 0; t < body; t += 16) {
        if (ahead && (t & 63) == 0)
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) _mm_prefetch((const char *)(ahead + r * k + t), _MM_HINT_T0);
        __m512 wv[Q8_NR];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = q8_load(w + (j + r) * k + t);
#pragma GCC unroll 4
        for (int b = 0; b < B; b++) {
            __m512 xv = _mm512_load_ps(xf + (i + b) * kp + t);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[b][r] = _mm512_fmadd_ps(wv[r], xv, acc[b][r]);
        }
    }
    if (body < k) {
        __mmask16 mask = (__mmask16)((1u << (k - body)) - 1u);
        __m512 wv[Q8_NR];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = q8_load_tail(w + (j + r) * k + body, mask);
#pragma GCC unroll 4
        for (int b = 0; b < B; b++) {
            __m512 xv = _mm512_load_ps(xf + (i + b) * kp + body);  /* zeros past k */
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[b][r] = _mm512_fmadd_ps(wv[r], xv, acc[b][r]);
        }
    }
#pragma GCC unroll 4
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) out[b][r] = _mm512_reduce_add_ps(acc[b][r]);
}

INLINE void q8_finish(float out[Q8_MB][Q8_NR], int64_t i, int B, int64_t j, int R,
                      const float *scale, const float *bias, int64_t n, void *y, int dtype) {
    for (int b = 0; b < B; b++)
        for (int r = 0; r < R; r++) {
            float v = out[b][r] * scale[j + r];
            if (bias) v += bias[j + r];
            cg_store(y, (i + b) * n + j + r, v, dtype);
        }
}

int cg_gemv_q8_avx512(const void *x, int64_t m, int64_t k, const int8_t *w,
                      const float *scale, const float *bias, int64_t n, void *y, int dtype) {
    int rc = cg_check(x, m, k, w, scale, n, y, dtype, 1);
    if (rc || m == 0 || n == 0) return rc;
    float *xf = cg_padded_x(x, m, k, dtype);
    if (!xf) return CG_ENOMEM;
    int64_t kp = cg_padded(k), j = 0;
    float out[Q8_MB][Q8_NR];
    for (; j + Q8_NR <= n; j += Q8_NR) {
        int64_t next = j + Q8_NR * CG_PREFETCH_AHEAD;
        const int8_t *ahead = next + Q8_NR <= n ? w + next * k : NULL;
        int64_t i = 0;
        for (; i + Q8_MB <= m; i += Q8_MB) {
            q8_block(xf, kp, k, w, j, Q8_NR, i, Q8_MB, i == 0 ? ahead : NULL, out);
            q8_finish(out, i, Q8_MB, j, Q8_NR, scale, bias, n, y, dtype);
        }
        for (; i < m; i++) {
            q8_block(xf, kp, k, w, j, Q8_NR, i, 1, i == 0 ? ahead : NULL, out);
            q8_finish(out, i, 1, j, Q8_NR, scale, bias, n, y, dtype);
        }
    }
    for (; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            q8_block(xf, kp, k, w, j, 1, i, 1, NULL, out);
            q8_finish(out, i, 1, j, 1, scale, bias, n, y, dtype);
        }
    free(xf);
    return CG_OK;
}

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

INLINE void q4_block(const float *xf, int64_t kp, int64_t k, const uint8_t *w, const uint16_t *sz,
                     int64_t j, int R, int64_t i, int B, int64_t ahead_row, float out[Q4_MB][Q4_NR]) {
    int64_t groups = k / CG_Q4_GROUP, rb = k / 2;
    __m512 acc[Q4_MB][Q4_NR];
#pragma GCC unroll 4
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
        __m512 lo[Q4_NR], hi[Q4_NR];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            q4_group(w + (j + r) * rb + g * 16, sz + ((j + r) * groups + g) * 2, &lo[r], &hi[r]);
#pragma GCC unroll 4
        for (int b = 0; b < B; b++) {
            const float *xs = xf + (i + b) * kp + g * CG_Q4_GROUP;
            __m512 xl = _mm512_load_ps(xs), xh = _mm512_load_ps(xs + 16);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                acc[b][r] = _mm512_fmadd_ps(lo[r], xl, acc[b][r]);
                acc[b][r] = _mm512_fmadd_ps(hi[r], xh, acc[b][r]);
            }
        }
    }
#pragma GCC unroll 4
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) out[b][r] = _mm512_reduce_add_ps(acc[b][r]);
}

INLINE void q4_finish(float out[Q4_MB][Q4_NR], int64_t i, int B, int64_t j, int R,
                      const float *bias, int64_t n, void *y, int dtype) {
    for (int b = 0; b < B; b++)
        for (int r = 0; r < R; r++) {
            float v = out[b][r];
            if (bias) v += bias[j + r];
            cg_store(y, (i + b) * n + j + r, v, dtype);
        }
}

int cg_gemv_q4_avx512(const void *x, int64_t m, int64_t k, const uint8_t *w,
                      const uint16_t *sz, const float *bias, int64_t n, void *y, int dtype) {
    int rc = cg_check(x, m, k, w, sz, n, y, dtype, CG_Q4_GROUP);
    if (rc || m == 0 || n == 0) return rc;
    float *xf = cg_padded_x(x, m, k, dtype);
    if (!xf) return CG_ENOMEM;
    int64_t kp = cg_padded(k), j = 0;
    float out[Q4_MB][Q4_NR];
    for (; j + Q4_NR <= n; j += Q4_NR) {
        int64_t next = j + Q4_NR * CG_PREFETCH_AHEAD;
        int64_t ahead = next + Q4_NR <= n ? next : -1;
        int64_t i = 0;
        for (; i + Q4_MB <= m; i += Q4_MB) {
            q4_block(xf, kp, k, w, sz, j, Q4_NR, i, Q4_MB, i == 0 ? ahead : -1, out);
            q4_finish(out, i, Q4_MB, j, Q4_NR, bias, n, y, dtype);
        }
        for (; i < m; i++) {
            q4_block(xf, kp, k, w, sz, j, Q4_NR, i, 1, i == 0 ? ahead : -1, out);
            q4_finish(out, i, 1, j, Q4_NR, bias, n, y, dtype);
        }
    }
    for (; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            q4_block(xf, kp, k, w, sz, j, 1, i, 1, -1, out);
            q4_finish(out, i, 1, j, 1, bias, n, y, dtype);
        }
    free(xf);
    return CG_OK;
}
