/*
 * nbq_native.c - the exact integer conv layers of docs/datapath.md on the CPU, fast.
 *
 * One layer: int16 NHWC input, int16 weights, exact integer accumulation, per-channel
 * requantisation (round half up), ReLU, saturation to int16, fused 2x2 max-pool.
 * Bit-identical to pynq_nbq.ops.conv_layer (the numpy reference); the Python side
 * (pynq_nbq/native/__init__.py) chooses the accumulation mode from the layer's
 * accumulator bound and packs the weights with nbq_native_pack().
 *
 * Method: implicit GEMM.  A register-blocked micro-kernel computes
 * C[pixel][co] = sum_k A[pixel][k] * B[k][co] (k = (ky, kx, ci)) in int32 lanes, A
 * read in place from a zero-padded copy of the input rows (conv_direct: stride 1,
 * int32 accumulation) or from patches copied into rows (gather: the other layers):
 *   x86 AVX-512BW : vpmaddwd / AVX-512 VNNI vpdpwssd, 16 int32 lanes, k in pairs
 *   x86 AVX2      : vpmaddwd, 8 int32 lanes, k in pairs
 *   aarch64 NEON  : smlal/smlal2 (int16 x int16 -> int32), 4 lanes per register
 *   armv7 NEON    : vmlal.s16 by lane (the same products and int32 sums), 3 pixels
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
 * keeps within 63 bits (docs/datapath.md section 2), or the same in 32-bit lanes where
 * requant_i32 proves it exact; >> on a negative integer is an arithmetic shift on every
 * compiler this runs on (gcc, clang: documented).
 *
 * Whole networks (chains of conv, linear and global average pool layers) run in one
 * call with buffers and threads set up once: nbq_native_net_* at the end of the file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NBQ_NATIVE_ABI 2

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
#elif defined(__arm__) && defined(__ARM_NEON)
/* 32-bit Arm (armv7-a, e.g. the PYNQ-Z2's Cortex-A9; -mfpu=neon): 16 q registers, not
 * 32, so 3 pixels (12 int32x4 accumulators, 2 weight registers, 1 d register of
 * pixel values); vmlal.s16 by lane, as aarch64's smlal/smlal2 but without the _high
 * forms (aarch64-only). */
#include <arm_neon.h>
#define KU 1
#define LANES 8
#define NV 2
#define P 3
#define ISA "armv7 NEON (vmlal.s16)"
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
 * C[p][0..NB) = sum over ky in [0, nky) and k in [k0, k1) of
 * A[ky * arow + p * lda + k] * B[ky * brow + k * NB][.] for P pixels (nky kernel rows
 * read in place, or nky = 1); B is one panel (NB columns), k0 and k1 multiples of KU.  The SIMD versions name
 * every accumulator (c<pixel><vector>) so that the compiler keeps them all in
 * registers (arrays of vectors get spilled to the stack).
 */
