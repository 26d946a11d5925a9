/*
 * native_harness.c - runs pynq_nbq/native/nbq_native.c outside Python, for testing a
 * cross-compiled build (aarch64 NEON under qemu-user; tests/test_native.py).
 *
 * usage: native_harness IN OUT          (layers)
 *        native_harness --net IN OUT    (whole networks, nbq_native_net_*)
 * Layers: IN holds layers one after the other, each: 12 int64 (n, h, w, cin, cout, k,
 * stride, pad, relu, pool, split, kblock), then int16 x (n*h*w*cin), int16 weight rows
 * (cols x k*k*cin, cols = cout or 2*cout if split), int64 mult, off, shift (cout
 * each).  OUT gets each layer's int16 output.
 * Networks: IN holds networks one after the other, each: 3 int64 (layers, images,
 * threads), then per layer the 16 int64 descriptor of nbq_native_net_new (kblock as
 * from the caller) and, for a conv layer, int16 weight rows, int64 mult, off, shift;
 * then int16 x (images x the first layer's input).  OUT gets each network's output.
 * Prints the kernel's ISA string.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *nbq_native_isa(void);
long nbq_native_packed_len(int cols, int klen);
void nbq_native_pack(const int16_t *w, int cols, int klen, int16_t *out);
int nbq_native_conv(const int16_t *x, int n, int h, int w, int cin, const int16_t *packed,
                    int cout, int k, int stride, int pad, int split, int kblock,
                    const int64_t *mult, const int64_t *off, const int64_t *shift, int relu,
                    int pool, int16_t *y);

typedef struct net net;
net *nbq_native_net_new(int nl, const int64_t *desc, void *const *ptrs, int threads);
int nbq_native_net_run(net *nt, const int16_t *x, int n, int16_t *y);
void nbq_native_net_free(net *nt);
int nbq_native_net_in_len(const net *nt);
int nbq_native_net_out_len(const net *nt);

static void *read_n(FILE *f, size_t size, size_t n) {
    void *p = malloc(size * (n ? n : 1));
    if (!p || fread(p, size, n, f) != n) {
        fprintf(stderr, "short input\n");
        exit(2);
    }
    return p;
}

static int run_networks(FILE *in, FILE *out) {
    int64_t hd[3];
    while (fread(hd, sizeof(int64_t), 3, in) == 3) {
        int nl = (int)hd[0], n = (int)hd[1], threads = (int)hd[2];
        int64_t *desc = malloc(sizeof(int64_t) * (size_t)nl * 16);
        void **ptrs = calloc((size_t)nl * 4, sizeof(void *));
        for (int i = 0; i < nl; i++) {
            int64_t *d = desc + (size_t)i * 16;
            if (fread(d, sizeof(int64_t), 16, in) != 16) return 2;
            if (d[0] != 0) continue; /* gap: no arrays */
            int cin = (int)d[3], cout = (int)d[4], k = (int)d[5], split = (int)d[8];
            int klen = k * k * cin, cols = split ? 2 * cout : cout;
            int16_t *rows = read_n(in, sizeof(int16_t), (size_t)cols * klen);
            int16_t *packed = malloc(sizeof(int16_t) * nbq_native_packed_len(cols, klen));
            nbq_native_pack(rows, cols, klen, packed);
            free(rows);
            ptrs[4 * i] = packed;
            for (int j = 1; j < 4; j++) ptrs[4 * i + j] = read_n(in, sizeof(int64_t), cout);
        }
        net *nt = nbq_native_net_new(nl, desc, ptrs, threads);
        if (!nt) return 3;
        size_t nin = (size_t)n * nbq_native_net_in_len(nt), nout = (size_t)n * nbq_native_net_out_len(nt);
        int16_t *x = read_n(in, sizeof(int16_t), nin), *y = malloc(sizeof(int16_t) * (nout ? nout : 1));
        for (int rep = 0; rep < 3; rep++) /* the same buffers and threads, called again */
            if (nbq_native_net_run(nt, x, n, y)) return 3;
        fwrite(y, sizeof(int16_t), nout, out);
        nbq_native_net_free(nt);
        for (int i = 0; i < 4 * nl; i++) free(ptrs[i]);
        free(ptrs), free(desc), free(x), free(y);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--net") == 0) {
        FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
        if (!in || !out) return 2;
        int rc = run_networks(in, out);
        fclose(out);
        printf("%s\n", nbq_native_isa());
        return rc;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s [--net] IN OUT\n", argv[0]);
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
