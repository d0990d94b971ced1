/* avx2.c: kernels for AVX2 + FMA, 8 float32 lanes. Compiled with its own flags (see
 * build.py); only called when dispatch.c found the CPU and OS support. The same structure as
 * avx512.c: one vector accumulator per output over its inputs in order, a zero-padded last
 * piece, a fixed horizontal sum; 4 weight rows per block, prefetching ahead. */
#include <immintrin.h>

#include "common.h"

#define INLINE static inline __attribute__((always_inline))
#define Q8_NR 4
#define Q8_MB 2
#define Q4_NR 2
#define Q4_MB 2

INLINE float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

INLINE __m256 q8_load(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

INLINE void q8_block(const float *xf, int64_t kp, int64_t k, const int8_t *w, int64_t j, int R,
                     int64_t i, int B, const int8_t *ahead, float out[Q8_MB][Q8_NR]) {
    __m256 acc[Q8_MB][Q8_NR];
#pragma GCC unroll 4
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) acc[b][r] = _mm256_setzero_ps();
    int64_t body = k / 8 * 8;
    for (int64_t t = 0; t < body; t += 8) {
        if (ahead && (t & 63) == 0)
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) _mm_prefetch((const char *)(ahead + r * k + t), _MM_HINT_T0);
        __m256 wv[Q8_NR];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = q8_load(w + (j + r) * k + t);
#pragma GCC unroll 4
        for (int b = 0; b < B; b++) {
            __m256 xv = _mm256_load_ps(xf + (i + b) * kp + t);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[b][r] = _mm256_fmadd_ps(wv[r], xv, acc[b][r]);
        }
    }
    if (body < k) {
        __m256 wv[Q8_NR];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            int8_t tail[8] = {0};
            memcpy(tail, w + (j + r) * k + body, (size_t)(k - body));
            wv[r] = q8_load(tail);
        }
#pragma GCC unroll 4
        for (int b = 0; b < B; b++) {
            __m256 xv = _mm256_load_ps(xf + (i + b) * kp + body); /* zeros past k */
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[b][r] = _mm256_fmadd_ps(wv[r], xv, acc[b][r]);
        }
    }
#pragma GCC unroll 4
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) out[b][r] = hsum8(acc[b][r]);
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

int cg_gemv_q8_avx2(const void *x, int64_t m, int64_t k, const int8_t *w, const float *scale,
                    const float *bias, int64_t n, void *y, int dtype) {
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
                     int64_t j, int R, int64_t i, int B, int64_t ahead_row, float out[Q4_MB][Q4_NR]) {
    int64_t groups = k / CG_Q4_GROUP, rb = k / 2;
    __m256 acc[Q4_MB][Q4_NR];
#pragma GCC unroll 4
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
        __m256 wv[Q4_NR][4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            q4_group(w + (j + r) * rb + g * 16, sz + ((j + r) * groups + g) * 2, wv[r]);
#pragma GCC unroll 4
        for (int b = 0; b < B; b++) {
            const float *xs = xf + (i + b) * kp + g * CG_Q4_GROUP;
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                __m256 xv = _mm256_load_ps(xs + 8 * p);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) acc[b][r] = _mm256_fmadd_ps(wv[r][p], xv, acc[b][r]);
            }
        }
    }
#pragma GCC unroll 4
    for (int b = 0; b < B; b++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) out[b][r] = hsum8(acc[b][r]);
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

int cg_gemv_q4_avx2(const void *x, int64_t m, int64_t k, const uint8_t *w, const uint16_t *sz,
                    const float *bias, int64_t n, void *y, int dtype) {
    int rc = cg_check(x, m, k, w, sz, n, y, dtype, CG_Q4_GROUP);
    if (rc || m == 0 || n == 0) return rc;
    float *xf = cg_padded_x(x, m, k, dtype);
    if (!xf) return CG_ENOMEM;
    int64_t kp = cg_padded(k), j = 0;
    float out[Q4_MB][Q4_NR];
    for (; j + Q4_NR <= n; j += Q4_NR) {
        int64_t next = j + 4 * CG_PREFETCH_AHEAD;
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
