/*
 * peak_int16.c - this CPU's int16 multiply-accumulate peak, measured (scripts/bench_peers.py).
 *
 * usage: peak_int16 THREADS SECONDS
 * Each thread runs CHAINS independent accumulator chains of the widest int16 dot-product
 * instruction this build has: AVX-512 VNNI vpdpwssd (32 int16 products per instruction),
 * else AVX-512BW vpmaddwd + vpaddd (32), else AVX2 vpmaddwd + vpaddd (16).  Independent
 * chains hide the instruction latency, so the loop runs at the issue rate: the ceiling no
 * int16 kernel on this machine can pass.  Prints one line:
 *   <instruction> <threads> <G multiply-accumulates per second, all threads>
 * Built at run time with the machine's compiler (-O2 -march=native -pthread).
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHAINS 12
#define INNER 1000 /* iterations between clock reads */

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define NAME "vpdpwssd-zmm"
#define MACS 32
typedef __m512i vec;
#define SET1(v) _mm512_set1_epi16(v)
#define STEP(c, a, b) c = _mm512_dpwssd_epi32(c, a, b)
#define FOLD(s, c) s = _mm512_add_epi32(s, c)
#define LANE0(s) _mm_cvtsi128_si32(_mm512_castsi512_si128(s))
#elif defined(__AVX512BW__)
#define NAME "vpmaddwd-zmm"
#define MACS 32
typedef __m512i vec;
#define SET1(v) _mm512_set1_epi16(v)
#define STEP(c, a, b) c = _mm512_add_epi32(c, _mm512_madd_epi16(a, b))
#define FOLD(s, c) s = _mm512_add_epi32(s, c)
#define LANE0(s) _mm_cvtsi128_si32(_mm512_castsi512_si128(s))
#elif defined(__AVX2__)
#define NAME "vpmaddwd-ymm"
#define MACS 16
typedef __m256i vec;
#define SET1(v) _mm256_set1_epi16(v)
#define STEP(c, a, b) c = _mm256_add_epi32(c, _mm256_madd_epi16(a, b))
#define FOLD(s, c) s = _mm256_add_epi32(s, c)
#define LANE0(s) _mm_cvtsi128_si32(_mm256_castsi256_si128(s))
#else
#error "peak_int16 needs AVX2 or AVX-512"
#endif

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

typedef struct {
    double seconds, macs;
    int sink;
} job;

static void *run(void *arg) {
    job *j = arg;
    vec a = SET1(3), b = SET1(5);
    /* named accumulators: an array of vectors may be kept in memory */
    vec c0 = SET1(0), c1 = SET1(1), c2 = SET1(2), c3 = SET1(3), c4 = SET1(4), c5 = SET1(5);
    vec c6 = SET1(6), c7 = SET1(7), c8 = SET1(8), c9 = SET1(9), c10 = SET1(10), c11 = SET1(11);
    double t0 = seconds_now(), t;
    long iters = 0;
    do {
        for (int r = 0; r < INNER; r++) {
            STEP(c0, a, b); STEP(c1, a, b); STEP(c2, a, b); STEP(c3, a, b);
            STEP(c4, a, b); STEP(c5, a, b); STEP(c6, a, b); STEP(c7, a, b);
            STEP(c8, a, b); STEP(c9, a, b); STEP(c10, a, b); STEP(c11, a, b);
        }
        iters += INNER;
        t = seconds_now();
    } while (t - t0 < j->seconds);
    FOLD(c0, c1); FOLD(c0, c2); FOLD(c0, c3); FOLD(c0, c4); FOLD(c0, c5);
    FOLD(c0, c6); FOLD(c0, c7); FOLD(c0, c8); FOLD(c0, c9); FOLD(c0, c10); FOLD(c0, c11);
    j->sink = LANE0(c0);
    j->macs = (double)iters * CHAINS * MACS / (t - t0);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    double secs = argc > 2 ? atof(argv[2]) : 0.3;
    if (threads < 1 || threads > 256) return 2;
    pthread_t tid[256];
    job jobs[256];
    for (int i = 0; i < threads; i++) {
        jobs[i].seconds = secs;
        if (pthread_create(&tid[i], NULL, run, &jobs[i])) return 3;
    }
    double total = 0;
    int sink = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        total += jobs[i].macs;
        sink ^= jobs[i].sink;
    }
    printf("%s %d %.3f %d\n", NAME, threads, total / 1e9, sink & 1);
    return 0;
}
