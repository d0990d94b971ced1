/* codegen_native.h: the C ABI of the engine's CPU kernels and their packed layouts.
 *
 * No torch headers: the Python side (codegen_lsp/engine/kernels.py) calls these through
 * ctypes on tensors' data pointers. Every kernel computes each output alone, in a fixed order
 * that depends neither on the number of rows in the call nor on the threads (team.c) that
 * share the call's parts, so a call of m rows gives, bit for bit, what m one-row calls give,
 * on any number of threads.
 *
 * Activations and outputs (`dtype`): CG_F32 (float) or CG_BF16 (uint16 bfloat16, rounded to
 * nearest even on output). Activations are converted to float32 first (exact for bf16).
 *
 * Layouts (all row-major, contiguous):
 *   gemv_q8: x [m, k]; w int8 [n, k]; scale float32 [n]; bias float32 [n] or NULL; y [m, n]
 *            y[i, j] = (sum_t x[i, t] * w[j, t]) * scale[j] + bias[j]
 *   gemv_q4: k a multiple of 32 (groups of 32 inputs); w uint8 [n, k / 2]: the 16 bytes of
 *            group g of row j hold input 32g + t in the low nibble and 32g + 16 + t in the
 *            high nibble of byte t; sz bf16 [n, k / 32, 2]: (scale, zero) per group;
 *            weight = (q - 8) * scale + zero; bias float32 [n] or NULL
 *            y[i, j] = sum_t x[i, t] * weight[j, t] + bias[j]
 *
 *   attend:  q [batch, nq, heads, dim] (dtype); k, v [batch, heads, max_len, dim] (kv_dtype:
 *            CG_F32, CG_BF16 or CG_I8), the KV cache; for CG_I8 k_scale, v_scale float32
 *            [batch, heads, max_len] (a key is k * k_scale; NULL otherwise); lengths int64
 *            [nq]: query i sees keys
 *            0 .. lengths[i] - 1 (its position + 1; 1 <= lengths[i] <= max_len); dim at most
 *            CG_ATTEND_MAX_DIM; y [batch, nq, heads, dim] (dtype)
 *            y[b, i, h] = softmax_t(scale * q[b, i, h] . k[b, h, t]) @ v[b, h, :lengths[i]]
 *
 * Return value: 0, or CG_EBADARG when a shape breaks the contract (nothing is written), or
 * CG_ENOMEM, or CG_EISA when the requested instruction set is not available.
 */
#ifndef CODEGEN_NATIVE_H
#define CODEGEN_NATIVE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CG_F32 0
#define CG_BF16 1
#define CG_I8 2 /* KV caches only: int8 with a float32 scale per head and position */

#define CG_ISA_GENERIC 0
#define CG_ISA_AVX2 1
#define CG_ISA_AVX512 2
#define CG_ISA_COUNT 3

#define CG_OK 0
#define CG_EBADARG 1
#define CG_ENOMEM 2
#define CG_EISA 3

#define CG_Q4_GROUP 32
#define CG_ATTEND_MAX_DIM 256
#define CG_ABI_VERSION 4
#define CG_MAX_THREADS 8
#define CG_MAX_PARTS 65535 /* parts of one call (team.c) */

typedef int (*cg_gemv_q8_fn)(const void *x, int64_t m, int64_t k, const int8_t *w,
                             const float *scale, const float *bias, int64_t n, void *y,
                             int dtype);
typedef int (*cg_gemv_q4_fn)(const void *x, int64_t m, int64_t k, const uint8_t *w,
                             const uint16_t *sz, const float *bias, int64_t n, void *y,
                             int dtype);

typedef int (*cg_attend_fn)(const void *q, int64_t batch, int64_t nq, int64_t heads, int64_t dim,
                            const void *k, const void *v, const float *k_scale,
                            const float *v_scale, int64_t max_len, const int64_t *lengths,
                            float scale, void *y, int dtype, int kv_dtype);
#define CG_ATTEND_ARGS                                                                           \
    const void *q, int64_t batch, int64_t nq, int64_t heads, int64_t dim, const void *k,         \
        const void *v, const float *k_scale, const float *v_scale, int64_t max_len,              \
        const int64_t *lengths, float scale, void *y, int dtype, int kv_dtype

