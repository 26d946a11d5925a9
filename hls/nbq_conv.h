// nbq_conv.h - the nbq_conv engine: types, the two processing elements and the
// top-level function.  See nbq_params.h for the parameters and the register map,
// docs/datapath.md section 5 for the stream protocol, docs/hls.md for the design.
#ifndef NBQ_CONV_H
#define NBQ_CONV_H

#include <ap_axi_sdata.h>  // Vitis's own; hls/csim_include/ holds the g++ stand-in
#include <ap_int.h>
#include <hls_stream.h>

#include "nbq_params.h"

// One AXI-Stream beat: 64-bit TDATA, TKEEP/TSTRB, TLAST (no TUSER/TID/TDEST).
typedef ap_axiu<NBQ_WORD_BITS, 0, 0, 0> nbq_word_t;
typedef ap_uint<NBQ_WORD_BITS> nbq_data_t;

typedef ap_int<NBQ_ACT_BITS> act_t;  // activation, int16
typedef ap_int<NBQ_ACC_BITS> acc_t;  // accumulator, int48 (datapath.ACC_BITS)
typedef ap_int<NBQ_REQ_BITS> req_t;  // requantisation product, int64
typedef ap_int<16> mult_t;           // requant multiplier
typedef ap_uint<6> shift_t;          // requant right shift, 0..62

// ---- processing elements: product of one activation and one weight -----------
// pe<KIND>::weight_t   the on-chip weight word
// pe<KIND>::LANE_BITS  bits per weight in the weight packet
// pe<KIND>::decode()   packet lane -> weight_t
// pe<KIND>::product()  x * w, exact, in product_t
template <int KIND>
struct pe;

// The PE bodies work on plain integers between typed ports (act_t, weight_t in;
// product_t out): the same hardware as ap_int operators (a 16-bit operand, a
// 0..14 left shift and a conditional negate, or a 16 x 16 multiply), and about
// 5x faster in C simulation, where ap_int's range/shift operators are costly.

// SVPE: a weight is a sign and an (NBQ_CODE_BITS-1)-bit magnitude m (the n-bit code,
// n <= NBQ_CODE_BITS: a 3-bit build runs n <= 3 bundles, a 5-bit build n <= 5);
// m = 0 is zero, m >= 1 means +-2^(m-1): +-x, then a LEFT shift by m-1.  No multiply.
// The packet byte is (sign << 4) | m whatever the build's width (nbq_params.h).
template <>
struct pe<NBQ_PE_SVPE> {
  static const int WEIGHT_BITS = NBQ_CODE_BITS;              // bits of one stored weight
  static const int MAG_BITS = NBQ_CODE_BITS - 1;             // magnitude bits
  static const int MAX_SHIFT = (1 << MAG_BITS) - 2;          // 2 (3-bit), 14 (5-bit)
  typedef ap_uint<WEIGHT_BITS> weight_t;                     // top bit sign, then m
  typedef ap_int<NBQ_ACT_BITS + 1 + MAX_SHIFT> product_t;    // |+-x << MAX_SHIFT| + sign
  static const int LANE_BITS = 8;
  static weight_t decode(ap_uint<LANE_BITS> lane) {
    const unsigned m = lane.to_uint() & ((1u << MAG_BITS) - 1);
    const unsigned sign = (lane.to_uint() >> NBQ_CODE_MAG_BITS) & 1u;
    return weight_t((sign << MAG_BITS) | m);
  }
  static product_t product(act_t x, weight_t w) {
#pragma HLS INLINE
    const unsigned code = w.to_uint();
    const unsigned m = code & ((1u << MAG_BITS) - 1);
    if (m == 0) return 0;                                 // the zero weight: no operation
    const int xn = (code >> MAG_BITS) ? -x.to_int() : x.to_int();  // +-x, 17 bits
    return product_t(int(unsigned(xn) << (m - 1)));       // SHIFT (two's complement)
  }
};

// VPE: a weight is int16; the PE is a 16 x 16-bit multiply (a DSP48E2).
template <>
struct pe<NBQ_PE_VPE> {
  static const int WEIGHT_BITS = 16;
  typedef ap_int<16> weight_t;
  typedef ap_int<32> product_t;
  static const int LANE_BITS = 16;
  static weight_t decode(ap_uint<LANE_BITS> lane) { return weight_t(lane); }
  static product_t product(act_t x, weight_t w) {
#pragma HLS INLINE
    return product_t(x.to_int() * w.to_int());  // |x * w| <= 2^30: no overflow
  }
};

// ---- the top-level function ----------------------------------------------------
// One call runs one tile of one conv layer (docs/datapath.md section 5):
//   s_in   [weight packet, requant packet]  if FLAGS.LOAD, then the feature-map packet
//   s_out  the output feature-map packet
// Scalars are AXI-Lite registers (offsets in nbq_params.h); the pointers are the
// read-only registers, written on every call (a PROBE call writes only them).
void nbq_conv(hls::stream<nbq_word_t>& s_in, hls::stream<nbq_word_t>& s_out,
              ap_uint<32> in_h, ap_uint<32> in_w, ap_uint<32> c_in, ap_uint<32> c_out,
              ap_uint<32> flags, ap_uint<32>* status, ap_uint<32>* hw_id,
              ap_uint<32>* hw_version, ap_uint<32>* pe_kind, ap_uint<32>* pm,
              ap_uint<32>* pn, ap_uint<32>* max_h, ap_uint<32>* max_w,
              ap_uint<32>* max_cin, ap_uint<32>* max_cout, ap_uint<32>* acc_bits,
              ap_uint<32>* word_bits);

#endif  // NBQ_CONV_H
