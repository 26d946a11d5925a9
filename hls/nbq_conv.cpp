// nbq_conv.cpp - one conv engine reused layer by layer (the paper's Fig. 6-7).
//
// Dataflow of one call (one tile, docs/datapath.md section 5):
//   1. FLAGS.LOAD: the weight packet fills the weight buffer, the requant packet
//      the per-channel (mult, bias, shift) buffers.  Both stay on chip for the
//      following calls (the host runs every spatial tile of an output-channel
//      group with one load).
//   2. The feature map arrives row by row (pixels in raster order, channels
//      innermost) and fills K line buffers (K = 3 or 1).  Zero padding is not
//      sent: the PAD_* flags make the window read zeros outside the tile.
//   3. Once K rows are held, each output pixel is computed by the PE arrays:
//      Pn arrays (output channels) x Pm arrays (input channels) of K x K PEs,
//      each a SHIFT + ADD (svpe) or a MUL + ADD (vpe), summed into an int48
//      accumulator per output channel over ceil(C_in / Pm) cycles.
//   4. Requantisation (acc * mult + bias + half) >> shift, ReLU, int16
//      saturation, then (FLAGS.POOL) 2x2 max-pool through a half-width row buffer.
//   5. Outputs leave in raster order, channels innermost, 4 per stream word.
//   6. Every call ends with one status word (STATUS | NBQ_STATUS_MAGIC << 32)
//      carrying TLAST - probe and refused calls too, so a host's armed receive
//      always completes (protocol 2.x).
//
// Synthesis notes: every array has a static size, every loop with a run-time
// bound has a LOOP_TRIPCOUNT, no heap, no recursion, no STL
// (tests/test_hls_synth_guards.py checks this).  Throughput pragmas (DATAFLOW
// between the row reader and the array) are left for a run with Vitis HLS.
#include "nbq_conv.h"

static_assert(NBQ_MAX_W >= 4, "NBQ_MAX_W: a pooled 3x3 tile needs at least 4 columns");
static_assert(NBQ_MAX_H >= 4, "NBQ_MAX_H: a pooled 3x3 tile needs at least 4 rows");
static_assert(NBQ_MAX_CIN >= 1 && NBQ_MAX_COUT >= 1 && NBQ_PM >= 1 && NBQ_PN >= 1, "sizes");
static_assert(NBQ_PE_KIND == NBQ_PE_SVPE || NBQ_PE_KIND == NBQ_PE_VPE, "NBQ_PE_KIND");

