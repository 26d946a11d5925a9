// ap_axi_sdata.h - a small stand-in for Vitis HLS's header of the same name,
// used ONLY for g++ builds outside Vitis (the csim backend, the sanitizer and
// synthesis-guard tests).  Vitis HLS ships its own; run_hls.tcl never puts this
// directory on the include path.
//
// It models what nbq_conv uses of an AXI-Stream beat: TDATA, TKEEP, TSTRB,
// TLAST, and zero-width-safe TUSER/TID/TDEST fields, with the member names of
// Vitis's ap_axiu<WData, WUser, WId, WDest>.
#ifndef NBQ_CSIM_AP_AXI_SDATA_H
#define NBQ_CSIM_AP_AXI_SDATA_H

#ifdef __SYNTHESIS__
#error "hls/csim_include/ap_axi_sdata.h is the g++ stand-in; use Vitis HLS's own header"
#endif

#include <ap_int.h>

template <int WData, int WUser, int WId, int WDest>
struct ap_axiu {
  ap_uint<WData> data;
  ap_uint<(WData + 7) / 8> keep;
  ap_uint<(WData + 7) / 8> strb;
  ap_uint<(WUser > 0) ? WUser : 1> user;  // zero-width sideband: one unused bit
  ap_uint<1> last;
  ap_uint<(WId > 0) ? WId : 1> id;
  ap_uint<(WDest > 0) ? WDest : 1> dest;
};

#endif  // NBQ_CSIM_AP_AXI_SDATA_H
