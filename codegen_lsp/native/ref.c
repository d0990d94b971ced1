/* ref.c: the scalar reference of every kernel: one sequential sum per output, no SIMD, no
 * prefetch. The oracle the instruction-set files are tested against (with a float64 bound),
 * reachable as instruction set -1. */
#include <math.h>

#include "common.h"

static inline float cg_kv(const void *p, int kv_dtype, int64_t index) {
    if (kv_dtype == CG_BF16) return cg_bf16_to_f32(((const uint16_t *)p)[index]);
    if (kv_dtype == CG_I8) return (float)((const int8_t *)p)[index];
    return ((const float *)p)[index];
}

int cg_gemv_q8_ref(const void *x, int64_t m, int64_t k, const int8_t *w, const float *scale,
                   const float *bias, int64_t n, void *y, int dtype) {
    int rc = cg_check(x, m, k, w, scale, n, y, dtype, 1);
    if (rc || m == 0 || n == 0) return rc;
    float *xf = cg_padded_x(x, m, k, dtype);
    if (!xf) return CG_ENOMEM;
    int64_t kp = cg_padded(k);
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t t = 0; t < k; t++) acc += xf[i * kp + t] * (float)w[j * k + t];
            float v = acc * scale[j];
            if (bias) v += bias[j];
            cg_store(y, i * n + j, v, dtype);
        }
    }
    free(xf);
    return CG_OK;
}

int cg_gemv_q4_ref(const void *x, int64_t m, int64_t k, const uint8_t *w, const uint16_t *sz,
                   const float *bias, int64_t n, void *y, int dtype) {
    int rc = cg_check(x, m, k, w, sz, n, y, dtype, CG_Q4_GROUP);
    if (rc || m == 0 || n == 0) return rc;
    float *xf = cg_padded_x(x, m, k, dtype);
    if (!xf) return CG_ENOMEM;
    int64_t kp = cg_padded(k), groups = k / CG_Q4_GROUP;
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t g = 0; g < groups; g++) {
                const uint8_t *b = w + j * (k / 2) + g * 16;
                float s = cg_bf16_to_f32(sz[(j * groups + g) * 2]);
                float z = cg_bf16_to_f32(sz[(j * groups + g) * 2 + 1]);
                const float *xs = xf + i * kp + g * CG_Q4_GROUP;
                for (int t = 0; t < CG_Q4_GROUP; t++) {
                    int q = t < 16 ? (b[t] & 15) : (b[t - 16] >> 4);
                    float weight = (float)(q - 8) * s + z;
                    acc += xs[t] * weight;
                }
            }
            float v = acc;
            if (bias) v += bias[j];
            cg_store(y, i * n + j, v, dtype);
        }
    }
    free(xf);
    return CG_OK;
}

int cg_attend_ref(CG_ATTEND_ARGS) {
    int rc = cg_attend_check(q, batch, nq, heads, dim, k, v, k_scale, v_scale, max_len, lengths, y,
                             dtype, kv_dtype);
    if (rc || batch == 0 || nq == 0 || heads == 0) return rc;
    int64_t longest = 0;
    for (int64_t i = 0; i < nq; i++) longest = lengths[i] > longest ? lengths[i] : longest;
    float *s = (float *)malloc((size_t)(longest + 2 * dim) * sizeof(float));
    if (!s) return CG_ENOMEM;
    float *qf = s + longest, *out = qf + dim;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < nq; i++)
            for (int64_t h = 0; h < heads; h++) {
                int64_t qi = ((b * nq + i) * heads + h) * dim, len = lengths[i];
                for (int64_t d = 0; d < dim; d++)
                    qf[d] = dtype == CG_BF16 ? cg_bf16_to_f32(((const uint16_t *)q)[qi + d])
                                             : ((const float *)q)[qi + d];
                int64_t base = (b * heads + h) * max_len * dim;
                float top = 0.0f;
                for (int64_t t = 0; t < len; t++) {
                    float acc = 0.0f;
                    for (int64_t d = 0; d < dim; d++) acc += qf[d] * cg_kv(k, kv_dtype, base + t * dim + d);
                    s[t] = acc * scale * (k_scale ? k_scale[base / dim + t] : 1.0f);
                    top = t == 0 || s[t] > top ? s[t] : top;
                }
                float denom = 0.0f;
                for (int64_t t = 0; t < len; t++) denom += (s[t] = expf(s[t] - top));
                for (int64_t d = 0; d < dim; d++) {
                    float acc = 0.0f;
                    for (int64_t t = 0; t < len; t++)
                        acc += s[t] * (v_scale ? v_scale[base / dim + t] : 1.0f) *
                               cg_kv(v, kv_dtype, base + t * dim + d);
                    out[d] = acc / denom;
                }
                for (int64_t d = 0; d < dim; d++) cg_store(y, qi + d, out[d], dtype);
            }
    free(s);
    return CG_OK;
}