namespace {

typedef pe<NBQ_PE_KIND> pe_t;
typedef pe_t::weight_t wgt_t;

const int PM = NBQ_PM;  // input channels per cycle
const int PN = NBQ_PN;  // output channels per cycle
const int TAPS = 9;     // PEs per array (3 x 3; a 1 x 1 layer uses tap 0)
const int MAX_W = NBQ_MAX_W;
const int MAX_VH = NBQ_MAX_H + 2;             // input rows plus two padding rows
const int MG = (NBQ_MAX_CIN + PM - 1) / PM;   // input-channel groups
const int CG = (NBQ_MAX_COUT + PN - 1) / PN;  // output-channel groups
const int MAX_CO = CG * PN;                   // output channels incl. padding lanes
const int MAX_CI = MG * PM;                   // input channels incl. padding lanes
const int W_BITS = pe_t::LANE_BITS;
const int ACT_LANES = NBQ_WORD_BITS / NBQ_ACT_BITS;

// ---- packet reader / writer ------------------------------------------------------
// A packet is a run of items (int16 activations, weight lanes, 64-bit words)
// packed little-endian into 64-bit words, the last word zero-padded, TLAST on
// the last word only.  Reading checks TLAST; writing sets it.
struct unpacker {
  nbq_data_t word;
  int lane;   // next lane of `word`
  int index;  // words read so far
  int count;  // words in the packet
};

void unpack_begin(unpacker& u, int items, int lanes) {
#pragma HLS INLINE
  u.word = 0;
  u.lane = 0;
  u.index = 0;
  u.count = (items + lanes - 1) / lanes;
}

template <int BITS>
ap_uint<BITS> unpack_next(hls::stream<nbq_word_t>& s, unpacker& u, ap_uint<32>& st) {
#pragma HLS INLINE
  const int LANES = NBQ_WORD_BITS / BITS;
  if (u.lane == 0) {
    nbq_word_t beat = s.read();
    bool final_word = (u.index == u.count - 1);
    if (beat.last && !final_word) st |= NBQ_STATUS_TLAST_EARLY;
    if (!beat.last && final_word) st |= NBQ_STATUS_TLAST_MISSING;
    u.word = beat.data;
    u.index++;
  }
  ap_uint<BITS> item = u.word(BITS - 1, 0);
  if (LANES > 1) u.word >>= BITS;
  if (u.lane == LANES - 1) {
    u.lane = 0;
  } else {
    u.lane++;
  }
  return item;
}

struct packer {
  nbq_data_t word;
  int lane;
  int item;   // items written so far
  int items;  // items in the packet
};

void pack_begin(packer& p, int items) {
#pragma HLS INLINE
  p.word = 0;
  p.lane = 0;
  p.item = 0;
  p.items = items;
}

void pack_next(hls::stream<nbq_word_t>& s, packer& p, act_t v) {
#pragma HLS INLINE
  nbq_data_t lane_bits = ap_uint<NBQ_ACT_BITS>(v);
  p.word |= lane_bits << (NBQ_ACT_BITS * p.lane);
  bool final_item = (p.item == p.items - 1);
  if (p.lane == ACT_LANES - 1 || final_item) {
    nbq_word_t beat;
    beat.data = p.word;
    beat.keep = -1;
    beat.strb = -1;
    beat.last = 0;  // TLAST goes on the status word that follows
    s.write(beat);
    p.word = 0;
    p.lane = 0;
  } else {
    p.lane++;
  }
  p.item++;
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

}  // namespace

void nbq_conv(hls::stream<nbq_word_t>& s_in, hls::stream<nbq_word_t>& s_out,
              ap_uint<32> in_h, ap_uint<32> in_w, ap_uint<32> c_in, ap_uint<32> c_out,
              ap_uint<32> flags, ap_uint<32>* status, ap_uint<32>* hw_id,
              ap_uint<32>* hw_version, ap_uint<32>* pe_kind, ap_uint<32>* pm,
              ap_uint<32>* pn, ap_uint<32>* max_h, ap_uint<32>* max_w,
              ap_uint<32>* max_cin, ap_uint<32>* max_cout, ap_uint<32>* acc_bits,
              ap_uint<32>* word_bits) {
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
#pragma HLS INTERFACE mode=s_axilite port=return bundle=ctrl
#pragma HLS INTERFACE mode=ap_ctrl_hs port=return

  // On-chip state.  Weights and requant values persist between calls.
  static wgt_t wbuf[CG][MG][PN][PM][TAPS];  // [out group][in group][pn][pm][tap]
#pragma HLS ARRAY_PARTITION variable=wbuf complete dim=3
#pragma HLS ARRAY_PARTITION variable=wbuf complete dim=4
#pragma HLS ARRAY_PARTITION variable=wbuf complete dim=5
  static mult_t rq_mult[CG][PN];
  static req_t rq_bias[CG][PN];
  static shift_t rq_shift[CG][PN];
#pragma HLS ARRAY_PARTITION variable=rq_mult complete dim=2
#pragma HLS ARRAY_PARTITION variable=rq_bias complete dim=2
#pragma HLS ARRAY_PARTITION variable=rq_shift complete dim=2
  static act_t line[3][MAX_W][MG][PM];  // K line buffers, one input row each
#pragma HLS ARRAY_PARTITION variable=line complete dim=1
#pragma HLS ARRAY_PARTITION variable=line cyclic factor=3 dim=2
#pragma HLS ARRAY_PARTITION variable=line complete dim=4
  static act_t pool_row[MAX_W / 2][CG][PN];  // max of the even conv row, per pair
#pragma HLS ARRAY_PARTITION variable=pool_row complete dim=3
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
  const int h = in_h, w = in_w, ci_n = c_in, co_n = c_out;
  const int vh = h + pt + pb;  // padded ("virtual") input rows / columns
  const int vw = w + pl + pr;
  const int ch = vh - K + 1;  // conv output rows / columns of the tile
  const int cw = vw - K + 1;
  const int oh = pool ? ch / 2 : ch;  // output (pooled) rows / columns
  const int ow = pool ? cw / 2 : cw;
  const int rows_n = pool ? 2 * oh : ch;  // conv rows / columns computed (floor-mode pool)
  const int cols_n = pool ? 2 * ow : cw;
  const int mg_n = (ci_n + PM - 1) / PM;  // input-channel groups
  const int cg_n = (co_n + PN - 1) / PN;  // output-channel groups
  const int taps = K * K;
  ap_uint<32> st = NBQ_STATUS_OK;

  // ---- 1. weight and requant packets ----------------------------------------------
  if (load) {
    unpacker u;
    unpack_begin(u, co_n * ci_n * taps, NBQ_WORD_BITS / W_BITS);
  load_co:
    for (int co = 0; co < cg_n * PN; co++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=MAX_CO
    load_ci:
      for (int ci = 0; ci < mg_n * PM; ci++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=MAX_CI
      load_tap:
        for (int t = 0; t < taps; t++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=TAPS
#pragma HLS PIPELINE II=1
          wgt_t wt = 0;  // padding lanes (co >= C_out, ci >= C_in) hold zero weights
          if (co < co_n && ci < ci_n) wt = pe_t::decode(unpack_next<W_BITS>(s_in, u, st));
          wbuf[co / PN][ci / PM][co % PN][ci % PM][t] = wt;
        }
      }
    }
    unpacker q;
    unpack_begin(q, 2 * co_n, 1);
  load_rq:
    for (int co = 0; co < co_n; co++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=NBQ_MAX_COUT
#pragma HLS PIPELINE II=2
      const nbq_data_t w0 = unpack_next<NBQ_WORD_BITS>(s_in, q, st);  // bias, int64
      const nbq_data_t w1 = unpack_next<NBQ_WORD_BITS>(s_in, q, st);  // mult | shift << 16
      rq_bias[co / PN][co % PN] = req_t(w0);
      rq_mult[co / PN][co % PN] = mult_t(w1(15, 0));
      rq_shift[co / PN][co % PN] = shift_t(w1(21, 16));
    }
    held_valid = true;
    held_cin = c_in;
    held_cout = c_out;
    held_k3 = k3;
  }

  // ---- 2.-5. feature map in, conv rows out -------------------------------------------
  unpacker fm;
  unpack_begin(fm, h * w * ci_n, ACT_LANES);
  packer out;
  pack_begin(out, oh * ow * co_n);
  bool pad_row[3] = {false, false, false};  // line slot holds a zero-padding row
#pragma HLS ARRAY_PARTITION variable=pad_row complete
  int next_slot = 0;  // line buffers rotate: row vr lives in slot vr mod K

rows:
  for (int vr = 0; vr < vh; vr++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=MAX_VH
    const int slot = next_slot;
    next_slot = (k3 && next_slot < 2) ? next_slot + 1 : 0;
    const bool real_row = vr >= pt && vr < pt + h;
    pad_row[slot] = !real_row;
    if (real_row) {
    read_x:
      for (int x = 0; x < w; x++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=NBQ_MAX_W
      read_c:
        for (int c = 0; c < ci_n; c++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=NBQ_MAX_CIN
#pragma HLS PIPELINE II=1
          line[slot][x][c / PM][c % PM] = act_t(unpack_next<NBQ_ACT_BITS>(s_in, fm, st));
        }
      }
    }
    if (vr < K - 1) continue;       // the window is not full yet
    const int cr = vr - (K - 1);    // conv output row
    if (cr >= rows_n) continue;     // floor-mode pool: the odd last row is dropped
    int row_slot[3];  // line slot of window row ky: the oldest row first
#pragma HLS ARRAY_PARTITION variable=row_slot complete
    for (int ky = 0; ky < 3; ky++) {
#pragma HLS UNROLL
      row_slot[ky] = k3 ? (slot + 1 + ky) % 3 : 0;
    }

  cols:
    for (int cx = 0; cx < cols_n; cx++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=NBQ_MAX_W
    out_groups:
      for (int cg = 0; cg < cg_n; cg++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=CG
        acc_t acc[PN];
#pragma HLS ARRAY_PARTITION variable=acc complete
        for (int n = 0; n < PN; n++) {
#pragma HLS UNROLL
          acc[n] = 0;
        }
      in_groups:
        for (int mg = 0; mg < mg_n; mg++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=MG
#pragma HLS PIPELINE II=1
          // the K x K window of Pm input channels, zero outside the tile
          act_t win[TAPS][PM];
#pragma HLS ARRAY_PARTITION variable=win complete dim=0
          for (int t = 0; t < TAPS; t++) {
#pragma HLS UNROLL
            const int ky = t / 3, kx = t % 3;
            const int x = cx + kx - pl;  // input column of this tap
            const bool inside = t < taps && !pad_row[row_slot[ky]] && x >= 0 && x < w;
            for (int m = 0; m < PM; m++) {
#pragma HLS UNROLL
              win[t][m] = inside ? line[row_slot[ky]][inside ? x : 0][mg][m] : act_t(0);
            }
          }
          // Pn x Pm arrays of K x K PEs, then the adder tree into the accumulators
          for (int n = 0; n < PN; n++) {
#pragma HLS UNROLL
            acc_t sum = 0;
            for (int m = 0; m < PM; m++) {
#pragma HLS UNROLL
              for (int t = 0; t < TAPS; t++) {
#pragma HLS UNROLL
                sum += pe_t::product(win[t][m], wbuf[cg][mg][n][m][t]);
              }
            }
            acc[n] += sum;
          }
        }
      requant:
        for (int n = 0; n < PN; n++) {
#pragma HLS PIPELINE II=1
          if (cg * PN + n >= co_n) continue;  // padding lanes of the last group
          const act_t y =
              requantize(acc[n], rq_mult[cg][n], rq_bias[cg][n], rq_shift[cg][n], relu);
          if (!pool) {
            pack_next(s_out, out, y);
          } else {
            const act_t held = pool_row[cx / 2][cg][n];
            const bool first = (cr % 2 == 0) && (cx % 2 == 0);
            const act_t m = (first || y > held) ? y : held;
            if (cr % 2 == 1 && cx % 2 == 1) {
              pack_next(s_out, out, m);  // the 2 x 2 window is complete
            } else {
              pool_row[cx / 2][cg][n] = m;
            }
          }
        }
      }
    }
  }
  *status = st;
  write_status_word(s_out, st);
}
