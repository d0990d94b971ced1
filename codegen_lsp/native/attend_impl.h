/* attend_impl.h: the attention kernel, written once over a small vector vocabulary that each
 * instruction-set file defines before including it (CG_V: the vector type, CG_VW: its float32
 * lanes; v_zero, v_set1, v_load, v_load_bf16, v_load_i8, v_store, v_add, v_sub, v_div, v_fma, v_hsum,
 * v_exp; CG_ATTEND_NAME: the exported name). Each file compiles it with its own flags.
 *
 * The keys and values of a head are streamed once for all the call's queries; each (batch row,
 * query, head) is computed in an order fixed by its key count alone:
 * scores q.k_t (one vector accumulator over the head's dims, then a fixed horizontal sum),
 * times scale; their maximum; p_t = exp(s_t - max) (lane-wise, so a score's p does not depend
 * on its place in a vector), their sum in CG_VW lanes in key order, then a fixed horizontal
 * sum; the output sum_t p_t v_t in key order, one accumulator per CG_VW dims, divided by the
 * sum. A query of a k-query call therefore equals, bit for bit, a one-query call. */
#ifndef CG_ATTEND_NAME
#error "define the vector vocabulary and CG_ATTEND_NAME before including attend_impl.h"
#endif

#define CG_MAXC (CG_ATTEND_MAX_DIM / CG_VW)

/* dims c0 .. c0 + CG_VW - 1 of one key or value row (zeros past dim) */
static inline __attribute__((always_inline)) CG_V kv_chunk(const void *row, int64_t c0,
                                                           int64_t dim, const int kvd) {
    if (c0 + CG_VW <= dim)
        return kvd == CG_BF16 ? v_load_bf16((const uint16_t *)row + c0)
               : kvd == CG_I8 ? v_load_i8((const int8_t *)row + c0)
                              : v_load((const float *)row + c0);
    float tmp[CG_VW];
    for (int j = 0; j < CG_VW; j++) {
        int64_t d = c0 + j;
        tmp[j] = d >= dim          ? 0.0f
                 : kvd == CG_BF16 ? cg_bf16_to_f32(((const uint16_t *)row)[d])
                 : kvd == CG_I8   ? (float)((const int8_t *)row)[d]
                                  : ((const float *)row)[d];
    }
    return v_load(tmp);
}

/* Every query of one (batch row, head): the keys and values are read once for all of them
 * (a verify call costs about what one query costs), each query's arithmetic the same as
 * alone. qf [nq, dpad] queries, s [nq, spad] scores, acc [nq, dpad] output sums. */
static inline __attribute__((always_inline)) void attend_head(
    int64_t nq, const int64_t *lengths, int64_t longest, const float *qf, int64_t dim,
    int64_t dpad, int64_t spad, const char *k, const char *v, const float *ks, const float *vs,
    int64_t row_bytes, float scale, float *s, float *acc, const int kvd) {
    int64_t chunks = (dim + CG_VW - 1) / CG_VW;
    CG_V row[CG_MAXC];
    for (int64_t t = 0; t < longest; t++) {
        const void *kt = k + t * row_bytes;
        for (int64_t c = 0; c < chunks; c++) row[c] = kv_chunk(kt, c * CG_VW, dim, kvd);
        for (int64_t i = 0; i < nq; i++) {
            if (t >= lengths[i]) continue;
            const float *q = qf + i * dpad;
            CG_V a = v_zero();
            for (int64_t c = 0; c < chunks; c++) a = v_fma(v_load(q + c * CG_VW), row[c], a);
            s[i * spad + t] = v_hsum(a) * (ks ? scale * ks[t] : scale);
        }
    }
    for (int64_t i = 0; i < nq; i++) {
        float *si = s + i * spad;
        int64_t len = lengths[i];
        float top = si[0];
        for (int64_t t = 1; t < len; t++) top = si[t] > top ? si[t] : top;
        int64_t padded = (len + CG_VW - 1) / CG_VW * CG_VW;
        for (int64_t t = len; t < padded; t++) si[t] = top;
        CG_V shift = v_set1(top);
        for (int64_t t = 0; t < padded; t += CG_VW)
            v_store(si + t, v_exp(v_sub(v_load(si + t), shift)));
        for (int64_t t = len; t < padded; t++) si[t] = 0.0f;
        for (int64_t c = 0; c < chunks; c++) v_store(acc + i * dpad + c * CG_VW, v_zero());
    }
    if (nq == 1) { /* the decode step: the sums stay in registers (the same arithmetic) */
        CG_V a[CG_MAXC];
        for (int64_t c = 0; c < chunks; c++) a[c] = v_zero();
        for (int64_t t = 0; t < longest; t++) {
            const void *vt = v + t * row_bytes;
            CG_V p = v_set1(vs ? s[t] * vs[t] : s[t]);
            for (int64_t c = 0; c < chunks; c++)
                a[c] = v_fma(p, kv_chunk(vt, c * CG_VW, dim, kvd), a[c]);
        }
        for (int64_t c = 0; c < chunks; c++) v_store(acc + c * CG_VW, a[c]);
    } else for (int64_t t = 0; t < longest; t++) {
        const void *vt = v + t * row_bytes;
        for (int64_t c = 0; c < chunks; c++) row[c] = kv_chunk(vt, c * CG_VW, dim, kvd);
        for (int64_t i = 0; i < nq; i++) {
            if (t >= lengths[i]) continue;
            CG_V p = v_set1(vs ? s[i * spad + t] * vs[t] : s[i * spad + t]);
            float *a = acc + i * dpad;
            for (int64_t c = 0; c < chunks; c++)
                v_store(a + c * CG_VW, v_fma(p, row[c], v_load(a + c * CG_VW)));
        }
    }
    for (int64_t i = 0; i < nq; i++) {
        float *si = s + i * spad;
        int64_t padded = (lengths[i] + CG_VW - 1) / CG_VW * CG_VW;
        CG_V lanes = v_zero();
        for (int64_t t = 0; t < padded; t += CG_VW) lanes = v_add(lanes, v_load(si + t));
        CG_V denom = v_set1(v_hsum(lanes));
        float *a = acc + i * dpad;
        for (int64_t c = 0; c < chunks; c++)
            v_store(a + c * CG_VW, v_div(v_load(a + c * CG_VW), denom));
    }
}

