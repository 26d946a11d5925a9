/*
 * nbq_native.c - the exact integer conv layer of docs/datapath.md on the CPU, fast.
 *
 * One layer: int16 NHWC input, int16 weights, exact integer accumulation, per-channel
 * requantisation (round half up), ReLU, saturation to int16, fused 2x2 max-pool.
 * Bit-identical to pynq_nbq.ops.conv_layer (the numpy reference); the Python side
 * (pynq_nbq/native/__init__.py) chooses the accumulation mode from the layer's
 * accumulator bound and packs the weights with nbq_native_pack().
 *
 * Method: implicit GEMM.  For a chunk of output pixels the input patches are copied
 * into rows A[pixel][k] (k = (ky, kx, ci), zero padding written as zeros), and a
 * register-blocked micro-kernel computes C[pixel][co] = sum_k A[pixel][k] * B[k][co]
 * in int32 lanes:
 *   x86 AVX-512BW : vpmaddwd / AVX-512 VNNI vpdpwssd, 16 int32 lanes, k in pairs
 *   x86 AVX2      : vpmaddwd, 8 int32 lanes, k in pairs
 *   aarch64 NEON  : smlal/smlal2 (int16 x int16 -> int32), 4 lanes per register
 *   anything else : plain C loops (the compiler vectorises what it can)
 *
 * Exactness.  int32 accumulation is used only in two ways, chosen by the caller:
 *   split = 0: the caller has checked that every partial sum of the layer fits int32
 *              (fan_in * 2^15 * max|w| < 2^31), so nothing can overflow;
 *   split = 1: columns [0, cout) hold the high parts wh and [cout, 2 cout) the low
 *              parts wl of each weight, w = 256 wh + wl with wh, wl in [-128, 128];
 *              sums over at most `kblock` terms (chosen so that kblock * 2^15 * 128
 *              < 2^31) are added into int64 as 256 * hi + lo after every block.
 * Requantisation is int64: (acc * mult + bias + half) >> shift, which the datapath
 * keeps within 63 bits (docs/datapath.md section 2); >> on a negative int64 is an
 * arithmetic shift on every compiler this runs on (gcc, clang: documented).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NBQ_NATIVE_ABI 1

#if defined(__AVX512BW__)
#include <immintrin.h>
#define KU 2    /* k values per packed unit (vpmaddwd multiplies pairs) */
#define LANES 16 /* int32 lanes per vector */
#define NV 2    /* vectors of output channels per micro-tile */
#define P 12    /* pixels per micro-tile */
#if defined(__AVX512VNNI__)
#define ISA "x86-64 AVX-512 VNNI (vpdpwssd)"
#else
#define ISA "x86-64 AVX-512BW (vpmaddwd)"
#endif
#elif defined(__AVX2__)
#include <immintrin.h>
#define KU 2
#define LANES 8
#define NV 2
#define P 6
#define ISA "x86-64 AVX2 (vpmaddwd)"
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define KU 1
#define LANES 8 /* int16 per q register: two int32x4 accumulators */
#define NV 2
#define P 6
#define ISA "aarch64 NEON (smlal)"
#else
#define KU 1
#define LANES 8
#define NV 1
#define P 4
#define ISA "generic C"
#endif

#define NB (NV * LANES) /* output channels per packed panel */
#define M_CHUNK (P * 8) /* output pixels whose patches are gathered at once */

int nbq_native_abi_version(void) { return NBQ_NATIVE_ABI; }
const char *nbq_native_isa(void) { return ISA; }
int nbq_native_k_unit(void) { return KU; }
int nbq_native_panel(void) { return NB; }

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

/* int16 elements of the packed weights of a (cols x klen) matrix. */
long nbq_native_packed_len(int cols, int klen) {
    return (long)round_up(cols, NB) * round_up(klen, KU);
}

/*
 * Pack row-major weights w[cols][klen] (k in (ky, kx, ci) order) into panels of NB
 * columns: panel[p][k / KU][NB][KU], zero-padded in k and in columns.
 */
void nbq_native_pack(const int16_t *w, int cols, int klen, int16_t *out) {
    int kp = round_up(klen, KU), npan = round_up(cols, NB) / NB;
    memset(out, 0, sizeof(int16_t) * (size_t)npan * NB * kp);
    for (int c = 0; c < cols; c++) {
        int16_t *panel = out + (size_t)(c / NB) * NB * kp;
        for (int k = 0; k < klen; k++)
            panel[(size_t)(k / KU) * NB * KU + (c % NB) * KU + k % KU] = w[(size_t)c * klen + k];
    }
}

