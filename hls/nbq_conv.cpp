// nbq_conv.cpp - one streaming conv engine reused layer by layer (the paper's Fig. 6-7).
//
// One call runs one tile of one conv layer (docs/datapath.md section 5).  The weight
// load (FLAGS.LOAD) is a plain loop before the feature-map path; the feature-map path
// is a DATAFLOW region of six stages joined by hls::stream FIFOs (depths below), in
// the pattern of hls4ml's streaming conv and FINN's sliding window + MVAU:
//
//   s_in -> read_fm -> px -> window -> wins -> compute -> accs -> requant -> outs
//        -> pool -> pooled -> pack -> s_out            (+ read_fm -> st -> pack)
//
//   read_fm  one 64-bit word (4 int16) per cycle into Pm-channel vectors, one per
//            (pixel, channel group); checks TLAST; its STATUS bits go to pack.
//   window   line buffers (K-1 rows of (column, group) vectors, wide words) and a
//            per-group column history: one 3x3 x Pm window per (padded pixel, group)
//            from static bank indices; zero padding generated here, never sent.
//   compute  the loop flattened over (pixel, output group, input group) at II=1:
//            Pn x Pm arrays of 3x3 PEs, sums sized per level (9 taps, then Pm
//            arrays), an int48 accumulator per output lane; the window of a pixel is
//            kept (one entry per input group) for the other output groups, as FINN's
//            MVAU keeps its input buffer.  Weights: Pn x 9 banks of Pm-code words.
//   requant  (acc * mult + bias + half) >> shift, ReLU, saturate: unrolled over Pn.
//   pool     2x2 max-pool, stride 2, floor mode, through a half-width row buffer.
//   pack     4 int16 per word, one word per cycle, padding lanes dropped; then the
//            status word (STATUS | "NBQS" << 32) with TLAST (protocol 2.x).
//
// Nothing returns early inside the region; bad configurations are refused before it.
// Every call ends with one status word carrying TLAST - probe and refused calls too
// (they write it alone), so a host's armed receive always completes.
// Synthesis notes: every array has a static size, every loop with a run-time bound a
// LOOP_TRIPCOUNT, no heap, no recursion, no STL (tests/test_hls_synth_guards.py).
// Whether Vitis reaches II=1 and 200 MHz is unverified here (no Vitis).
#include "nbq_conv.h"

static_assert(NBQ_MAX_W >= 4, "NBQ_MAX_W: a pooled 3x3 tile needs at least 4 columns");
static_assert(NBQ_MAX_H >= 4, "NBQ_MAX_H: a pooled 3x3 tile needs at least 4 rows");
static_assert(NBQ_MAX_CIN >= 1 && NBQ_MAX_COUT >= 1 && NBQ_PM >= 1 && NBQ_PN >= 1, "sizes");
static_assert(NBQ_PE_KIND == NBQ_PE_SVPE || NBQ_PE_KIND == NBQ_PE_VPE, "NBQ_PE_KIND");
static_assert(NBQ_WORD_BITS == 128 && NBQ_REQ_WORDS == 1, "one requant word a channel");
static_assert(NBQ_CODE_BITS >= 2 && NBQ_CODE_BITS <= 1 + NBQ_CODE_MAG_BITS, "NBQ_CODE_BITS");

// Constants and the stage-to-stage word types live in a named namespace: a stream of
// a type with internal linkage could not be declared in another translation unit.
namespace nbq_kernel {

typedef pe<NBQ_PE_KIND> pe_t;
typedef pe_t::weight_t wgt_t;

const int PM = NBQ_PM;  // input channels per cycle
const int PN = NBQ_PN;  // output channels per cycle
const int TAPS = 9;     // PEs per array (3 x 3; a 1 x 1 layer uses tap 0)
const int MAX_VW = NBQ_MAX_W + 2;             // input columns plus two padding columns
const int MAX_VH = NBQ_MAX_H + 2;             // input rows plus two padding rows
const int MG = (NBQ_MAX_CIN + PM - 1) / PM;   // input-channel groups
const int CG = (NBQ_MAX_COUT + PN - 1) / PN;  // output-channel groups
const int W_BITS = pe_t::LANE_BITS;           // weight bits per packet lane
// A weight vector (Pm lanes of one output channel, tap and input group) takes WV_WORDS
// whole stream words in the weight packet (protocol 3.0: the kernel's own order).
const int WV_WORDS = (PM * W_BITS + NBQ_WORD_BITS - 1) / NBQ_WORD_BITS;
const int ACT_LANES = NBQ_WORD_BITS / NBQ_ACT_BITS;
const int PM_WORDS = (PM + ACT_LANES - 1) / ACT_LANES;  // stream words per full group
const int QUADS = (PN + ACT_LANES - 1) / ACT_LANES;     // output words per output group
const int MAX_PIX = NBQ_MAX_H * NBQ_MAX_W;              // trip-count bounds below
const int MAX_VPIX = MAX_VH * MAX_VW;
// Sums sized per level from the worst case: 9 products of one array, then Pm arrays.
const int PROD_BITS = pe_t::product_t::width;
const int LOG2_PM = PM <= 1 ? 0 : PM <= 2 ? 1 : PM <= 4 ? 2 : PM <= 8 ? 3 : PM <= 16 ? 4
                    : PM <= 32 ? 5 : PM <= 64 ? 6 : PM <= 128 ? 7 : 8;
typedef ap_int<PROD_BITS + 4> array_sum_t;         // 9 products: + ceil(log2 9) bits
typedef ap_int<PROD_BITS + 4 + LOG2_PM> lane_sum_t;  // Pm arrays: + ceil(log2 Pm) bits
static_assert(PM <= 256, "NBQ_PM: at most 256");
static_assert(PROD_BITS + 4 + 8 <= NBQ_ACC_BITS, "lane sums fit the accumulator");

// ---- the words that travel between stages ------------------------------------------
struct vec_t {  // Pm activations of one pixel and channel group (one wide word)
  act_t a[PM];
};
struct win_t {  // a 3x3 window of Pm channels: a[t][m], tap t = 3 * ky + kx
  act_t a[TAPS][PM];  // an array of scalars, no struct of structs (AGGREGATE takes it)
};
struct wvec_t {  // Pm weights of one (output lane, tap, output group, input group)
  wgt_t w[PM];
};
struct accs_t {  // the accumulators of one output group of one pixel
  acc_t v[PN];
};
struct outs_t {  // Pn int16 outputs
  act_t v[PN];
};

}  // namespace nbq_kernel
using namespace nbq_kernel;