/* one call's parts: a part is one (batch row, head); each thread has its own scratch */
typedef struct {
    const void *q, *k, *v;
    const float *k_scale, *v_scale;
    int64_t nq, heads, dim, max_len, longest, dpad, spad, row_bytes;
    const int64_t *lengths;
    float scale;
    void *y;
    int dtype, kv_dtype, failed;
    float *scratch[CG_MAX_THREADS];
} cg_attend_job;

static void attend_part(void *ctx, int64_t part, int worker) {
    cg_attend_job *j = (cg_attend_job *)ctx;
    int64_t nq = j->nq, dim = j->dim, dpad = j->dpad, spad = j->spad, heads = j->heads;
    int64_t b = part / heads, h = part % heads;
    if (!j->scratch[worker]) {
        size_t floats = (size_t)(nq * (spad + 2 * dpad) + 16);
        j->scratch[worker] = (float *)aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
        if (!j->scratch[worker]) {
            __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
            return;
        }
    }
    float *s = j->scratch[worker], *qf = s + nq * spad, *acc = qf + nq * dpad;
    for (int64_t i = 0; i < nq; i++) {
        int64_t qi = ((b * nq + i) * heads + h) * dim;
        for (int64_t d = 0; d < dpad; d++)
            qf[i * dpad + d] = d >= dim                ? 0.0f
                               : j->dtype == CG_BF16 ? cg_bf16_to_f32(((const uint16_t *)j->q)[qi + d])
                                                     : ((const float *)j->q)[qi + d];
    }
    int64_t base = ((b * heads + h) * j->max_len) * j->row_bytes;
    const char *kh = (const char *)j->k + base, *vh = (const char *)j->v + base;
    int64_t sb = (b * heads + h) * j->max_len; /* this head's scales (int8 caches) */
    if (j->kv_dtype == CG_BF16)
        attend_head(nq, j->lengths, j->longest, qf, dim, dpad, spad, kh, vh, NULL, NULL,
                    j->row_bytes, j->scale, s, acc, CG_BF16);
    else if (j->kv_dtype == CG_I8)
        attend_head(nq, j->lengths, j->longest, qf, dim, dpad, spad, kh, vh, j->k_scale + sb,
                    j->v_scale + sb, j->row_bytes, j->scale, s, acc, CG_I8);
    else
        attend_head(nq, j->lengths, j->longest, qf, dim, dpad, spad, kh, vh, NULL, NULL,
                    j->row_bytes, j->scale, s, acc, CG_F32);
    for (int64_t i = 0; i < nq; i++) {
        int64_t qi = ((b * nq + i) * heads + h) * dim;
        for (int64_t d = 0; d < dim; d++) cg_store(j->y, qi + d, acc[i * dpad + d], j->dtype);
    }
}

int CG_ATTEND_NAME(CG_ATTEND_ARGS) {
    int rc = cg_attend_check(q, batch, nq, heads, dim, k, v, k_scale, v_scale, max_len, lengths, y,
                             dtype, kv_dtype);
    if (rc || batch == 0 || nq == 0 || heads == 0) return rc;
    int64_t longest = 0;
    for (int64_t i = 0; i < nq; i++) longest = lengths[i] > longest ? lengths[i] : longest;
    int64_t elem = kv_dtype == CG_BF16 ? 2 : kv_dtype == CG_I8 ? 1 : 4;
    cg_attend_job job = {q, k, v, k_scale, v_scale, nq, heads, dim, max_len, longest,
                         (dim + CG_VW - 1) / CG_VW * CG_VW, (longest + CG_VW - 1) / CG_VW * CG_VW,
                         dim * elem, lengths, scale, y, dtype, kv_dtype, 0, {0}};
    /* a head's keys and values under CG_PART_BYTES are not worth a second thread */
    int64_t head_bytes = 2 * longest * dim * elem;
    if (head_bytes * batch * heads >= 4 * CG_PART_BYTES)
        cg_team_run(attend_part, &job, batch * heads, head_bytes);
    else
        for (int64_t part = 0; part < batch * heads; part++) attend_part(&job, part, 0);
    for (int i = 0; i < CG_MAX_THREADS; i++) free(job.scratch[i]);
    return job.failed ? CG_ENOMEM : CG_OK;
}
