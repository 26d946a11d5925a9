// nbq_csim_bridge.cpp - the C ABI of the csim shared library, called through
// ctypes by pynq_nbq/backends/csim.py.  Not synthesised.
//
// Build (what the csim backend runs; see docs/hls.md), on one line:
//   g++ -O2 -std=c++14 -shared -fPIC -fvisibility=hidden -Ihls -Ihls/csim_include
//       -isystem <hls4ml>/templates/vivado/ap_types -DNBQ_PE_KIND=...
//       hls/nbq_conv.cpp hls/nbq_csim_bridge.cpp -o libnbq_csim.so
#include "nbq_host_call.h"

#define NBQ_API extern "C" __attribute__((visibility("default")))

// Protocol version of this C ABI (bump when a signature changes).
// 2: stream words of NBQ_WORD_BYTES (16) bytes, not 8.
NBQ_API int nbq_csim_abi_version(void) { return 2; }

// One kernel call; see nbq_host_call() in nbq_host_call.h.
NBQ_API int nbq_csim_call(const uint32_t* regs, const uint8_t* in_bytes, const uint8_t* in_last,
                          uint64_t n_in, uint8_t* out_bytes, uint8_t* out_last,
                          uint64_t out_cap, uint64_t* n_out, uint32_t* ro) {
  return nbq_host_call(regs, in_bytes, in_last, n_in, out_bytes, out_last, out_cap, n_out, ro);
}