/* team.c: the kernels' threads (see there). A call's work is `parts` calls of `fn(ctx, part,
 * worker)` (worker 0 is the caller), each writing outputs no other part writes and reading about
 * `part_bytes` bytes (the unit the team's timing is kept in). */
typedef void (*cg_part_fn)(void *ctx, int64_t part, int worker);
void cg_team_run(cg_part_fn fn, void *ctx, int64_t parts, int64_t part_bytes);
int cg_set_threads(int threads);   /* 1 .. CG_MAX_THREADS, the caller included; the count set */
int cg_threads(void);
/* out[0]: calls shared with helpers; out[1]: calls run alone; out[2]: stalls (waits for a
 * helper descheduled mid-part) */
void cg_team_stats(int64_t *out);

/* dispatch.c: the exported entry points */
int cg_abi_version(void);
int cg_isa(void);                  /* the instruction set in use (after CODEGEN_CPU_ISA) */
int cg_cpu_supports(int isa);      /* 1 when this CPU and OS run `isa` */
const char *cg_isa_name(int isa);  /* "generic", "avx2", "avx512" */
const char *cg_init_error(void);   /* "" or why CODEGEN_CPU_ISA could not be honoured */
int cg_gemv_q8(const void *x, int64_t m, int64_t k, const int8_t *w, const float *scale,
               const float *bias, int64_t n, void *y, int dtype);
int cg_gemv_q4(const void *x, int64_t m, int64_t k, const uint8_t *w, const uint16_t *sz,
               const float *bias, int64_t n, void *y, int dtype);
/* the same on a named instruction set (tests): CG_EISA when this CPU lacks it; isa -1 is the
 * scalar reference */
int cg_gemv_q8_isa(int isa, const void *x, int64_t m, int64_t k, const int8_t *w,
                   const float *scale, const float *bias, int64_t n, void *y, int dtype);
int cg_gemv_q4_isa(int isa, const void *x, int64_t m, int64_t k, const uint8_t *w,
                   const uint16_t *sz, const float *bias, int64_t n, void *y, int dtype);

int cg_attend(CG_ATTEND_ARGS);
int cg_attend_isa(int isa, CG_ATTEND_ARGS);

/* one per instruction set file (ref.c, generic.c, avx2.c, avx512.c) */
int cg_gemv_q8_ref(const void *x, int64_t m, int64_t k, const int8_t *w, const float *scale,
                   const float *bias, int64_t n, void *y, int dtype);
int cg_gemv_q4_ref(const void *x, int64_t m, int64_t k, const uint8_t *w, const uint16_t *sz,
                   const float *bias, int64_t n, void *y, int dtype);
int cg_gemv_q8_generic(const void *x, int64_t m, int64_t k, const int8_t *w,
                       const float *scale, const float *bias, int64_t n, void *y, int dtype);
int cg_gemv_q4_generic(const void *x, int64_t m, int64_t k, const uint8_t *w,
                       const uint16_t *sz, const float *bias, int64_t n, void *y, int dtype);
int cg_gemv_q8_avx2(const void *x, int64_t m, int64_t k, const int8_t *w, const float *scale,
                    const float *bias, int64_t n, void *y, int dtype);
int cg_gemv_q4_avx2(const void *x, int64_t m, int64_t k, const uint8_t *w, const uint16_t *sz,
                    const float *bias, int64_t n, void *y, int dtype);
int cg_gemv_q8_avx512(const void *x, int64_t m, int64_t k, const int8_t *w,
                      const float *scale, const float *bias, int64_t n, void *y, int dtype);
int cg_gemv_q4_avx512(const void *x, int64_t m, int64_t k, const uint8_t *w,
                      const uint16_t *sz, const float *bias, int64_t n, void *y, int dtype);

int cg_attend_ref(CG_ATTEND_ARGS);
int cg_attend_generic(CG_ATTEND_ARGS);
int cg_attend_avx2(CG_ATTEND_ARGS);
int cg_attend_avx512(CG_ATTEND_ARGS);

#ifdef __cplusplus
}
#endif
#endif