/*
 * C[p][0..NB) = sum over k in [k0, k1) of A[p * lda + k] * B[k][.] for P pixels;
 * B is one panel (NB columns), k0 and k1 multiples of KU.  The SIMD versions name
 * every accumulator (c<pixel><vector>) so that the compiler keeps them all in
 * registers (arrays of vectors get spilled to the stack).
 */
#define REPEAT4(M) M(0) M(1) M(2) M(3)
#define REPEAT6(M) REPEAT4(M) M(4) M(5)
#define REPEAT12(M) REPEAT6(M) M(6) M(7) M(8) M(9) M(10) M(11)

#if defined(__AVX512BW__) || defined(__AVX2__)
#if defined(__AVX512BW__)
typedef __m512i vec;
#define FOR_P REPEAT12
#define VZERO() _mm512_setzero_si512()
#define VLOAD(p) _mm512_loadu_si512((const void *)(p))
#define VSTORE(p, v) _mm512_storeu_si512((void *)(p), v)
#define VBCAST(v) _mm512_set1_epi32(v)
#if defined(__AVX512VNNI__)
#define VMADD(c, a, w) _mm512_dpwssd_epi32(c, a, w)
#else
#define VMADD(c, a, w) _mm512_add_epi32(c, _mm512_madd_epi16(a, w))
#endif
#else
typedef __m256i vec;
#define FOR_P REPEAT6
#define VZERO() _mm256_setzero_si256()
#define VLOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define VSTORE(p, v) _mm256_storeu_si256((__m256i *)(p), v)
#define VBCAST(v) _mm256_set1_epi32(v)
#define VMADD(c, a, w) _mm256_add_epi32(c, _mm256_madd_epi16(a, w))
#endif
static void micro(const int16_t *A, int lda, const int16_t *B, int k0, int k1, int32_t *C,
                  int ldc) {
#define DECL(p) vec c##p##0 = VZERO(), c##p##1 = VZERO();
#define STEP(p)                                                                               \
    {                                                                                         \
        int32_t pair; /* x[k], x[k+1] of pixel p as one 32-bit lane, broadcast */              \
        memcpy(&pair, A + (size_t)(p) * lda + k, sizeof pair);                                \
        vec a = VBCAST(pair);                                                                 \
        c##p##0 = VMADD(c##p##0, a, w0);                                                      \
        c##p##1 = VMADD(c##p##1, a, w1);                                                      \
    }
#define STORE(p)                                     \
    VSTORE(C + (size_t)(p) * ldc, c##p##0);          \
    VSTORE(C + (size_t)(p) * ldc + LANES, c##p##1);
    FOR_P(DECL)
    for (int k = k0; k < k1; k += 2) {
        const int16_t *b = B + (size_t)k * NB;
        vec w0 = VLOAD(b), w1 = VLOAD(b + 2 * LANES); /* columns 0..LANES-1, LANES..NB-1 */
        FOR_P(STEP)
    }
    FOR_P(STORE)
#undef DECL
#undef STEP
#undef STORE
}
#elif defined(__aarch64__) && defined(__ARM_NEON)
static void micro(const int16_t *A, int lda, const int16_t *B, int k0, int k1, int32_t *C,
                  int ldc) {
#define DECL(p) int32x4_t c##p##0 = vdupq_n_s32(0), c##p##1 = c##p##0, c##p##2 = c##p##0, \
                          c##p##3 = c##p##0;
#define STEP(p)                                                      \
    {                                                                \
        int16_t a = A[(size_t)(p) * lda + k];                        \
        c##p##0 = vmlal_n_s16(c##p##0, vget_low_s16(w0), a);         \
        c##p##1 = vmlal_high_n_s16(c##p##1, w0, a);                  \
        c##p##2 = vmlal_n_s16(c##p##2, vget_low_s16(w1), a);         \
        c##p##3 = vmlal_high_n_s16(c##p##3, w1, a);                  \
    }
#define STORE(p)                                  \
    vst1q_s32(C + (size_t)(p) * ldc, c##p##0);     \
    vst1q_s32(C + (size_t)(p) * ldc + 4, c##p##1); \
    vst1q_s32(C + (size_t)(p) * ldc + 8, c##p##2); \
    vst1q_s32(C + (size_t)(p) * ldc + 12, c##p##3);
    REPEAT6(DECL)
    for (int k = k0; k < k1; k++) {
        const int16_t *b = B + (size_t)k * NB;
        int16x8_t w0 = vld1q_s16(b), w1 = vld1q_s16(b + 8);
        REPEAT6(STEP)
    }
    REPEAT6(STORE)
#undef DECL
#undef STEP
#undef STORE
}
#else
static void micro(const int16_t *A, int lda, const int16_t *B, int k0, int k1, int32_t *C,
                  int ldc) {
    int32_t acc[P][NB];
    memset(acc, 0, sizeof acc);
    for (int k = k0; k < k1; k++) {
        const int16_t *b = B + (size_t)k * NB;
        for (int p = 0; p < P; p++) {
            int32_t a = A[(size_t)p * lda + k];
            for (int j = 0; j < NB; j++) acc[p][j] += a * (int32_t)b[j];
        }
    }
    for (int p = 0; p < P; p++) memcpy(C + (size_t)p * ldc, acc[p], sizeof acc[p]);
}
#endif

/* Copy n int16: short runs (a few channels) inline, long runs with memcpy. */
static inline void copy16(int16_t *dst, const int16_t *src, int n) {
    if (n > 32) {
        memcpy(dst, src, sizeof(int16_t) * n);
    } else {
        for (int i = 0; i < n; i++) dst[i] = src[i];
    }
}

static inline void zero16(int16_t *dst, int n) {
    for (int i = 0; i < n; i++) dst[i] = 0;
}

/* Copy the k x k x cin patch of output pixel (oy, ox) into row a (kp int16, zero padded). */
static void gather(const int16_t *x, int h, int w, int cin, int k, int stride, int pad, int oy,
                   int ox, int kp, int16_t *a) {
    int run = k * cin;
    int ix0 = ox * stride - pad;
    int lo = ix0 < 0 ? -ix0 : 0;        /* first kx inside the image */
    int hi = ix0 + k > w ? w - ix0 : k; /* one past the last */
    if (hi < lo) hi = lo;
    for (int ky = 0; ky < k; ky++) {
        int16_t *dst = a + ky * run;
        int iy = oy * stride - pad + ky;
        if (iy < 0 || iy >= h) {
            zero16(dst, run);
            continue;
        }
        zero16(dst, lo * cin);
        copy16(dst + lo * cin, x + ((size_t)iy * w + ix0 + lo) * cin, (hi - lo) * cin);
        zero16(dst + hi * cin, (k - hi) * cin);
    }
    zero16(a + k * run, kp - k * run);
}

/*
 * Requantise one pixel's accumulators (docs/datapath.md section 2, steps 2-4):
 * out[c] = clamp((acc[c] * mult[c] + off[c]) >> shift[c], lo, 32767) with
 * off = bias + 2^(shift-1) (round half up, from the caller) and lo = 0 with ReLU,
 * else -32768.
 * Branch-free, so that the compiler vectorises it in 64-bit lanes.
 */
static void requant32(const int32_t *acc, int cout, const int64_t *mult, const int64_t *off,
                      const int64_t *shift, int64_t lo, int16_t *out) {
    for (int c = 0; c < cout; c++) {
        int64_t v = ((int64_t)acc[c] * mult[c] + off[c]) >> shift[c];
        v = v < lo ? lo : v;
        out[c] = (int16_t)(v > 32767 ? 32767 : v);
    }
}

static void requant64(const int64_t *acc, int cout, const int64_t *mult, const int64_t *off,
                      const int64_t *shift, int64_t lo, int16_t *out) {
    for (int c = 0; c < cout; c++) {
        int64_t v = (acc[c] * mult[c] + off[c]) >> shift[c];
        v = v < lo ? lo : v;
        out[c] = (int16_t)(v > 32767 ? 32767 : v);
    }
}

/*
 * One conv layer on a batch; see the header comment.  Returns 0, or 1 when out of
 * memory (nothing written then is meaningful).
 *   x      int16 (n, h, w, cin)
 *   packed nbq_native_pack() of cols x (k*k*cin) weights, cols = cout (split 0)
 *          or 2 * cout (split 1)
 *   kblock terms summed in int32 before moving to int64 (split 1; a multiple of KU)
 *   mult, off, shift int64 (cout,): off = bias + 2^(shift-1) (0 if shift = 0), the
 *          rounding constant added by the caller (pynq_nbq.datapath.half)
 *   y      int16 (n, oh, ow, cout), after the pool when pool = 2
 */
int nbq_native_conv(const int16_t *x, int n, int h, int w, int cin, const int16_t *packed,
                    int cout, int k, int stride, int pad, int split, int kblock,
                    const int64_t *mult, const int64_t *off, const int64_t *shift, int relu,
                    int pool, int16_t *y) {
    int klen = k * k * cin, kp = round_up(klen, KU);
    int cols = split ? 2 * cout : cout, ldc = round_up(cols, NB), npan = ldc / NB;
    int ohc = (h + 2 * pad - k) / stride + 1, owc = (w + 2 * pad - k) / stride + 1;
    int oh = pool ? ohc / 2 : ohc, ow = pool ? owc / 2 : owc;
    int rows = pool ? 2 * oh : ohc; /* conv rows that reach the output */
    int pixels = rows * owc;
    if (!split || kblock >= kp) {
        kblock = kp;
    } else {
        kblock -= kblock % KU; /* block edges stay on packed units */
        if (kblock < KU) kblock = KU;
    }
    int16_t *A = malloc(sizeof(int16_t) * (size_t)M_CHUNK * kp);
    int32_t *C = malloc(sizeof(int32_t) * (size_t)M_CHUNK * ldc);
    int64_t *acc = split ? malloc(sizeof(int64_t) * (size_t)M_CHUNK * cout) : NULL;
    int16_t *conv = pool ? malloc(sizeof(int16_t) * (size_t)rows * owc * cout) : NULL;
    if (!A || !C || (split && !acc) || (pool && !conv)) {
        free(A), free(C), free(acc), free(conv);
        return 1;
    }
    int64_t lo = relu ? 0 : -32768;
    for (int img = 0; img < n; img++) {
        const int16_t *xi = x + (size_t)img * h * w * cin;
        int16_t *yi = y + (size_t)img * oh * ow * cout;
        int16_t *dst = pool ? conv : yi; /* rows x owc x cout before the pool */
        for (int m0 = 0; m0 < pixels; m0 += M_CHUNK) {
            int mlen = pixels - m0 < M_CHUNK ? pixels - m0 : M_CHUNK;
            int mpad = round_up(mlen, P);
            for (int m = 0; m < mpad; m++) {
                if (m < mlen)
                    gather(xi, h, w, cin, k, stride, pad, (m0 + m) / owc, (m0 + m) % owc, kp,
                           A + (size_t)m * kp);
                else
                    zero16(A + (size_t)m * kp, kp);
            }
            if (split) memset(acc, 0, sizeof(int64_t) * (size_t)mlen * cout);
            for (int k0 = 0; k0 < kp; k0 += kblock) {
                int k1 = k0 + kblock < kp ? k0 + kblock : kp;
                for (int pn = 0; pn < npan; pn++)
                    for (int m = 0; m < mpad; m += P)
                        micro(A + (size_t)m * kp, kp, packed + (size_t)pn * NB * kp, k0, k1,
                              C + (size_t)m * ldc + pn * NB, ldc);
                if (split)
                    for (int m = 0; m < mlen; m++)
                        for (int c = 0; c < cout; c++)
                            acc[(size_t)m * cout + c] += 256 * (int64_t)C[(size_t)m * ldc + c] +
                                                         C[(size_t)m * ldc + cout + c];
            }
            for (int m = 0; m < mlen; m++) {
                int16_t *out = dst + (size_t)(m0 + m) * cout;
                if (split)
                    requant64(acc + (size_t)m * cout, cout, mult, off, shift, lo, out);
                else
                    requant32(C + (size_t)m * ldc, cout, mult, off, shift, lo, out);
            }
        }
        if (pool)
            for (int py = 0; py < oh; py++)
                for (int px = 0; px < ow; px++) {
                    const int16_t *r0 = conv + ((size_t)(2 * py) * owc + 2 * px) * cout;
                    const int16_t *r1 = r0 + (size_t)owc * cout;
                    int16_t *out = yi + ((size_t)py * ow + px) * cout;
                    for (int c = 0; c < cout; c++) {
                        int16_t v = r0[c];
                        if (r0[cout + c] > v) v = r0[cout + c];
                        if (r1[c] > v) v = r1[c];
                        if (r1[cout + c] > v) v = r1[cout + c];
                        out[c] = v;
                    }
                }
    }
    free(A), free(C), free(acc), free(conv);
    return 0;
}
