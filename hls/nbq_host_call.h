// nbq_host_call.h - runs one nbq_conv call from raw DMA bytes, the way the
// board's AXI DMA would feed it.  Used by the ctypes bridge (nbq_csim_bridge.cpp)
// and the C++ testbench (tb_nbq_conv.cpp); never synthesised.
//
// The input is the concatenation of the call's packets (NBQ_WORD_BYTES-byte
// little-endian words) plus one TLAST flag per word (1 on the last word of each packet).  The
// output is every word the kernel wrote, with its TLAST flag.
#ifndef NBQ_HOST_CALL_H
#define NBQ_HOST_CALL_H

#include <stdint.h>

#include "nbq_conv.h"

static_assert(NBQ_WORD_BYTES * 8 == NBQ_WORD_BITS, "NBQ_WORD_BYTES");

// Read-only registers in offset order (STATUS .. WORD_BITS).
#define NBQ_N_RO_REGS 13
// Write registers in offset order (IN_H, IN_W, C_IN, C_OUT, FLAGS).
#define NBQ_N_WO_REGS 5

// Return codes of nbq_host_call (protocol faults that hang a real DMA).
#define NBQ_CALL_OK 0
#define NBQ_CALL_OVERREAD 1      // the kernel read past the words given
#define NBQ_CALL_UNDERREAD 2     // the kernel left input words unread
#define NBQ_CALL_OUT_OVERFLOW 3  // the kernel wrote more than out_cap words

// One stream word from / to NBQ_WORD_BYTES little-endian bytes.
static inline nbq_data_t nbq_get_word(const uint8_t* p) {
  nbq_data_t v = 0;
  for (int b = 0; b < NBQ_WORD_BYTES; b++) v(8 * b + 7, 8 * b) = p[b];
  return v;
}

static inline void nbq_put_word(uint8_t* p, const nbq_data_t& v) {
  for (int b = 0; b < NBQ_WORD_BYTES; b++) p[b] = uint8_t(v(8 * b + 7, 8 * b).to_uint());
}

// regs: IN_H, IN_W, C_IN, C_OUT, FLAGS.  in_bytes: NBQ_WORD_BYTES * n_in bytes,
// in_last: n_in flags.  out_bytes: room for NBQ_WORD_BYTES * out_cap bytes, out_last:
// out_cap flags.
// Writes *n_out (words written, even past out_cap) and ro[NBQ_N_RO_REGS].
static inline int nbq_host_call(const uint32_t* regs, const uint8_t* in_bytes,
                                const uint8_t* in_last, uint64_t n_in, uint8_t* out_bytes,
                                uint8_t* out_last, uint64_t out_cap, uint64_t* n_out,
                                uint32_t* ro) {
  hls::stream<nbq_word_t> s_in, s_out;
  for (uint64_t i = 0; i < n_in; i++) {
    nbq_word_t beat;
    beat.data = nbq_get_word(in_bytes + NBQ_WORD_BYTES * i);
    beat.keep = -1;
    beat.strb = -1;
    beat.last = in_last[i] ? 1 : 0;
    s_in.write(beat);
  }
  nbq_word_t guard;  // one extra word: if the kernel eats it, it over-read
  guard.data = 0;
  guard.keep = -1;
  guard.strb = -1;
  guard.last = 1;
  s_in.write(guard);

  ap_uint<32> r[NBQ_N_RO_REGS];
  nbq_conv(s_in, s_out, regs[0], regs[1], regs[2], regs[3], regs[4], &r[0], &r[1], &r[2],
           &r[3], &r[4], &r[5], &r[6], &r[7], &r[8], &r[9], &r[10], &r[11], &r[12]);
  for (int i = 0; i < NBQ_N_RO_REGS; i++) ro[i] = uint32_t(r[i]);

  const uint64_t left = s_in.size();
  while (!s_in.empty()) s_in.read();
  uint64_t n = 0;
  while (!s_out.empty()) {
    nbq_word_t beat = s_out.read();
    if (n < out_cap) {
      nbq_put_word(out_bytes + NBQ_WORD_BYTES * n, beat.data);
      out_last[n] = beat.last ? 1 : 0;
    }
    n++;
  }
  *n_out = n;
  if (left == 0) return NBQ_CALL_OVERREAD;
  if (left > 1) return NBQ_CALL_UNDERREAD;
  if (n > out_cap) return NBQ_CALL_OUT_OVERFLOW;
  return NBQ_CALL_OK;
}

#endif  // NBQ_HOST_CALL_H
