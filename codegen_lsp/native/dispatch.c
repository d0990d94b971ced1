/* dispatch.c: reads the CPU's features once (when the library loads), including the OS's
 * support for the AVX registers (xgetbv), into a function table; CODEGEN_CPU_ISA
 * (generic|avx2|avx512) forces one (an error, reported by cg_init_error, when this CPU or its
 * OS lacks it; the best supported one is used meanwhile). Compiled without instruction-set
 * flags: nothing here runs AVX code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen_native.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CG_X86 1
#else
#define CG_X86 0
#endif

typedef struct {
    cg_gemv_q8_fn gemv_q8;
    cg_gemv_q4_fn gemv_q4;
    cg_attend_fn attend;
} cg_table;

static const char *const names[CG_ISA_COUNT] = {"generic", "avx2", "avx512"};
static int supported[CG_ISA_COUNT];
static int selected = CG_ISA_GENERIC;
static char init_error[160];

static cg_table table_for(int isa) {
    cg_table t = {cg_gemv_q8_generic, cg_gemv_q4_generic, cg_attend_generic};
#if CG_X86 && !defined(CG_NO_AVX)
    if (isa == CG_ISA_AVX2) t = (cg_table){cg_gemv_q8_avx2, cg_gemv_q4_avx2, cg_attend_avx2};
    if (isa == CG_ISA_AVX512) t = (cg_table){cg_gemv_q8_avx512, cg_gemv_q4_avx512, cg_attend_avx512};
#else
    (void)isa;
#endif
    return t;
}

#if CG_X86
static unsigned long long xgetbv0(void) {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

static void detect(void) {
    supported[CG_ISA_GENERIC] = 1;
#if CG_X86 && !defined(CG_NO_AVX)
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx) return;
    unsigned long long xcr0 = xgetbv0();
    int os_avx = (xcr0 & 0x6) == 0x6;          /* XMM and YMM state */
    int os_avx512 = (xcr0 & 0xe6) == 0xe6;     /* and opmask, ZMM_Hi256, Hi16_ZMM */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    int avx2 = (b >> 5) & 1;
    int avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1);
    supported[CG_ISA_AVX2] = os_avx && avx2 && fma;
    supported[CG_ISA_AVX512] = supported[CG_ISA_AVX2] && os_avx512 && avx512;
#endif
}

__attribute__((constructor)) static void cg_init(void) {
    detect();
    for (int isa = 0; isa < CG_ISA_COUNT; isa++)
        if (supported[isa]) selected = isa;
    const char *want = getenv("CODEGEN_CPU_ISA");
    if (!want || !*want) return;
    for (int isa = 0; isa < CG_ISA_COUNT; isa++) {
        if (strcmp(want, names[isa]) != 0) continue;
        if (supported[isa])
            selected = isa;
        else
            snprintf(init_error, sizeof init_error,
                     "CODEGEN_CPU_ISA=%s: this CPU (or its OS) does not support %s", want, want);
        return;
    }
    snprintf(init_error, sizeof init_error,
             "CODEGEN_CPU_ISA=%.40s is not one of generic, avx2, avx512", want);
}

int cg_abi_version(void) { return CG_ABI_VERSION; }
int cg_isa(void) { return selected; }
int cg_cpu_supports(int isa) { return isa >= 0 && isa < CG_ISA_COUNT && supported[isa]; }
const char *cg_isa_name(int isa) { return isa >= 0 && isa < CG_ISA_COUNT ? names[isa] : "?"; }
const char *cg_init_error(void) { return init_error; }

int cg_gemv_q8(const void *x, int64_t m, int64_t k, const int8_t *w, const float *scale,
               const float *bias, int64_t n, void *y, int dtype) {
    return table_for(selected).gemv_q8(x, m, k, w, scale, bias, n, y, dtype);
}

int cg_gemv_q4(const void *x, int64_t m, int64_t k, const uint8_t *w, const uint16_t *sz,
               const float *bias, int64_t n, void *y, int dtype) {
    return table_for(selected).gemv_q4(x, m, k, w, sz, bias, n, y, dtype);
}

int cg_gemv_q8_isa(int isa, const void *x, int64_t m, int64_t k, const int8_t *w,
                   const float *scale, const float *bias, int64_t n, void *y, int dtype) {
    if (isa == -1) return cg_gemv_q8_ref(x, m, k, w, scale, bias, n, y, dtype);
    if (!cg_cpu_supports(isa)) return CG_EISA;
    return table_for(isa).gemv_q8(x, m, k, w, scale, bias, n, y, dtype);
}

int cg_gemv_q4_isa(int isa, const void *x, int64_t m, int64_t k, const uint8_t *w,
                   const uint16_t *sz, const float *bias, int64_t n, void *y, int dtype) {
    if (isa == -1) return cg_gemv_q4_ref(x, m, k, w, sz, bias, n, y, dtype);
    if (!cg_cpu_supports(isa)) return CG_EISA;
    return table_for(isa).gemv_q4(x, m, k, w, sz, bias, n, y, dtype);
}

#define CG_ATTEND_PASS                                                                           \
    q, batch, nq, heads, dim, k, v, k_scale, v_scale, max_len, lengths, scale, y, dtype, kv_dtype

int cg_attend(CG_ATTEND_ARGS) { return table_for(selected).attend(CG_ATTEND_PASS); }

int cg_attend_isa(int isa, CG_ATTEND_ARGS) {
    if (isa == -1) return cg_attend_ref(CG_ATTEND_PASS);
    if (!cg_cpu_supports(isa)) return CG_EISA;
    return table_for(isa).attend(CG_ATTEND_PASS);
}
