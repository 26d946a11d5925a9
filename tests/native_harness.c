/*
 * native_harness.c - runs pynq_nbq/native/nbq_native.c outside Python, for testing a
 * cross-compiled build (aarch64 NEON under qemu-user; tests/test_native.py).
 *
 * usage: native_harness IN OUT
 * IN holds layers one after the other, each: 12 int64 (n, h, w, cin, cout, k, stride,
 * pad, relu, pool, split, kblock), then int16 x (n*h*w*cin), int16 weight rows
 * (cols x k*k*cin, cols = cout or 2*cout if split), int64 mult, off, shift (cout
 * each).  OUT gets each layer's int16 output.  Prints the kernel's ISA string.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

const char *nbq_native_isa(void);
long nbq_native_packed_len(int cols, int klen);
void nbq_native_pack(const int16_t *w, int cols, int klen, int16_t *out);
int nbq_native_conv(const int16_t *x, int n, int h, int w, int cin, const int16_t *packed,
                    int cout, int k, int stride, int pad, int split, int kblock,
                    const int64_t *mult, const int64_t *off, const int64_t *shift, int relu,
                    int pool, int16_t *y);

static void *read_n(FILE *f, size_t size, size_t n) {
    void *p = malloc(size * (n ? n : 1));
    if (!p || fread(p, size, n, f) != n) {
        fprintf(stderr, "short input\n");
        exit(2);
    }
    return p;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN OUT\n", argv[0]);
        return 2;
    }
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out) return 2;
    int64_t hd[12];
    while (fread(hd, sizeof(int64_t), 12, in) == 12) {
        int n = hd[0], h = hd[1], w = hd[2], cin = hd[3], cout = hd[4], k = hd[5];
        int stride = hd[6], pad = hd[7], relu = hd[8], pool = hd[9], split = hd[10];
        int kblock = hd[11], klen = k * k * cin, cols = split ? 2 * cout : cout;
        int16_t *x = read_n(in, sizeof(int16_t), (size_t)n * h * w * cin);
        int16_t *rows = read_n(in, sizeof(int16_t), (size_t)cols * klen);
        int64_t *mult = read_n(in, sizeof(int64_t), cout);
        int64_t *off = read_n(in, sizeof(int64_t), cout); /* bias + half */
        int64_t *shift = read_n(in, sizeof(int64_t), cout);
        int16_t *packed = malloc(sizeof(int16_t) * nbq_native_packed_len(cols, klen));
        nbq_native_pack(rows, cols, klen, packed);
        int ohc = (h + 2 * pad - k) / stride + 1, owc = (w + 2 * pad - k) / stride + 1;
        int oh = pool ? ohc / 2 : ohc, ow = pool ? owc / 2 : owc;
        size_t ny = (size_t)n * oh * ow * cout;
        int16_t *y = malloc(sizeof(int16_t) * (ny ? ny : 1));
        if (nbq_native_conv(x, n, h, w, cin, packed, cout, k, stride, pad, split, kblock, mult, off,
                            shift, relu, pool, y))
            return 3;
        fwrite(y, sizeof(int16_t), ny, out);
        free(x), free(rows), free(mult), free(off), free(shift), free(packed), free(y);
    }
    fclose(out);
    printf("%s\n", nbq_native_isa());
    return 0;
}