namespace {

// Geometry of one call, derived once from the registers (all within the limits).
struct geom_t {
  int h, w, ci, co;       // input tile, channels
  int k;                  // 3 or 1
  int pt, pb, pl, pr;     // zero rows / columns around the tile
  int vh, vw;             // padded input rows / columns
  int rows, cols;         // conv outputs computed (floor-mode pool drops the odd last)
  int oh, ow;             // output (pooled) rows / columns
  int mg, cg;             // input / output channel groups
  bool relu, pool;
};

// ---- requantisation: datapath.requantize for one value ---------------------------
act_t requantize(acc_t acc, mult_t mult, req_t bias, shift_t shift, bool relu) {
#pragma HLS INLINE
  // int48 x int16: |product| <= 2^62, exact in int64 (a plain multiply: ap_int's
  // generic operator would build a 128-bit product in C simulation)
  req_t y = acc.to_int64() * (long long)mult.to_int();
  y += bias;                    // wraps like int64 (the exporter keeps it in range)
  if (shift > 0) y += req_t(1) << (shift - 1);  // round half up
  y >>= shift;                                  // arithmetic shift
  if (relu && y < 0) y = 0;
  if (y > req_t(32767)) return act_t(32767);
  if (y < req_t(-32768)) return act_t(-32768);
  return act_t(y);
}

// ---- packet reading (weights, requant) and writing -----------------------------------
// A packet is a run of items packed little-endian into 64-bit words, the last word
// zero-padded, TLAST on the last word only.
ap_uint<32> tlast_status(bool last, bool final_word) {
#pragma HLS INLINE
  ap_uint<32> st = 0;
  if (last && !final_word) st |= NBQ_STATUS_TLAST_EARLY;
  if (!last && final_word) st |= NBQ_STATUS_TLAST_MISSING;
  return st;
}

// The last word of every call: STATUS in bits 31..0, "NBQS" in bits 63..32, TLAST.
void write_status_word(hls::stream<nbq_word_t>& s, ap_uint<32> st) {
#pragma HLS INLINE
  nbq_word_t beat;
  beat.data = (nbq_data_t(NBQ_STATUS_MAGIC) << 32) | nbq_data_t(st);
  beat.keep = -1;
  beat.strb = -1;
  beat.last = 1;
  s.write(beat);
}

// ---- weight load (FLAGS.LOAD; before the dataflow region, one word per cycle) ---------
// wbuf[n][t][cg * MG + mg].w[m] = weight of output channel cg*PN+n, input channel
// mg*PM+m, tap t.  The packet is in the kernel's order (protocol 3.0): per output
// channel, per input group, per tap (k*k of them), the Pm lanes of one weight vector in
// WV_WORDS whole words (lanes past C_in zero).  One flat loop over the packet's words
// with a computed trip count: each word is shifted into a WV_WORDS-word register and
// the completed vector is written whole - no read-modify-write of a field of wbuf, no
// nested run-time loops to refill.  Lanes past C_out are dropped by pack.
void load_weights(hls::stream<nbq_word_t>& s_in, wvec_t wbuf[PN][TAPS][CG * MG],
                  mult_t rq_mult[PN][CG], req_t rq_bias[PN][CG], shift_t rq_shift[PN][CG],
                  const geom_t g, ap_uint<32>& st) {
  const int taps = g.k * g.k;
  const int words = g.co * g.mg * taps * WV_WORDS;
  ap_uint<WV_WORDS * NBQ_WORD_BITS> vec = 0;  // the vector being assembled, lane 0 lowest
  int part = 0, t = 0, mgi = 0, n = 0, base = 0;  // base = (co / PN) * MG, kept by addition
load_w:
  for (int i = 0; i < words; i++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=NBQ_MAX_COUT*MG*TAPS*WV_WORDS
#pragma HLS PIPELINE II=1
    const nbq_word_t beat = s_in.read();
    st |= tlast_status(beat.last, i == words - 1);
    if (WV_WORDS > 1) vec >>= NBQ_WORD_BITS;  // a compile-time choice
    vec(WV_WORDS * NBQ_WORD_BITS - 1, (WV_WORDS - 1) * NBQ_WORD_BITS) = beat.data;
    if (part == WV_WORDS - 1) {
      wvec_t v;
      for (int m = 0; m < PM; m++) {
#pragma HLS UNROLL
        v.w[m] = pe_t::decode(ap_uint<W_BITS>(vec(W_BITS * m + W_BITS - 1, W_BITS * m)));
      }
      wbuf[n][t][base + mgi] = v;  // a whole word into bank (n, t)
      part = 0;
      t++;
      if (t == taps) {
        t = 0;
        mgi++;
        if (mgi == g.mg) {
          mgi = 0;
          const bool wrap = (n == PN - 1);
          n = wrap ? 0 : n + 1;
          base = wrap ? base + MG : base;
        }
      }
    } else {
      part++;
    }
  }
load_rq:
  for (int co = 0; co < g.co; co++) {  // one word a channel: bias 63..0, mult|shift<<16 above
#pragma HLS LOOP_TRIPCOUNT min=1 max=NBQ_MAX_COUT
#pragma HLS PIPELINE II=1
    const nbq_word_t b = s_in.read();
    st |= tlast_status(b.last, co == g.co - 1);
    rq_bias[co % PN][co / PN] = req_t(b.data(63, 0));
    rq_mult[co % PN][co / PN] = mult_t(b.data(79, 64));
    rq_shift[co % PN][co / PN] = shift_t(b.data(85, 80));
  }
}

// ---- stage 1: feature-map words -> Pm-channel vectors --------------------------------
// Items arrive pixel by pixel, channels innermost, 4 per word, across pixel
// boundaries.  Each iteration takes up to 4 items of the current group from a small
// buffer (refilled with one word when it runs short) and writes them to lanes
// 4kk..4kk+3 of the vector; a group of gc channels takes ceil(gc / 4) iterations.
void read_fm(hls::stream<nbq_word_t>& s_in, hls::stream<vec_t>& px,
             hls::stream<ap_uint<32> >& st_out, const geom_t g) {
  const int last_gc = g.ci - (g.mg - 1) * PM;  // channels of the last group
  const int per_pixel = (g.mg - 1) * PM_WORDS + (last_gc + ACT_LANES - 1) / ACT_LANES;
  const int iters = g.h * g.w * per_pixel;
  const int words = (g.h * g.w * g.ci + ACT_LANES - 1) / ACT_LANES;
  ap_uint<2 * NBQ_WORD_BITS> buf = 0;  // up to 7 items not yet taken
  int nbuf = 0, word_i = 0, grp = 0, kk = 0;
  act_t v[PM_WORDS * ACT_LANES];  // the group being assembled, 4 items per iteration
#pragma HLS ARRAY_PARTITION variable=v complete
  for (int i = 0; i < PM_WORDS * ACT_LANES; i++) {
#pragma HLS UNROLL
    v[i] = 0;
  }
  ap_uint<32> st = NBQ_STATUS_OK;
read_fm_loop:
  for (int it = 0; it < iters; it++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=MAX_PIX*MG*PM_WORDS
#pragma HLS PIPELINE II=1
    const int gc = (grp == g.mg - 1) ? last_gc : PM;
    const int nk = (gc + ACT_LANES - 1) / ACT_LANES;
    const int rest = gc - ACT_LANES * kk;
    const int take = rest < ACT_LANES ? rest : ACT_LANES;
    if (nbuf < take) {
      nbq_word_t beat = s_in.read();
      st |= tlast_status(beat.last, word_i == words - 1);
      buf |= ap_uint<2 * NBQ_WORD_BITS>(beat.data) << (NBQ_ACT_BITS * nbuf);
      nbuf += ACT_LANES;
      word_i++;
    }
    for (int i = 0; i < ACT_LANES; i++) {  // items 4kk..4kk+3 of the group (a write demux)
#pragma HLS UNROLL
      const act_t item = act_t(buf(NBQ_ACT_BITS * i + NBQ_ACT_BITS - 1, NBQ_ACT_BITS * i));
      v[ACT_LANES * kk + i] = (i < take) ? item : act_t(0);
    }
    buf >>= NBQ_ACT_BITS * take;
    nbuf -= take;
    kk++;
    if (kk == nk) {  // the group is complete
      vec_t out;
      for (int m = 0; m < PM; m++) {
#pragma HLS UNROLL
        out.a[m] = (m < gc) ? v[m] : act_t(0);  // static reads; stale lanes masked
      }
      px.write(out);
      kk = 0;
      grp = (grp == g.mg - 1) ? 0 : grp + 1;
    }
  }
  st_out.write(st);
}

// ---- stage 2: line buffers and the sliding window ----------------------------------
// One iteration per (padded row vr, padded column vx, group): the new vector (or a
// padding zero) enters; the column (rows vr-2, vr-1, vr) is read from two line
// buffers and the new vector; the window's two older columns come from the group's
// column history.  Every array is indexed by static bank and run-time address.
void window(hls::stream<vec_t>& px, hls::stream<win_t>& wins, const geom_t g) {
  static vec_t lb0[MAX_VW * MG];  // row vr-2 at (vx, group)
  static vec_t lb1[MAX_VW * MG];  // row vr-1 at (vx, group)
#pragma HLS AGGREGATE variable=lb0
#pragma HLS AGGREGATE variable=lb1
#pragma HLS DEPENDENCE variable=lb0 inter false
#pragma HLS DEPENDENCE variable=lb1 inter false
  // Block RAM, or UltraRAM on a part that has it (NBQ_URAM_LINES: the build's choice,
  // pynq_nbq/kernel/builds.py; counted in perfmodel/kernel.py URAM_SWITCHES).
#if NBQ_URAM_LINES
#pragma HLS BIND_STORAGE variable=lb0 type=ram_2p impl=uram
#pragma HLS BIND_STORAGE variable=lb1 type=ram_2p impl=uram
#else
#pragma HLS BIND_STORAGE variable=lb0 type=ram_2p impl=bram
#pragma HLS BIND_STORAGE variable=lb1 type=ram_2p impl=bram
#endif
  static vec_t hist[2][3][MG];  // [column x-2, x-1][row][group]
#pragma HLS ARRAY_PARTITION variable=hist complete dim=1
#pragma HLS ARRAY_PARTITION variable=hist complete dim=2
#pragma HLS AGGREGATE variable=hist
  // Block RAM, or LUTRAM where the build sets NBQ_LUTRAM_HIST (6 RAMs of MG words: shallow
  // and wide, pynq_nbq/kernel/builds.py; counted in perfmodel/storage.py LUTRAM_SWITCHES).
#if NBQ_LUTRAM_HIST
#pragma HLS BIND_STORAGE variable=hist type=ram_2p impl=lutram latency=1
#else
#pragma HLS BIND_STORAGE variable=hist type=ram_2p impl=bram latency=1
#endif
  // hist[.][.][grp] is read again g.mg iterations after it is written.  With one group
  // (g.mg == 1) that is the next iteration, so then the window's columns come from the
  // registers hreg instead and what the RAM returns is not used: every read of hist
  // whose value is used is >= 2 iterations after the write.  A RAM of read latency 1
  // (either binding: block RAM, or LUTRAM - a synchronous write and a read through its
  // output register): the write of iteration i (cycle 1 of i, after the hist /
  // line-buffer reads it copies) is in the RAM before the read of iteration i + 2 is
  // issued (cycle 2).
#pragma HLS DEPENDENCE variable=hist inter RAW distance=2 true
  vec_t hreg[2][3];  // hist of the one group when g.mg == 1: registers
#pragma HLS ARRAY_PARTITION variable=hreg complete dim=0
  const int iters = g.vh * g.vw * g.mg;
  int vr = 0, vx = 0, grp = 0;
window_loop:
  for (int it = 0; it < iters; it++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=MAX_VPIX*MG
#pragma HLS PIPELINE II=1
    const bool real = vr >= g.pt && vr < g.pt + g.h && vx >= g.pl && vx < g.pl + g.w;
    vec_t zero;
    for (int m = 0; m < PM; m++) {
#pragma HLS UNROLL
      zero.a[m] = 0;
    }
    const vec_t nw = real ? px.read() : zero;
    const int addr = vx * MG + grp;
    vec_t col[3];
    col[0] = lb0[addr];
    col[1] = lb1[addr];
    col[2] = nw;
    lb0[addr] = col[1];
    lb1[addr] = nw;
    win_t win;
    bool emit;
    if (g.k == 3) {
      emit = vr >= 2 && vx >= 2 && vr - 2 < g.rows && vx - 2 < g.cols;
      const bool one = (g.mg == 1);
      for (int ky = 0; ky < 3; ky++) {
#pragma HLS UNROLL
        const vec_t h0 = one ? hreg[0][ky] : hist[0][ky][grp];
        const vec_t h1 = one ? hreg[1][ky] : hist[1][ky][grp];
        for (int m = 0; m < PM; m++) {
#pragma HLS UNROLL
          win.a[3 * ky + 0][m] = h0.a[m];
          win.a[3 * ky + 1][m] = h1.a[m];
          win.a[3 * ky + 2][m] = col[ky].a[m];
        }
        hist[0][ky][grp] = h1;
        hist[1][ky][grp] = col[ky];
        hreg[0][ky] = h1;
        hreg[1][ky] = col[ky];
      }
    } else {  // 1x1: tap 0 is the pixel
      emit = vr < g.rows && vx < g.cols;
      for (int t = 0; t < TAPS; t++) {
#pragma HLS UNROLL
        for (int m = 0; m < PM; m++) {
#pragma HLS UNROLL
          win.a[t][m] = (t == 0) ? nw.a[m] : act_t(0);
        }
      }
    }
    if (emit) wins.write(win);
    grp++;
    if (grp == g.mg) {
      grp = 0;
      vx++;
      if (vx == g.vw) {
        vx = 0;
        vr++;
      }
    }
  }
}

// ---- stage 3: the PE arrays ------------------------------------------------------------
// One iteration per (conv pixel, output group cg, input group mg), II=1: Pn lanes of
// Pm 3x3 arrays.  The pixel's windows come from the stream on the first output group
// and from inbuf on the others.  All array indices in the loop body are static except
// the run-time addresses of wbuf's banks and inbuf.
void compute(hls::stream<win_t>& wins, hls::stream<accs_t>& accs,
             const wvec_t wbuf[PN][TAPS][CG * MG], const geom_t g) {
  static win_t inbuf[MG];
#pragma HLS AGGREGATE variable=inbuf
  // Block RAM, or LUTRAM where the build sets NBQ_LUTRAM_INBUF (MG words of 9 Pm
  // activations: shallow and wide; see hist).
#if NBQ_LUTRAM_INBUF
#pragma HLS BIND_STORAGE variable=inbuf type=ram_2p impl=lutram latency=1
#else
#pragma HLS BIND_STORAGE variable=inbuf type=ram_2p impl=bram latency=1
#endif
  // inbuf[mgi] is written on output group 0 and read on the others, g.mg iterations
  // later.  With one input group that is the next iteration: then the window is the one
  // still held in the register win (not re-read), so every read of inbuf whose value is
  // used is >= 2 iterations after its write.  A RAM of read latency 1 (block RAM or
  // LUTRAM, as for hist): the write of iteration i (the window read from the stream) is
  // in the RAM before the read of iteration i + 2 is issued.  win takes the stream or
  // inbuf (a 2:1 select); the held window (g.mg == 1) is the register's enable, not a
  // third input.
#pragma HLS DEPENDENCE variable=inbuf inter RAW distance=2 true
  acc_t acc[PN];
#pragma HLS ARRAY_PARTITION variable=acc complete
  win_t win;  // the window in use: kept across iterations (the g.mg == 1 bypass)
  const int iters = g.rows * g.cols * g.cg * g.mg;
  int cgi = 0, mgi = 0, cg_base = 0;  // cg_base = cgi * MG, kept by addition
compute_loop:
  for (int it = 0; it < iters; it++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=MAX_PIX*CG*MG
#pragma HLS PIPELINE II=1
    if (cgi == 0) {
      win = wins.read();
      inbuf[mgi] = win;
    } else if (g.mg > 1) {
      win = inbuf[mgi];
    }  // else: one input group, the window read on output group 0 is still in win
    const int addr = cg_base + mgi;  // weight word of (output group, input group)
    accs_t out;
    for (int n = 0; n < PN; n++) {
#pragma HLS UNROLL
      lane_sum_t lane_sum = 0;
      for (int m = 0; m < PM; m++) {
#pragma HLS UNROLL
        array_sum_t array_sum = 0;
        for (int t = 0; t < TAPS; t++) {
#pragma HLS UNROLL
          array_sum += pe_t::product(win.a[t][m], wbuf[n][t][addr].w[m]);
        }
        lane_sum += array_sum;
      }
      acc[n] = (mgi == 0) ? acc_t(lane_sum) : acc_t(acc[n] + lane_sum);
      out.v[n] = acc[n];
    }
    if (mgi == g.mg - 1) accs.write(out);
    mgi++;
    if (mgi == g.mg) {
      mgi = 0;
      const bool wrap = (cgi == g.cg - 1);
      cgi = wrap ? 0 : cgi + 1;
      cg_base = wrap ? 0 : cg_base + MG;
    }
  }
}

// ---- stage 4: requantisation, unrolled over Pn ----------------------------------------
void requant(hls::stream<accs_t>& accs, hls::stream<outs_t>& outs,
             const mult_t rq_mult[PN][CG], const req_t rq_bias[PN][CG],
             const shift_t rq_shift[PN][CG], const geom_t g) {
  const int iters = g.rows * g.cols * g.cg;
  int cgi = 0;
requant_loop:
  for (int it = 0; it < iters; it++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=MAX_PIX*CG
#pragma HLS PIPELINE II=1
    const accs_t a = accs.read();
    outs_t o;
    for (int n = 0; n < PN; n++) {
#pragma HLS UNROLL
      o.v[n] = requantize(a.v[n], rq_mult[n][cgi], rq_bias[n][cgi], rq_shift[n][cgi], g.relu);
    }
    outs.write(o);
    cgi = (cgi == g.cg - 1) ? 0 : cgi + 1;
  }
}

// ---- stage 5: 2x2 max-pool (or pass through) ------------------------------------------
// The horizontal pair of a window is carried: the even column's outputs wait in pend
// (one entry per output group; a register when there is one group) for the odd
// column's.  The pair's max is
// written to the row buffer prow on an even row and read back on the odd row - prow is
// never read and written in the same iteration, and a read finds the write of the row
// before, g.cols * g.cg >= 2 iterations earlier (g.cols >= 2 when pooling).
outs_t max_of(const outs_t a, const outs_t b) {
#pragma HLS INLINE
  outs_t m;
  for (int n = 0; n < PN; n++) {
#pragma HLS UNROLL
    m.v[n] = a.v[n] > b.v[n] ? a.v[n] : b.v[n];
  }
  return m;
}

void pool(hls::stream<outs_t>& outs, hls::stream<outs_t>& pooled, const geom_t g) {
  static outs_t prow[(NBQ_MAX_W / 2) * CG];  // the even row's pair maxima, per window
#pragma HLS AGGREGATE variable=prow
  // Block RAM, or LUTRAM where the build sets NBQ_LUTRAM_PROW ((MAX_W / 2) x CG words:
  // deeper than hist / inbuf, so LUTRAM pays off less; read latency 1 either way).
#if NBQ_LUTRAM_PROW
#pragma HLS BIND_STORAGE variable=prow type=ram_2p impl=lutram latency=1
#else
#pragma HLS BIND_STORAGE variable=prow type=ram_2p impl=bram latency=1
#endif
#pragma HLS DEPENDENCE variable=prow inter RAW distance=2 true
  // pend[cgi]: the even column's outputs of output group cgi, read on the odd column,
  // g.cg iterations later; with one output group that is the next iteration, so then
  // the register even (the last even-column output) is used instead of the RAM.
  static outs_t pend[CG];
#pragma HLS AGGREGATE variable=pend
#pragma HLS BIND_STORAGE variable=pend type=ram_2p impl=lutram
#pragma HLS DEPENDENCE variable=pend inter RAW distance=2 true
  outs_t even;
  const int iters = g.rows * g.cols * g.cg;
  int cr = 0, cx = 0, cgi = 0;
pool_loop:
  for (int it = 0; it < iters; it++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=MAX_PIX*CG
#pragma HLS PIPELINE II=1
    const outs_t o = outs.read();
    if (!g.pool) {
      pooled.write(o);
    } else if (cx % 2 == 0) {
      pend[cgi] = o;
      even = o;
    } else {
      const outs_t pair = max_of(g.cg == 1 ? even : pend[cgi], o);
      const int addr = (cx / 2) * CG + cgi;
      if (cr % 2 == 0) {
        prow[addr] = pair;  // the window's upper half
      } else {
        pooled.write(max_of(prow[addr], pair));  // the 2 x 2 window is complete
      }
    }
    cgi++;
    if (cgi == g.cg) {
      cgi = 0;
      cx++;
      if (cx == g.cols) {
        cx = 0;
        cr++;
      }
    }
  }
}

// ---- stage 6: pack int16 outputs into words ----------------------------------------------
// Four lanes per cycle (ceil(Pn / 4) cycles per output group): the valid lanes of each
// quad (padding lanes of the last group dropped) join a buffer of up to 7 items, and a
// full word leaves whenever 4 are held - one word per cycle, the stream's rate.  The
// last, possibly partial, word is flushed after the loop; then the status word (the
// load's STATUS bits, the reader's, TLAST) closes the packet.
void pack(hls::stream<outs_t>& pooled, hls::stream<ap_uint<32> >& st_in,
          hls::stream<nbq_word_t>& s_out, const ap_uint<32> load_status, ap_uint<32>& status,
          const geom_t g) {
    const int iters = g.oh * g.ow * g.cg * QUADS;
  act_t o[QUADS * ACT_LANES];  // the current output group, shifted down 4 lanes a cycle
#pragma HLS ARRAY_PARTITION variable=o complete
  for (int i = 0; i < QUADS * ACT_LANES; i++) {
#pragma HLS UNROLL
    o[i] = 0;
  }
  ap_uint<2 * NBQ_WORD_BITS> buf = 0;  // items not yet written, lowest first
  int nbuf = 0, q = 0, cgi = 0, lane0 = 0;  // lane0 = cgi * PN + 4 q
pack_loop:
  for (int it = 0; it < iters; it++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=MAX_PIX*CG*((PN+3)/4)
#pragma HLS PIPELINE II=1
    if (q == 0) {
      const outs_t v = pooled.read();
      for (int i = 0; i < QUADS * ACT_LANES; i++) {
#pragma HLS UNROLL
        o[i] = (i < PN) ? v.v[i < PN ? i : 0] : act_t(0);
      }
    }
    const int left = g.co - lane0;                 // output channels from here on
    const int in_group = PN - ACT_LANES * q;       // lanes of this group from here on
    const int lanes = in_group < ACT_LANES ? in_group : ACT_LANES;
    const int valid = left <= 0 ? 0 : left < lanes ? left : lanes;  // a prefix of the quad
    nbq_data_t quad = 0;
    for (int i = 0; i < ACT_LANES; i++) {
#pragma HLS UNROLL
      if (i < valid) quad |= nbq_data_t(ap_uint<NBQ_ACT_BITS>(o[i])) << (NBQ_ACT_BITS * i);
    }
    for (int i = 0; i < QUADS * ACT_LANES - ACT_LANES; i++) {
#pragma HLS UNROLL
      o[i] = o[i + ACT_LANES];
    }
    buf |= ap_uint<2 * NBQ_WORD_BITS>(quad) << (NBQ_ACT_BITS * nbuf);
    nbuf += valid;
    if (nbuf >= ACT_LANES) {
      nbq_word_t beat;
      beat.data = buf(NBQ_WORD_BITS - 1, 0);
      beat.keep = -1;
      beat.strb = -1;
      beat.last = 0;  // TLAST goes on the status word
      s_out.write(beat);
      buf >>= NBQ_WORD_BITS;
      nbuf -= ACT_LANES;
    }
    q++;
    lane0 += ACT_LANES;
    if (q == QUADS) {
      q = 0;
      const bool wrap = (cgi == g.cg - 1);
      cgi = wrap ? 0 : cgi + 1;
      lane0 = wrap ? 0 : lane0 - QUADS * ACT_LANES + PN;
    }
  }
  if (nbuf > 0) {  // the last feature-map word, zero-padded
    nbq_word_t beat;
    beat.data = buf(NBQ_WORD_BITS - 1, 0);
    beat.keep = -1;
    beat.strb = -1;
    beat.last = 0;
    s_out.write(beat);
  }
  status = load_status | st_in.read();
  write_status_word(s_out, status);
}

// ---- the dataflow region ------------------------------------------------------------------
void conv_tile(hls::stream<nbq_word_t>& s_in, hls::stream<nbq_word_t>& s_out,
               const wvec_t wbuf[PN][TAPS][CG * MG], const mult_t rq_mult[PN][CG],
               const req_t rq_bias[PN][CG], const shift_t rq_shift[PN][CG], const geom_t g,
               const ap_uint<32> load_status, ap_uint<32>& status) {
#pragma HLS DATAFLOW
  // FIFO depths: nbq_params.h (NBQ_*_DEPTH, derived there from the stages' bursts).
  hls::stream<vec_t> px("px");
#pragma HLS STREAM variable=px depth=NBQ_PX_DEPTH
#pragma HLS BIND_STORAGE variable=px type=fifo impl=lutram
  hls::stream<win_t> wins("wins");
#pragma HLS STREAM variable=wins depth=NBQ_WINS_DEPTH
#pragma HLS BIND_STORAGE variable=wins type=fifo impl=lutram
  hls::stream<accs_t> accs("accs");
#pragma HLS STREAM variable=accs depth=NBQ_ACCS_DEPTH
  hls::stream<outs_t> outs("outs");
#pragma HLS STREAM variable=outs depth=NBQ_OUTS_DEPTH
  hls::stream<outs_t> pooled("pooled");
#pragma HLS STREAM variable=pooled depth=NBQ_POOLED_DEPTH
  hls::stream<ap_uint<32> > st("st");
#pragma HLS STREAM variable=st depth=2
  read_fm(s_in, px, st, g);
  window(px, wins, g);
  compute(wins, accs, wbuf, g);
  requant(accs, outs, rq_mult, rq_bias, rq_shift, g);
  pool(outs, pooled, g);
  pack(pooled, st, s_out, load_status, status, g);
}

}  // namespace