#define REPEAT3(M) M(0) M(1) M(2)
#define REPEAT4(M) REPEAT3(M) M(3)
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
                  int ldc, int nky, size_t arow, size_t brow) {
#define DECL(p) vec c##p##0 = VZERO(), c##p##1 = VZERO();
#define STEP(p)                                                                               \
    {                                                                                         \
        int32_t pair; /* x[k], x[k+1] of pixel p as one 32-bit lane, broadcast */              \
        memcpy(&pair, Ay + (size_t)(p) * lda + k, sizeof pair);                                \
        vec a = VBCAST(pair);                                                                 \
        c##p##0 = VMADD(c##p##0, a, w0);                                                      \
        c##p##1 = VMADD(c##p##1, a, w1);                                                      \
    }
#define STORE(p)                                     \
    VSTORE(C + (size_t)(p) * ldc, c##p##0);          \
    VSTORE(C + (size_t)(p) * ldc + LANES, c##p##1);
    FOR_P(DECL)
    for (int ky = 0; ky < nky; ky++) {
        const int16_t *Ay = A + ky * arow, *By = B + ky * brow;
        for (int k = k0; k < k1; k += 2) {
            const int16_t *b = By + (size_t)k * NB;
            vec w0 = VLOAD(b), w1 = VLOAD(b + 2 * LANES); /* columns 0..LANES-1, LANES..NB-1 */
            FOR_P(STEP)
        }
    }
    FOR_P(STORE)
#undef DECL
#undef STEP
#undef STORE
}
/* micro() for a panel whose real columns all lie in its first LANES (a narrow last
 * panel, e.g. 10 output channels): one vector of columns, half the multiplies. */
#define HAVE_NARROW 1
static void micro_narrow(const int16_t *A, int lda, const int16_t *B, int k0, int k1,
                         int32_t *C, int ldc, int nky, size_t arow, size_t brow) {
#define DECL(p) vec c##p##0 = VZERO();
#define STEP(p)                                                  \
    {                                                            \
        int32_t pair;                                            \
        memcpy(&pair, Ay + (size_t)(p) * lda + k, sizeof pair);   \
        c##p##0 = VMADD(c##p##0, VBCAST(pair), w0);              \
    }
#define STORE(p) VSTORE(C + (size_t)(p) * ldc, c##p##0);
    FOR_P(DECL)
    for (int ky = 0; ky < nky; ky++) {
        const int16_t *Ay = A + ky * arow, *By = B + ky * brow;
        for (int k = k0; k < k1; k += 2) {
            vec w0 = VLOAD(By + (size_t)k * NB);
            FOR_P(STEP)
        }
    }
    FOR_P(STORE)
#undef DECL
#undef STEP
#undef STORE
}
#elif defined(__aarch64__) && defined(__ARM_NEON)
static void micro(const int16_t *A, int lda, const int16_t *B, int k0, int k1, int32_t *C,
                  int ldc, int nky, size_t arow, size_t brow) {
#define DECL(p) int32x4_t c##p##0 = vdupq_n_s32(0), c##p##1 = c##p##0, c##p##2 = c##p##0, \
                          c##p##3 = c##p##0;
#define STEP(p)                                                      \
    {                                                                \
        int16_t a = Ay[(size_t)(p) * lda + k];                        \
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
    for (int ky = 0; ky < nky; ky++) {
        const int16_t *Ay = A + ky * arow, *By = B + ky * brow;
        for (int k = k0; k < k1; k++) {
            const int16_t *b = By + (size_t)k * NB;
            int16x8_t w0 = vld1q_s16(b), w1 = vld1q_s16(b + 8);
            REPEAT6(STEP)
        }
    }
    REPEAT6(STORE)
#undef DECL
#undef STEP
#undef STORE
}
#elif defined(__arm__) && defined(__ARM_NEON)
static void micro(const int16_t *A, int lda, const int16_t *B, int k0, int k1, int32_t *C,
                  int ldc, int nky, size_t arow, size_t brow) {
#define DECL(p) int32x4_t c##p##0 = vdupq_n_s32(0), c##p##1 = c##p##0, c##p##2 = c##p##0, \
                          c##p##3 = c##p##0;
#define LOAD(p) a = vld1_lane_s16(Ay + (size_t)(p) * lda + k, a, p);
#define STEP(p)                                                      \
    c##p##0 = vmlal_lane_s16(c##p##0, vget_low_s16(w0), a, p);       \
    c##p##1 = vmlal_lane_s16(c##p##1, vget_high_s16(w0), a, p);      \
    c##p##2 = vmlal_lane_s16(c##p##2, vget_low_s16(w1), a, p);       \
    c##p##3 = vmlal_lane_s16(c##p##3, vget_high_s16(w1), a, p);
#define STORE(p)                                  \
    vst1q_s32(C + (size_t)(p) * ldc, c##p##0);     \
    vst1q_s32(C + (size_t)(p) * ldc + 4, c##p##1); \
    vst1q_s32(C + (size_t)(p) * ldc + 8, c##p##2); \
    vst1q_s32(C + (size_t)(p) * ldc + 12, c##p##3);
    REPEAT3(DECL)
    for (int ky = 0; ky < nky; ky++) {
        const int16_t *Ay = A + ky * arow, *By = B + ky * brow;
        for (int k = k0; k < k1; k++) {
            const int16_t *b = By + (size_t)k * NB;
            int16x8_t w0 = vld1q_s16(b), w1 = vld1q_s16(b + 8);
            int16x4_t a = vdup_n_s16(0); /* lane p: pixel p's value at k */
            REPEAT3(LOAD)
            REPEAT3(STEP)
        }
    }
    REPEAT3(STORE)
#undef DECL
#undef LOAD
#undef STEP
#undef STORE
}
#else
static void micro(const int16_t *A, int lda, const int16_t *B, int k0, int k1, int32_t *C,
                  int ldc, int nky, size_t arow, size_t brow) {
    int32_t sum[P][NB];
    memset(sum, 0, sizeof sum);
    for (int ky = 0; ky < nky; ky++) {
        const int16_t *Ay = A + ky * arow, *By = B + ky * brow;
        for (int k = k0; k < k1; k++) {
            const int16_t *b = By + (size_t)k * NB;
            for (int p = 0; p < P; p++) {
                int32_t a = Ay[(size_t)p * lda + k];
                for (int j = 0; j < NB; j++) sum[p][j] += a * (int32_t)b[j];
            }
        }
    }
    for (int p = 0; p < P; p++) memcpy(C + (size_t)p * ldc, sum[p], sizeof sum[p]);
}
#endif

#ifndef HAVE_NARROW
#define micro_narrow micro /* no narrow version: the whole panel */
#endif

/* micro() on panel pn of a layer with `cols` columns: the narrow version when the
 * panel's real columns fit in its first LANES. */
static inline void micro_panel(const int16_t *A, int lda, const int16_t *B, int k0, int k1,
                               int32_t *C, int ldc, int nky, size_t arow, size_t brow, int pn,
                               int cols) {
    if (cols - pn * NB <= LANES)
        micro_narrow(A, lda, B, k0, k1, C, ldc, nky, arow, brow);
    else
        micro(A, lda, B, k0, k1, C, ldc, nky, arow, brow);
}

/* Copy n int16: short runs (a few channels) one by one, long runs with memcpy. */
static inline void copy16(int16_t *restrict dst, const int16_t *restrict src, int n) {
    if (n > 32) {
        memcpy(dst, src, sizeof(int16_t) * n);
    } else {
        for (int i = 0; i < n; i++) dst[i] = src[i];
    }
}

static inline void zero16(int16_t *dst, int n) {
    if (n > 32) {
        memset(dst, 0, sizeof(int16_t) * n);
    } else {
        for (int i = 0; i < n; i++) dst[i] = 0;
    }
}

/* Copy the k x k x cin patch of output pixel (oy, ox) into row a (kp int16, zero padded). */
static void gather(const int16_t *x, int h, int w, int cin, int k, int stride, int pad, int oy,
                   int ox, int kp, int16_t *a) {
    int run = k * cin;
    int ix0 = ox * stride - pad, iy0 = oy * stride - pad;
    if (ix0 >= 0 && ix0 + k <= w && iy0 >= 0 && iy0 + k <= h) { /* inside: k plain runs */
        const int16_t *src = x + ((size_t)iy0 * w + ix0) * cin;
        for (int ky = 0; ky < k; ky++) copy16(a + ky * run, src + (size_t)ky * w * cin, run);
        zero16(a + k * run, kp - k * run);
        return;
    }
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

/*
 * The same requantisation of int32 accumulators in 32-bit lanes (twice the lanes of
 * int64), exact when rq_prepare accepts the channels.  With acc = ah 2^16 + al
 * (al in [0, 2^16)) and off = oh 2^16 + ol (ol in [0, 2^16)):
 *   (acc mult + off) >> s = (ah mult + oh + ((al mult + ol) >> 16)) >> (s - 16)
 * (floor division by 2^16, then by 2^(s-16)), and every term fits int32: |al mult + ol|
 * < 2^31 for mult in [-2^15, 2^15), |ah mult| <= 2^30, |(al mult + ol) >> 16| <= 2^15,
 * |oh| < 2^30 - 2^16 (checked).  rq holds, per channel, mult, ol, oh, s - 16.
 */
static void requant_i32(const int32_t *acc, int n, const int32_t *rq, int32_t lo, int16_t *out) {
    const int32_t *m = rq, *ol = rq + n, *oh = rq + 2 * n, *sh = rq + 3 * n;
    for (int c = 0; c < n; c++) {
        int32_t a = acc[c], ah = a >> 16, al = a & 0xFFFF;
        int32_t t = (al * m[c] + ol[c]) >> 16;
        int32_t v = (ah * m[c] + oh[c] + t) >> sh[c];
        v = v < lo ? lo : v;
        out[c] = (int16_t)(v > 32767 ? 32767 : v);
    }
}

/* requant_i32's per-channel table for channels [c0, c1) of L into rq (4 (c1 - c0)
 * int32); 0 when a channel is outside its exact range (requant32 must run instead). */
static int rq_prepare(const int64_t *mult, const int64_t *off, const int64_t *shift, int n,
                      int32_t *rq) {
    for (int c = 0; c < n; c++) {
        int64_t m = mult[c], o = off[c], s = shift[c], oh = o >> 16;
        if (m < -32768 || m > 32767 || s < 16 || s > 47 || oh <= -((int64_t)1 << 30) + (1 << 16) ||
            oh >= ((int64_t)1 << 30) - (1 << 16))
            return 0;
        rq[c] = (int32_t)m, rq[n + c] = (int32_t)(o & 0xFFFF);
        rq[2 * n + c] = (int32_t)oh, rq[3 * n + c] = (int32_t)(s - 16);
    }
    return 1;
}

static void requant64(const int64_t *acc, int cout, const int64_t *mult, const int64_t *off,
                      const int64_t *shift, int64_t lo, int16_t *out) {
    for (int c = 0; c < cout; c++) {
        int64_t v = (acc[c] * mult[c] + off[c]) >> shift[c];
        v = v < lo ? lo : v;
        out[c] = (int16_t)(v > 32767 ? 32767 : v);
    }
}

/* One conv layer's shape and arrays (see nbq_native_conv for their meaning). */
typedef struct {
    int h, w, cin, cout, k, stride, pad, split, kblock, relu, pool;
    int klen, kp, cols, ldc, npan, ohc, owc, oh, ow;
    int direct, wp; /* patches read in place from a padded copy wp pixels wide (conv_direct) */
    int cinp;       /* channels per pixel of that copy: cin, or cin + 1 (a zero channel) */
    const int16_t *packed;
    int16_t *own; /* packed weights repacked for cinp channels (conv_prepare), or NULL */
    const int64_t *mult, *off, *shift;
} conv_t;

/* Per-thread work buffers of conv_part (sizes from conv_scratch_len). */
typedef struct {
    int16_t *A;
    int32_t *C;
    int64_t *acc;
    int16_t *conv;
    int16_t *xp;
    int32_t *rq; /* requant_i32's table */
} scratch_t;
#define SCRATCH 6 /* buffers in scratch_t */

static void conv_init(conv_t *L, int h, int w, int cin, const int16_t *packed, int cout, int k,
                      int stride, int pad, int split, int kblock, const int64_t *mult,
                      const int64_t *off, const int64_t *shift, int relu, int pool) {
    L->h = h, L->w = w, L->cin = cin, L->cout = cout, L->k = k, L->stride = stride;
    L->pad = pad, L->split = split, L->relu = relu, L->pool = pool;
    L->packed = packed, L->mult = mult, L->off = off, L->shift = shift;
    L->klen = k * k * cin, L->kp = round_up(L->klen, KU);
    L->cols = split ? 2 * cout : cout, L->ldc = round_up(L->cols, NB), L->npan = L->ldc / NB;
    L->ohc = (h + 2 * pad - k) / stride + 1, L->owc = (w + 2 * pad - k) / stride + 1;
    L->oh = pool ? L->ohc / 2 : L->ohc, L->ow = pool ? L->owc / 2 : L->owc;
    if (!split || kblock >= L->kp) {
        kblock = L->kp;
    } else {
        kblock -= kblock % KU; /* block edges stay on packed units */
        if (kblock < KU) kblock = KU;
    }
    L->kblock = kblock;
    /* In place (no patch copy) at stride 1 with int32 accumulation, unless the wp - owc
     * extra columns it computes cost more than the copy saves (~0.3 of a tile per
     * panel).  A patch row of k x cin values must be whole packed units: when k cin is
     * odd, the copy gets a zero channel (cinp = cin + 1, weights repacked to match). */
    L->wp = w + 2 * pad;
    L->own = NULL;
    int64_t tiles_direct = ((int64_t)L->ohc * L->wp + P - 1) / P;
    int64_t tiles_gather = ((int64_t)L->ohc * L->owc + P - 1) / P;
    int64_t npan = L->npan;
    L->direct = !split && stride == 1 && 10 * npan * tiles_direct <= tiles_gather * (10 * npan + 3);
    L->cinp = L->direct && (k * cin) % KU ? cin + 1 : cin;
    if (L->cinp != cin) L->kp = round_up(k * k * L->cinp, KU);
}

/* Repack the weights for a zero channel (L->cinp > L->cin): 0, or 1 when out of memory. */
static int conv_prepare(conv_t *L) {
    if (L->cinp == L->cin) return 0;
    int k = L->k, cin = L->cin, cinp = L->cinp, kp0 = round_up(L->klen, KU), kp = L->kp;
    L->own = calloc((size_t)L->npan * NB * kp, sizeof(int16_t));
    if (!L->own) return 1;
    for (int c = 0; c < L->cols; c++) {
        const int16_t *from = L->packed + (size_t)(c / NB) * NB * kp0;
        int16_t *to = L->own + (size_t)(c / NB) * NB * kp;
        for (int kk = 0; kk < k * k; kk++)
            for (int ci = 0; ci < cin; ci++) {
                int a = kk * cin + ci, b = kk * cinp + ci;
                to[(size_t)(b / KU) * NB * KU + (c % NB) * KU + b % KU] =
                    from[(size_t)(a / KU) * NB * KU + (c % NB) * KU + a % KU];
            }
    }
    L->packed = L->own;
    return 0;
}

static void conv_release(conv_t *L) {
    free(L->own);
    L->own = NULL;
}

/* Elements of each scratch buffer conv_part needs for L: A, C, acc, conv, xp. */
static void conv_scratch_len(const conv_t *L, size_t len[SCRATCH]) {
    len[0] = L->direct ? 0 : (size_t)M_CHUNK * L->kp;
    len[1] = (size_t)M_CHUNK * L->ldc;
    len[2] = L->split ? (size_t)M_CHUNK * L->cout : 0;
    len[3] = L->pool ? (size_t)2 * L->oh * L->owc * L->cout : 0;
    len[4] = L->direct ? ((size_t)(L->h + 2 * L->pad) * L->wp + P + L->k) * L->cinp : 0;
    len[5] = (size_t)4 * L->cout;
}

/* Units a layer's output is split along (conv_part's r0, r1): rows after a pool or when
 * read in place, else pixels. */
static int conv_units(const conv_t *L) {
    return L->pool || L->direct ? L->oh : L->oh * L->ow;
}

/* Max-pool conv rows (s->conv, 2 (r1 - r0) rows of owc pixels) into output rows [r0, r1),
 * channels [c0, c1). */
static void pool_rows(const conv_t *L, const int16_t *conv, int16_t *yi, int r0, int r1, int c0,
                      int c1) {
    int cout = L->cout, owc = L->owc;
    for (int py = r0; py < r1; py++)
        for (int px = 0; px < L->ow; px++) {
            const int16_t *q0 = conv + ((size_t)(2 * (py - r0)) * owc + 2 * px) * cout;
            const int16_t *q1 = q0 + (size_t)owc * cout;
            int16_t *out = yi + ((size_t)py * L->ow + px) * cout;
            for (int c = c0; c < c1; c++) {
                int16_t v = q0[c];
                if (q0[cout + c] > v) v = q0[cout + c];
                if (q1[c] > v) v = q1[c];
                if (q1[cout + c] > v) v = q1[cout + c];
                out[c] = v;
            }
        }
}

/*
 * conv_part of a layer read in place (L->direct): the input rows the part needs are
 * copied once into s->xp with their zero padding, wp = w + 2 pad pixels wide; then
 * pixel q of that copy (row q / wp, column q % wp) has its patch row ky at
 * xp + (q + ky wp) cin, k cin values in a row, pixels cin apart: the micro-kernel
 * reads them in place (all k kernel rows in one call).  Columns owc..wp-1 of each
 * row are computed and dropped.
 */
static void conv_direct(const conv_t *L, const int16_t *xi, int16_t *yi, int r0, int r1, int p0,
                        int p1, const scratch_t *s) {
    int cout = L->cout, cin = L->cinp, k = L->k, ldc = L->ldc, owc = L->owc, wp = L->wp;
    int krow = k * cin, pad = L->pad;
    int c0 = p0 * NB, c1 = p1 * NB < cout ? p1 * NB : cout, nc = c1 - c0;
    int cr0 = L->pool ? 2 * r0 : r0, cr1 = L->pool ? 2 * r1 : r1; /* conv rows */
    int rows_in = cr1 - cr0 + k - 1;
    int16_t *xp = s->xp;
    size_t run = (size_t)wp * cin;
    for (int lr = 0; lr < rows_in; lr++) {
        int iy = cr0 - pad + lr;
        int16_t *d = xp + lr * run;
        if (iy < 0 || iy >= L->h) {
            memset(d, 0, sizeof(int16_t) * run);
        } else {
            memset(d, 0, sizeof(int16_t) * pad * cin);
            const int16_t *src = xi + (size_t)iy * L->w * L->cin;
            if (cin == L->cin) {
                memcpy(d + (size_t)pad * cin, src, sizeof(int16_t) * L->w * cin);
            } else { /* the zero channel after each pixel's cin values */
                int16_t *to = d + (size_t)pad * cin;
                for (int x = 0; x < L->w; x++) {
                    for (int ci = 0; ci < L->cin; ci++) to[ci] = src[ci];
                    to[L->cin] = 0;
                    to += cin, src += L->cin;
                }
            }
            memset(d + (size_t)(pad + L->w) * cin, 0, sizeof(int16_t) * (wp - pad - L->w) * cin);
        }
    }
    memset(xp + rows_in * run, 0, sizeof(int16_t) * (size_t)(P + k) * cin); /* tile overrun */
    int ncomp = (cr1 - cr0) * wp;
    int64_t lo = L->relu ? 0 : -32768;
    int in32 = rq_prepare(L->mult + c0, L->off + c0, L->shift + c0, nc, s->rq);
    for (int m0 = 0; m0 < ncomp; m0 += M_CHUNK) {
        int mlen = ncomp - m0 < M_CHUNK ? ncomp - m0 : M_CHUNK;
        int mpad = round_up(mlen, P);
        for (int pn = p0; pn < p1; pn++) {
            const int16_t *panel = L->packed + (size_t)pn * NB * L->kp;
            for (int m = 0; m < mpad; m += P) /* all k kernel rows in one call */
                micro_panel(xp + (size_t)(m0 + m) * cin, cin, panel, 0, krow,
                            s->C + (size_t)m * ldc + pn * NB, ldc, k, (size_t)wp * cin,
                            (size_t)krow * NB, pn, L->cols);
        }
        for (int m = 0; m < mlen; m++) {
            int q = m0 + m, ly = q / wp, ox = q % wp;
            if (ox >= owc) continue;
            int16_t *out = L->pool ? s->conv + ((size_t)ly * owc + ox) * cout + c0
                                   : yi + ((size_t)(cr0 + ly) * owc + ox) * cout + c0;
            if (in32)
                requant_i32(s->C + (size_t)m * ldc + c0, nc, s->rq, (int32_t)lo, out);
            else
                requant32(s->C + (size_t)m * ldc + c0, nc, L->mult + c0, L->off + c0,
                          L->shift + c0, lo, out);
        }
    }
    if (L->pool) pool_rows(L, s->conv, yi, r0, r1, c0, c1);
}

/*
 * Part of one image of conv layer L: output units [r0, r1) (rows after the pool with
 * pool = 2, else output pixels) and output channel panels [p0, p1); xi int16 (h, w,
 * cin), yi int16 (oh, ow, cout).  Panels are NB output channels; a split layer is
 * always run on all its panels.
 */
static void conv_part(const conv_t *L, const int16_t *xi, int16_t *yi, int r0, int r1, int p0,
                      int p1, const scratch_t *s) {
    if (L->direct) {
        conv_direct(L, xi, yi, r0, r1, p0, p1, s);
        return;
    }
    int cout = L->cout, kp = L->kp, ldc = L->ldc, owc = L->owc;
    int c0 = p0 * NB, c1 = p1 * NB < cout ? p1 * NB : cout, nc = c1 - c0;
    if (L->split) p0 = 0, p1 = L->npan, c0 = 0, c1 = cout, nc = cout;
    /* conv pixels [first, first + pixels) */
    int first = L->pool ? 2 * r0 * owc : r0, pixels = L->pool ? 2 * (r1 - r0) * owc : r1 - r0;
    int16_t *dst = L->pool ? s->conv : yi + (size_t)first * cout; /* conv rows, all cout */
    int64_t lo = L->relu ? 0 : -32768;
    int in32 = !L->split && rq_prepare(L->mult + c0, L->off + c0, L->shift + c0, nc, s->rq);
    for (int m0 = 0; m0 < pixels; m0 += M_CHUNK) {
        int mlen = pixels - m0 < M_CHUNK ? pixels - m0 : M_CHUNK;
        int mpad = round_up(mlen, P);
        for (int m = 0; m < mpad; m++) {
            int pix = first + m0 + m;
            if (m < mlen)
                gather(xi, L->h, L->w, L->cin, L->k, L->stride, L->pad, pix / owc, pix % owc, kp,
                       s->A + (size_t)m * kp);
            else
                zero16(s->A + (size_t)m * kp, kp);
        }
        if (L->split) memset(s->acc, 0, sizeof(int64_t) * (size_t)mlen * cout);
        for (int k0 = 0; k0 < kp; k0 += L->kblock) {
            int k1 = k0 + L->kblock < kp ? k0 + L->kblock : kp;
            for (int pn = p0; pn < p1; pn++)
                for (int m = 0; m < mpad; m += P)
                    micro_panel(s->A + (size_t)m * kp, kp, L->packed + (size_t)pn * NB * kp,
                                k0, k1, s->C + (size_t)m * ldc + pn * NB, ldc, 1, 0, 0, pn,
                                L->cols);
            if (L->split)
                for (int m = 0; m < mlen; m++)
                    for (int c = 0; c < cout; c++)
                        s->acc[(size_t)m * cout + c] += 256 * (int64_t)s->C[(size_t)m * ldc + c] +
                                                        s->C[(size_t)m * ldc + cout + c];
        }
        for (int m = 0; m < mlen; m++) {
            int16_t *out = dst + (size_t)(m0 + m) * cout + c0;
            if (L->split)
                requant64(s->acc + (size_t)m * cout, cout, L->mult, L->off, L->shift, lo, out);
            else if (in32)
                requant_i32(s->C + (size_t)m * ldc + c0, nc, s->rq, (int32_t)lo, out);
            else
                requant32(s->C + (size_t)m * ldc + c0, nc, L->mult + c0, L->off + c0,
                          L->shift + c0, lo, out);
        }
    }
    if (L->pool) pool_rows(L, s->conv, yi, r0, r1, c0, c1);
}

static int scratch_alloc(scratch_t *s, const size_t len[SCRATCH]) {
    s->A = malloc(sizeof(int16_t) * (len[0] ? len[0] : 1));
    s->C = malloc(sizeof(int32_t) * (len[1] ? len[1] : 1));
    s->acc = malloc(sizeof(int64_t) * (len[2] ? len[2] : 1));
    s->conv = malloc(sizeof(int16_t) * (len[3] ? len[3] : 1));
    s->xp = malloc(sizeof(int16_t) * (len[4] ? len[4] : 1));
    s->rq = malloc(sizeof(int32_t) * (len[5] ? len[5] : 1));
    return s->A && s->C && s->acc && s->conv && s->xp && s->rq;
}

static void scratch_free(scratch_t *s) {
    free(s->A), free(s->C), free(s->acc), free(s->conv), free(s->xp), free(s->rq);
    s->A = NULL, s->C = NULL, s->acc = NULL, s->conv = NULL, s->xp = NULL, s->rq = NULL;
}

/* 1 when conv_part reads this layer's patches in place (conv_direct), else 0 (for tests). */
int nbq_native_reads_in_place(int h, int w, int cin, int cout, int k, int stride, int pad,
                              int split) {
    conv_t L;
    conv_init(&L, h, w, cin, NULL, cout, k, stride, pad, split, 1 << 30, NULL, NULL, NULL, 0, 0);
    return L.direct;
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
    conv_t L;
    conv_init(&L, h, w, cin, packed, cout, k, stride, pad, split, kblock, mult, off, shift, relu,
              pool);
    size_t len[SCRATCH];
    scratch_t s;
    conv_scratch_len(&L, len);
    if (!scratch_alloc(&s, len) || conv_prepare(&L)) {
        scratch_free(&s);
        conv_release(&L);
        return 1;
    }
    for (int img = 0; img < n; img++)
        conv_part(&L, x + (size_t)img * h * w * cin, y + (size_t)img * L.oh * L.ow * cout, 0,
                  conv_units(&L), 0, L.npan, &s);
    scratch_free(&s);
    conv_release(&L);
    return 0;
}

/* --- a whole network in one call ------------------------------------------------------ */

/*
 * A chain of layers (each reads the previous one's output), run with buffers
 * allocated and threads started once (nbq_native_net_new).  Ops:
 *   NET_CONV: a conv layer as above (a linear layer is a 1x1 conv on a 1x1 map);
 *   NET_GAP:  global average pool, (h, w, c) -> (c): floor((2 S 2^up + D) / (2 D)),
 *             S the sum over h, w, D = h w 2^down, saturated to int16 (ops.global_avg_pool).
 * A call is a list of tasks the threads take in order from a shared counter: first
 * whole images (one task each, on the taking thread's own buffers) while at least T
 * images are left, then for each remaining image (batch 1) every layer in parts
 * (ranges of output rows or pixels, groups of output-channel panels), a part starting
 * once every part of the layer before is done.  No thread waits for another to
 * arrive: a thread the OS has descheduled holds up at most the one part it took.
 * Every output value is computed by the same integer operations either way.
 */
#include <pthread.h>
#include <sched.h>

#define NET_CONV 0
#define NET_GAP 1
#define NET_DESC 16 /* int64 per layer in the descriptor array */
#define NET_PTRS 4  /* pointers per layer: packed, mult, off, shift */
#define SPIN 20000  /* polls before a waiting thread yields or sleeps */
#define OPEN ((uint64_t)1 << 31) /* state: the current call still takes helpers */
#define SOLO 256 /* shared-image calls run by the caller alone after a helper was late */

#if defined(__x86_64__) || defined(__i386__)
#define RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__) || (defined(__arm__) && __ARM_ARCH >= 7)
#define RELAX() __asm__ volatile("yield")
#else
#define RELAX() ((void)0)
#endif

typedef struct {
    int r0, r1, p0, p1; /* conv_part's units and panels */
} part_t;

typedef struct {
    int op, in_len, out_len; /* int16 elements per image */
    conv_t conv;
    int gap_h, gap_w, gap_c, gap_up, gap_down;
    int nparts, first; /* parts of a shared image's layer, index of the first in the image */
    part_t *parts;
} net_layer;

typedef struct net {
    int nl, T, max_len, started, sync, tpi; /* tpi: tasks per shared image */
    net_layer *layers;
    int *task_layer;    /* tpi: the layer of each task of a shared image */
    scratch_t *scratch; /* per thread */
    int16_t **buf;      /* per thread: two activation buffers of max_len */
    int16_t *shared;    /* two activation buffers of max_len for shared images */
    pthread_t *tid;
    /* the current call */
    const int16_t *x;
    int16_t *y;
    int n, whole, total;        /* images, whole-image tasks, all tasks */
    int next, done_whole, done; /* tasks taken, whole images done, shared parts done (atomic) */
    uint64_t state;             /* call number << 32 | OPEN | helpers inside (atomic) */
    int quit;                   /* atomic */
    int late, solo; /* the caller waited past SPIN polls this call; calls left to run alone */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} net;

static void wait_relax(int *spins) {
    if (++*spins > SPIN) sched_yield();
    else RELAX();
}

/* wait_relax for the calling thread t, noting on the network when thread 0 waited long. */
static void wait_relax_t(net *nt, int t, int *spins) {
    wait_relax(spins);
    if (t == 0 && *spins == SPIN + 1) nt->late = 1;
}

static void gap_run(const net_layer *l, const int16_t *x, int16_t *y) {
    int hw = l->gap_h * l->gap_w, c = l->gap_c;
    int64_t den = (int64_t)hw << l->gap_down;
    for (int ch = 0; ch < c; ch++) {
        int64_t sum = 0;
        for (int i = 0; i < hw; i++) sum += x[(size_t)i * c + ch];
        int64_t a = 2 * (sum * ((int64_t)1 << l->gap_up)) + den, b = 2 * den;
        int64_t q = a / b;
        if (a % b != 0 && a < 0) q--; /* floor */
        y[ch] = (int16_t)(q < -32768 ? -32768 : q > 32767 ? 32767 : q);
    }
}

/* Layer l of one image from in to out: part p, or the whole layer (p < 0). */
static void layer_run(const net_layer *l, const int16_t *in, int16_t *out, int p,
                      const scratch_t *s) {
    if (l->op == NET_GAP) {
        gap_run(l, in, out);
    } else if (p < 0) {
        conv_part(&l->conv, in, out, 0, conv_units(&l->conv), 0, l->conv.npan, s);
    } else {
        const part_t *q = &l->parts[p];
        conv_part(&l->conv, in, out, q->r0, q->r1, q->p0, q->p1, s);
    }
}

/* Take and run tasks of the current call until none is left (thread t). */
static void net_tasks(net *nt, int t) {
    int nl = nt->nl, in_len = nt->layers[0].in_len, out_len = nt->layers[nl - 1].out_len;
    for (;;) {
        int g = __atomic_fetch_add(&nt->next, 1, __ATOMIC_ACQ_REL);
        if (g >= nt->total) return;
        if (g < nt->whole) { /* a whole image on this thread's buffers */
            const int16_t *in = nt->x + (size_t)g * in_len;
            for (int i = 0; i < nl; i++) {
                int16_t *out = i == nl - 1 ? nt->y + (size_t)g * out_len
                                           : nt->buf[t] + (size_t)(i & 1) * nt->max_len;
                layer_run(&nt->layers[i], in, out, -1, &nt->scratch[t]);
                in = out;
            }
            __atomic_add_fetch(&nt->done_whole, 1, __ATOMIC_ACQ_REL);
            continue;
        }
        int h = g - nt->whole, j = h / nt->tpi, r = h % nt->tpi, img = nt->whole + j;
        int i = nt->task_layer[r];
        const net_layer *l = &nt->layers[i];
        int need = j * nt->tpi + l->first, spins = 0; /* every part before this layer */
        while (__atomic_load_n(&nt->done, __ATOMIC_ACQUIRE) < need) wait_relax_t(nt, t, &spins);
        const int16_t *in = i == 0 ? nt->x + (size_t)img * in_len
                                   : nt->shared + (size_t)((i - 1) & 1) * nt->max_len;
        int16_t *out = i == nl - 1 ? nt->y + (size_t)img * out_len
                                   : nt->shared + (size_t)(i & 1) * nt->max_len;
        layer_run(l, in, out, r - l->first, &nt->scratch[t]);
        __atomic_add_fetch(&nt->done, 1, __ATOMIC_ACQ_REL);
    }
}

typedef struct {
    net *nt;
    int t;
} worker_arg;

static void *net_worker(void *arg) {
    worker_arg *wa = arg;
    net *nt = wa->nt;
    uint64_t seen = __atomic_load_n(&nt->state, __ATOMIC_ACQUIRE) >> 32;
    for (;;) {
        int spins = 0;
        uint64_t st;
        while ((st = __atomic_load_n(&nt->state, __ATOMIC_ACQUIRE)) >> 32 == seen &&
               !__atomic_load_n(&nt->quit, __ATOMIC_ACQUIRE) && spins++ < SPIN)
            RELAX();
        if (st >> 32 == seen) { /* nothing for a while: sleep until the next call */
            pthread_mutex_lock(&nt->mu);
            while ((st = __atomic_load_n(&nt->state, __ATOMIC_ACQUIRE)) >> 32 == seen &&
                   !__atomic_load_n(&nt->quit, __ATOMIC_ACQUIRE))
                pthread_cond_wait(&nt->cv, &nt->mu);
            pthread_mutex_unlock(&nt->mu);
        }
        if (__atomic_load_n(&nt->quit, __ATOMIC_ACQUIRE)) break;
        if (!(st & OPEN)) { /* that call is over already */
            seen = st >> 32;
            continue;
        }
        if (__atomic_compare_exchange_n(&nt->state, &st, st + 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            seen = st >> 32;
            net_tasks(nt, wa->t);
            __atomic_sub_fetch(&nt->state, 1, __ATOMIC_ACQ_REL);
        }
    }
    free(wa);
    return NULL;
}

/*
 * The parts of a shared image's conv layer for T threads: 2T parts where the layer
 * allows (groups of panels when the panels divide evenly, then ranges of units;
 * pixel ranges on whole micro-tiles), one part for T = 1.  Returns the count.
 */
static int conv_parts(const conv_t *L, int T, part_t *out) {
    int units = conv_units(L), target = 2 * T, pan = L->split ? 1 : L->npan;
    int pg = T == 1 ? 1 : pan % target == 0 ? target : pan % T == 0 ? T : 1;
    int rg = target / pg;
    int tile = L->pool || L->direct ? 1 : P, tiles = (units + tile - 1) / tile;
    if (T == 1 || rg < 1) rg = 1;
    if (rg > tiles) rg = tiles;
    int n = 0;
    for (int a = 0; a < pg; a++)
        for (int b = 0; b < rg; b++) {
            part_t *q = &out[n++];
            q->p0 = pan == 1 ? 0 : (int)((int64_t)L->npan * a / pg);
            q->p1 = pan == 1 ? L->npan : (int)((int64_t)L->npan * (a + 1) / pg);
            q->r0 = (int)((int64_t)tiles * b / rg) * tile;
            q->r1 = b == rg - 1 ? units : (int)((int64_t)tiles * (b + 1) / rg) * tile;
        }
    return n;
}

void nbq_native_net_free(net *nt);

/*
 * A network of nl layers for `threads` threads; NULL when out of memory or a thread
 * cannot be started.  desc: nl x NET_DESC int64, per layer
 *   op, h, w, cin, cout, k, stride, pad, split, kblock, relu, pool, gap_up, gap_down, 0, 0
 * (NET_GAP uses h, w, cin, gap_up, gap_down); ptrs: nl x NET_PTRS (packed, mult, off,
 * shift; NULL for NET_GAP), kept by the caller while the network lives.
 */
net *nbq_native_net_new(int nl, const int64_t *desc, void *const *ptrs, int threads) {
    if (nl < 1 || threads < 1) return NULL;
    net *nt = calloc(1, sizeof(net));
    if (!nt) return NULL;
    nt->nl = nl, nt->T = threads;
    nt->layers = calloc(nl, sizeof(net_layer));
    nt->scratch = calloc(threads, sizeof(scratch_t));
    nt->buf = calloc(threads, sizeof(int16_t *));
    nt->tid = calloc(threads, sizeof(pthread_t));
    if (!nt->layers || !nt->scratch || !nt->buf || !nt->tid) goto fail;
    size_t need[SCRATCH] = {0};
    for (int i = 0; i < nl; i++) {
        const int64_t *d = desc + (size_t)i * NET_DESC;
        net_layer *l = &nt->layers[i];
        l->op = (int)d[0];
        int h = (int)d[1], w = (int)d[2], cin = (int)d[3];
        l->in_len = h * w * cin;
        l->parts = calloc(2 * (size_t)threads, sizeof(part_t));
        if (!l->parts) goto fail;
        l->first = nt->tpi;
        if (l->op == NET_GAP) {
            l->gap_h = h, l->gap_w = w, l->gap_c = cin;
            l->gap_up = (int)d[12], l->gap_down = (int)d[13];
            l->out_len = cin;
            l->nparts = 1;
        } else {
            void *const *p = ptrs + (size_t)i * NET_PTRS;
            conv_t *L = &l->conv;
            conv_init(L, h, w, cin, p[0], (int)d[4], (int)d[5], (int)d[6], (int)d[7], (int)d[8],
                      (int)d[9], p[1], p[2], p[3], (int)d[10], (int)d[11]);
            if (conv_prepare(L)) goto fail;
            l->out_len = L->oh * L->ow * L->cout;
            size_t len[SCRATCH];
            conv_scratch_len(L, len);
            for (int j = 0; j < SCRATCH; j++)
                if (len[j] > need[j]) need[j] = len[j];
            l->nparts = conv_parts(L, threads, l->parts);
        }
        nt->tpi += l->nparts;
        if (l->out_len > nt->max_len) nt->max_len = l->out_len;
    }
    nt->task_layer = malloc(sizeof(int) * (size_t)nt->tpi);
    nt->shared = malloc(sizeof(int16_t) * 2 * (size_t)(nt->max_len ? nt->max_len : 1));
    if (!nt->task_layer || !nt->shared) goto fail;
    for (int i = 0; i < nl; i++)
        for (int p = 0; p < nt->layers[i].nparts; p++) nt->task_layer[nt->layers[i].first + p] = i;
    for (int t = 0; t < threads; t++) {
        if (!scratch_alloc(&nt->scratch[t], need)) goto fail;
        nt->buf[t] = malloc(sizeof(int16_t) * 2 * (size_t)(nt->max_len ? nt->max_len : 1));
        if (!nt->buf[t]) goto fail;
    }
    pthread_mutex_init(&nt->mu, NULL);
    pthread_cond_init(&nt->cv, NULL);
    nt->sync = 1;
    for (int t = 1; t < threads; t++) {
        worker_arg *wa = malloc(sizeof(worker_arg));
        if (!wa) goto fail;
        wa->nt = nt, wa->t = t;
        if (pthread_create(&nt->tid[t], NULL, net_worker, wa)) {
            free(wa);
            goto fail;
        }
        nt->started++;
    }
    return nt;
fail:
    nbq_native_net_free(nt);
    return NULL;
}

/* The int16 elements of one image's input and output. */
int nbq_native_net_in_len(const net *nt) { return nt->layers[0].in_len; }
int nbq_native_net_out_len(const net *nt) { return nt->layers[nt->nl - 1].out_len; }

/*
 * Run n images: x int16 (n, in_len) (the first layer's NHWC input), y int16 (n,
 * out_len).  One call at a time per network (the caller serialises).  Returns 0.
 */
int nbq_native_net_run(net *nt, const int16_t *x, int n, int16_t *y) {
    if (n <= 0) return 0;
    nt->x = x, nt->y = y, nt->n = n;
    nt->whole = n - n % nt->T;
    nt->total = nt->whole + (n - nt->whole) * nt->tpi;
    __atomic_store_n(&nt->next, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&nt->done_whole, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&nt->done, 0, __ATOMIC_RELAXED);
    /* A machine busy with other work deschedules helpers mid-part and the caller waits
     * for them: after such a wait, the next SOLO shared-image calls run on the caller
     * alone (whole images are handed out dynamically and need no such care). */
    int shared_only = nt->whole == 0, helpers = nt->started > 0;
    if (shared_only && nt->solo > 0) {
        nt->solo--;
        helpers = 0;
    }
    if (!helpers) nt->whole = nt->total = n; /* alone: whole layers, no parts */
    nt->late = 0;
    if (helpers) { /* open the call to the helpers and wake the sleeping ones */
        uint64_t call = (__atomic_load_n(&nt->state, __ATOMIC_ACQUIRE) >> 32) + 1;
        __atomic_store_n(&nt->state, call << 32 | OPEN, __ATOMIC_RELEASE);
        pthread_mutex_lock(&nt->mu);
        pthread_cond_broadcast(&nt->cv);
        pthread_mutex_unlock(&nt->mu);
    }
    net_tasks(nt, 0);
    int spins = 0, shared = nt->total - nt->whole;
    while (__atomic_load_n(&nt->done_whole, __ATOMIC_ACQUIRE) < nt->whole ||
           __atomic_load_n(&nt->done, __ATOMIC_ACQUIRE) < shared)
        wait_relax_t(nt, 0, &spins);
    if (helpers) /* close the call once no helper is inside it */
        for (;;) {
            uint64_t st = __atomic_load_n(&nt->state, __ATOMIC_ACQUIRE);
            if ((st & (OPEN - 1)) == 0 &&
                __atomic_compare_exchange_n(&nt->state, &st, st & ~OPEN, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
                break;
            wait_relax_t(nt, 0, &spins);
        }
    if (helpers && shared_only && nt->late) nt->solo = SOLO;
    return 0;
}

/* Stop the threads and free everything (NULL is allowed). */
void nbq_native_net_free(net *nt) {
    if (!nt) return;
    if (nt->sync) {
        pthread_mutex_lock(&nt->mu);
        __atomic_store_n(&nt->quit, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&nt->cv);
        pthread_mutex_unlock(&nt->mu);
        for (int t = 1; t <= nt->started; t++) pthread_join(nt->tid[t], NULL);
        pthread_mutex_destroy(&nt->mu);
        pthread_cond_destroy(&nt->cv);
    }
    if (nt->layers)
        for (int i = 0; i < nt->nl; i++) {
            free(nt->layers[i].parts);
            if (nt->layers[i].op == NET_CONV) conv_release(&nt->layers[i].conv);
        }
    if (nt->scratch)
        for (int t = 0; t < nt->T; t++) scratch_free(&nt->scratch[t]);
    if (nt->buf)
        for (int t = 0; t < nt->T; t++) free(nt->buf[t]);
    free(nt->layers), free(nt->scratch), free(nt->buf), free(nt->tid);
    free(nt->task_layer), free(nt->shared), free(nt);
}