void nbq_conv(hls::stream<nbq_word_t>& s_in, hls::stream<nbq_word_t>& s_out,
              ap_uint<32> in_h, ap_uint<32> in_w, ap_uint<32> c_in, ap_uint<32> c_out,
              ap_uint<32> flags, ap_uint<32>* status, ap_uint<32>* hw_id,
              ap_uint<32>* hw_version, ap_uint<32>* pe_kind, ap_uint<32>* pm,
              ap_uint<32>* pn, ap_uint<32>* max_h, ap_uint<32>* max_w,
              ap_uint<32>* max_cin, ap_uint<32>* max_cout, ap_uint<32>* acc_bits,
              ap_uint<32>* word_bits, ap_uint<32>* weight_bits) {
#pragma HLS INTERFACE mode=axis port=s_in
#pragma HLS INTERFACE mode=axis port=s_out
#pragma HLS INTERFACE mode=s_axilite port=in_h offset=NBQ_REG_IN_H bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=in_w offset=NBQ_REG_IN_W bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=c_in offset=NBQ_REG_C_IN bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=c_out offset=NBQ_REG_C_OUT bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=flags offset=NBQ_REG_FLAGS bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=status offset=NBQ_REG_STATUS bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=hw_id offset=NBQ_REG_HW_ID bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=hw_version offset=NBQ_REG_HW_VERSION bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=pe_kind offset=NBQ_REG_PE_KIND bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=pm offset=NBQ_REG_PM bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=pn offset=NBQ_REG_PN bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=max_h offset=NBQ_REG_MAX_H bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=max_w offset=NBQ_REG_MAX_W bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=max_cin offset=NBQ_REG_MAX_CIN bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=max_cout offset=NBQ_REG_MAX_COUT bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=acc_bits offset=NBQ_REG_ACC_BITS bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=word_bits offset=NBQ_REG_WORD_BITS bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=weight_bits offset=NBQ_REG_WEIGHT_BITS bundle=ctrl
#pragma HLS INTERFACE mode=s_axilite port=return bundle=ctrl
#pragma HLS INTERFACE mode=ap_ctrl_hs port=return

  // On-chip state.  Weights and requant values persist between calls.
  static wvec_t wbuf[PN][TAPS][CG * MG];  // [lane][tap][out group * MG + in group]
#pragma HLS ARRAY_PARTITION variable=wbuf complete dim=1
#pragma HLS ARRAY_PARTITION variable=wbuf complete dim=2
#pragma HLS AGGREGATE variable=wbuf
  // Pn x 9 banks in block RAM, or UltraRAM (NBQ_URAM_WEIGHTS; see lb0 above).
#if NBQ_URAM_WEIGHTS
#pragma HLS BIND_STORAGE variable=wbuf type=ram_2p impl=uram
#else
#pragma HLS BIND_STORAGE variable=wbuf type=ram_2p impl=bram
#endif
  static mult_t rq_mult[PN][CG];
  static req_t rq_bias[PN][CG];
  static shift_t rq_shift[PN][CG];
#pragma HLS ARRAY_PARTITION variable=rq_mult complete dim=1
#pragma HLS ARRAY_PARTITION variable=rq_bias complete dim=1
#pragma HLS ARRAY_PARTITION variable=rq_shift complete dim=1
  static bool held_valid = false;  // what the held weights were loaded for
  static ap_uint<32> held_cin = 0, held_cout = 0;
  static bool held_k3 = false;

  // Read-only registers: identification and limits, on every call.
  *hw_id = NBQ_ID;
  *hw_version = NBQ_VERSION;
  *pe_kind = NBQ_PE_KIND;
  *pm = PM;
  *pn = PN;
  *max_h = NBQ_MAX_H;
  *max_w = NBQ_MAX_W;
  *max_cin = NBQ_MAX_CIN;
  *max_cout = NBQ_MAX_COUT;
  *acc_bits = NBQ_ACC_BITS;
  *word_bits = NBQ_WORD_BITS;
  *weight_bits = NBQ_WEIGHT_BITS;
  if (flags & NBQ_FLAG_PROBE) {
    *status = NBQ_STATUS_OK;
    write_status_word(s_out, NBQ_STATUS_OK);
    return;
  }

  // ---- check the layer registers ----------------------------------------------------
  const bool k3 = flags & NBQ_FLAG_K3;
  const bool relu = flags & NBQ_FLAG_RELU;
  const bool pool = flags & NBQ_FLAG_POOL;
  const bool load = flags & NBQ_FLAG_LOAD;
  const int pt = (flags & NBQ_FLAG_PAD_TOP) ? 1 : 0;  // zero rows / columns around the tile
  const int pb = (flags & NBQ_FLAG_PAD_BOTTOM) ? 1 : 0;
  const int pl = (flags & NBQ_FLAG_PAD_LEFT) ? 1 : 0;
  const int pr = (flags & NBQ_FLAG_PAD_RIGHT) ? 1 : 0;
  const int K = k3 ? 3 : 1;
  const int need = K + (pool ? 1 : 0);  // smallest padded tile side: one (pooled) output
  const bool regs_ok = in_h >= 1 && in_h <= NBQ_MAX_H && in_w >= 1 && in_w <= NBQ_MAX_W &&
                       c_in >= 1 && c_in <= NBQ_MAX_CIN && c_out >= 1 &&
                       c_out <= NBQ_MAX_COUT && (flags & ~ap_uint<32>(NBQ_FLAG_ALL)) == 0 &&
                       (k3 || pt + pb + pl + pr == 0);
  if (!regs_ok || int(in_h) + pt + pb < need || int(in_w) + pl + pr < need) {
    *status = NBQ_STATUS_BAD_CONFIG;
    write_status_word(s_out, NBQ_STATUS_BAD_CONFIG);
    return;  // no input word is read
  }
  if (!load && !(held_valid && held_cin == c_in && held_cout == c_out && held_k3 == k3)) {
    *status = NBQ_STATUS_NO_WEIGHTS;
    write_status_word(s_out, NBQ_STATUS_NO_WEIGHTS);
    return;
  }

  // ---- geometry of the tile (all within the limits now) --------------------------------
  geom_t g;
  g.h = in_h;
  g.w = in_w;
  g.ci = c_in;
  g.co = c_out;
  g.k = K;
  g.pt = pt;
  g.pb = pb;
  g.pl = pl;
  g.pr = pr;
  g.vh = g.h + pt + pb;
  g.vw = g.w + pl + pr;
  const int ch = g.vh - K + 1;  // conv output rows / columns of the tile
  const int cw = g.vw - K + 1;
  g.oh = pool ? ch / 2 : ch;
  g.ow = pool ? cw / 2 : cw;
  g.rows = pool ? 2 * g.oh : ch;
  g.cols = pool ? 2 * g.ow : cw;
  g.mg = (g.ci + PM - 1) / PM;
  g.cg = (g.co + PN - 1) / PN;
  g.relu = relu;
  g.pool = pool;

  ap_uint<32> st = NBQ_STATUS_OK;
  if (load) {
    load_weights(s_in, wbuf, rq_mult, rq_bias, rq_shift, g, st);
    held_valid = true;
    held_cin = c_in;
    held_cout = c_out;
    held_k3 = k3;
  }
  ap_uint<32> call_status = NBQ_STATUS_OK;
  conv_tile(s_in, s_out, wbuf, rq_mult, rq_bias, rq_shift, g, st, call_status);
  *status = call_status;
}
