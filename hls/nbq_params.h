// nbq_params.h - compile-time parameters and the register/stream contract of
// the nbq_conv engine (one 3x3/1x1 conv engine reused layer by layer).
//
// Everything a host needs to talk to the kernel is defined here, once:
//   * the PE kind and the array parallelism (Pm input x Pn output channels),
//   * the on-chip buffer limits (largest tile one call can take),
//   * the AXI-Lite register offsets, FLAGS bits and STATUS bits,
//   * the identification values of the read-only registers.
// The Python side (pynq_nbq/streams.py) mirrors the register map, the bits and
// the identification values; tests/test_streams.py parses this file and fails
// if the two drift apart.  docs/datapath.md section 5 is the prose version.
//
// Override any NBQ_* default with -D on the compiler line (run_hls.tcl, the
// csim backend) - e.g. a small-buffer build for tests:
//   -DNBQ_PE_KIND=NBQ_PE_VPE -DNBQ_MAX_W=8 -DNBQ_MAX_COUT=8
// The defaults below are the generic large-buffer build the model sizes for the ZCU102;
// each board's own build (sized for the embedded networks, with its URAM binding) is a
// set of such -D overrides: pynq_nbq/kernel/builds.py, which overlay/Makefile passes.
#ifndef NBQ_PARAMS_H
#define NBQ_PARAMS_H

// ---- identification (read-only registers) ---------------------------------
#define NBQ_ID 0x4E425143u        // "NBQC"
#define NBQ_VERSION_MAJOR 3       // bumped when the protocol changes (2: status word,
                                  // 3: 128-bit words, one requant word per channel)
#define NBQ_VERSION_MINOR 0       // bumped for compatible additions (2.1: WEIGHT_BITS)
#define NBQ_VERSION ((NBQ_VERSION_MAJOR << 16) | NBQ_VERSION_MINOR)

// ---- PE kind ----------------------------------------------------------------
#define NBQ_PE_SVPE 1  // shift PE: n-bit power-of-two codes, SHIFT + ADD
#define NBQ_PE_VPE 2   // multiply PE: int16 weights, 16x16 MUL + ADD
#ifndef NBQ_PE_KIND
#define NBQ_PE_KIND NBQ_PE_SVPE
#endif

// ---- array parallelism (the paper's Pm x Pn arrays of k x k PEs) -------------
// Defaults chosen by the cost model on the RTL twin's yosys report
// (pynq_nbq/perfmodel/kernel.py, choose_build): the most arrays whose design fits 70 %
// of the xczu9eg's LUTs at the pessimistic cost (the larger of two bit-exact PE twins,
// the itemised infrastructure), the vpe build also within the paper's 768 DSPs.
// tests/test_perf_kernel.py fails if these and the model's choice differ.
#define NBQ_VPE_PM 16
#define NBQ_VPE_PN 4
#define NBQ_SVPE3_PM 32  // 3-bit svpe build (NBQ_CODE_BITS 3)
#define NBQ_SVPE3_PN 8
#define NBQ_SVPE5_PM 16  // 5-bit svpe build (NBQ_CODE_BITS 5, the default)
#define NBQ_SVPE5_PN 4
#ifndef NBQ_CODE_BITS
#define NBQ_CODE_BITS 5
#endif
#if NBQ_CODE_BITS > 3
#define NBQ_SVPE_PM NBQ_SVPE5_PM
#define NBQ_SVPE_PN NBQ_SVPE5_PN
#else
#define NBQ_SVPE_PM NBQ_SVPE3_PM
#define NBQ_SVPE_PN NBQ_SVPE3_PN
#endif
#ifndef NBQ_PM
#if NBQ_PE_KIND == NBQ_PE_SVPE
#define NBQ_PM NBQ_SVPE_PM
#else
#define NBQ_PM NBQ_VPE_PM
#endif
#endif
#ifndef NBQ_PN
#if NBQ_PE_KIND == NBQ_PE_SVPE
#define NBQ_PN NBQ_SVPE_PN
#else
#define NBQ_PN NBQ_VPE_PN
#endif
#endif

// ---- buffer limits: the largest tile one call accepts -------------------------
// MAX_W    input tile width in pixels (line buffer: 3 x MAX_W x MAX_CIN int16)
// MAX_CIN  input channels (line buffer, weight buffer); never tiled by the host
// MAX_COUT output channels per call (weight + requant buffers, pool row buffer)
// MAX_H    input tile height (rows stream through the line buffer; this bound
//          is what the loop trip counts promise, not a buffer size)
#ifndef NBQ_MAX_W
#define NBQ_MAX_W 64
#endif
#ifndef NBQ_MAX_CIN
#define NBQ_MAX_CIN 512
#endif
#ifndef NBQ_MAX_COUT
#define NBQ_MAX_COUT 64
#endif
#ifndef NBQ_MAX_H
#define NBQ_MAX_H 1024
#endif

// ---- storage binding: which buffers sit in UltraRAM (4K x 72) instead of block RAM ----
// 0: block RAM (every part); 1: UltraRAM (parts that have it: ZCU104, KV260).  A board's
// build sets them (pynq_nbq/kernel/builds.py, chosen by pynq_nbq/perfmodel/sizing.py).
// NBQ_URAM_LINES    the two line buffers lb0, lb1 (MAX_W + 2) x MG words of Pm activations
// NBQ_URAM_WEIGHTS  the Pn x 9 weight banks wbuf, CG x MG words of Pm codes / weights
#ifndef NBQ_URAM_LINES
#define NBQ_URAM_LINES 0
#endif
#ifndef NBQ_URAM_WEIGHTS
#define NBQ_URAM_WEIGHTS 0
#endif

// ---- storage binding: which small RAMs sit in LUTRAM instead of block RAM ---------------
// 0: block RAM; 1: LUTRAM (every part).  Read latency 1 either way (the pragmas pin it),
// so the dependence distances nbq_conv.cpp declares hold for both bindings.  A board's
// build sets them (pynq_nbq/kernel/builds.py LUTRAM_MACROS, chosen by
// pynq_nbq/perfmodel/sizing.py only where LUTRAM lets more arrays fit).
// NBQ_LUTRAM_HIST   the window's column history hist: 6 RAMs of MG words of Pm activations
// NBQ_LUTRAM_INBUF  the compute stage's window buffer inbuf: MG words of 9 Pm activations
// NBQ_LUTRAM_PROW   the pool's row buffer prow: (MAX_W / 2) x CG words of Pn activations
// (MG = ceil(MAX_CIN / PM), CG = ceil(MAX_COUT / PN): hist and inbuf are shallow and wide)
#ifndef NBQ_LUTRAM_HIST
#define NBQ_LUTRAM_HIST 0
#endif
#ifndef NBQ_LUTRAM_INBUF
#define NBQ_LUTRAM_INBUF 0
#endif
#ifndef NBQ_LUTRAM_PROW
#define NBQ_LUTRAM_PROW 0
#endif

// ---- FIFO depths of the DATAFLOW region (nbq_conv.cpp) ------------------------------
// Derived from the stages' bursts; pynq_nbq/perfmodel/stages.py computes the same
// formulas for the dataflow simulation (tests/test_perf_dataflow.py checks they agree).
// px      the compute stage reads the MG = ceil(MAX_CIN / PM) windows of a pixel in one
//         burst of MG cycles (on output group 0) and none during the (CG - 1) x MG
//         cycles of the other output groups; at the start of every row the window
//         stage takes the row's first K - 1 = 2 pixels (2 MG groups) before it emits a
//         window.  px holds those two pixels' groups (+ 2, a FIFO's ping-pong) so that
//         the reader fetches ahead while compute works through the output groups and
//         the window stage can then feed the next burst at one window a cycle.  With
//         MG + 2 the dataflow simulation loses 4 % on a (32, 8) svpe3 tile of 512
//         channels without padding (tests/test_perf_dataflow.py).
// wins    the window stage emits at most one window a cycle and the compute stage takes
//         it the next: ping-pong (the burst is absorbed by px, where the words are Pm
//         activations, not 9 Pm).
// accs, outs, pooled  one item a cycle at most on both sides: ping-pong.
#define NBQ_PX_DEPTH (2 * ((NBQ_MAX_CIN + NBQ_PM - 1) / NBQ_PM) + 2)
#define NBQ_WINS_DEPTH 2
#define NBQ_ACCS_DEPTH 2
#define NBQ_OUTS_DEPTH 2
#define NBQ_POOLED_DEPTH 2

// ---- datapath widths (docs/datapath.md; pynq_nbq/datapath.py) ----------------
#define NBQ_ACT_BITS 16      // activations: int16
#define NBQ_ACC_BITS 48      // accumulator: datapath.ACC_BITS
#define NBQ_REQ_BITS 64      // acc * mult + bias + half: datapath.REQUANT_BITS
// Stream width and DMA burst: pynq_nbq/kernel/design.py (STREAM_BITS, DMA_BURST_BEATS)
// is the one definition; tests/test_streams.py fails if these differ from it.
#define NBQ_WORD_BITS 128    // AXI-Stream TDATA width (= DMA and HP port width)
#define NBQ_WORD_BYTES 16    // NBQ_WORD_BITS / 8
#define NBQ_ACT_LANES 8      // int16 activations per stream word
#define NBQ_SVPE_LANES 16    // svpe codes per stream word (one byte each)
#define NBQ_VPE_LANES 8      // vpe int16 weights per stream word
#define NBQ_REQ_WORDS 1      // requant words per output channel: bias 63..0, mult|shift<<16 above
#define NBQ_DMA_BURST_BEATS 256  // AXI DMA MM2S/S2MM burst length (words)
#define NBQ_CODE_MAG_BITS 4  // svpe code byte: bit 4 sign, bits 3..0 magnitude m

// ---- svpe build width: NBQ_CODE_BITS (default 5, set above with the parallelism) ----
// A build runs every svpe bundle with n <= NBQ_CODE_BITS; the PE shifts by at most
// 2^(NBQ_CODE_BITS-1) - 2 bits (3: 2, 5: 14), so a 3-bit build's PEs and adders are
// narrower (pynq_nbq/perfmodel/yosys_report.json).  5 runs every bundle.
// WEIGHT_BITS register (protocol 2.1): the widest weight this build runs, so a host
// refuses an n > 3 bundle on a 3-bit build instead of computing with cut codes.
#if NBQ_PE_KIND == NBQ_PE_SVPE
#define NBQ_WEIGHT_BITS NBQ_CODE_BITS
#else
#define NBQ_WEIGHT_BITS 16  // vpe: int16 weights (datapath.VPE_WEIGHT_BITS)
#endif

// ---- AXI-Lite register map (bundle "ctrl", byte offsets) -----------------------
// 0x00..0x0C are Vitis's ap_ctrl_hs block: 0x00 AP_CTRL (bit0 ap_start,
// bit1 ap_done, bit2 ap_idle, bit3 ap_ready), 0x04 GIE, 0x08 IER, 0x0C ISR.
// Every register below is 32 bits wide and sits on an 8-byte boundary: Vitis
// gives each scalar a data word plus a reserved word (inputs) or an ap_vld
// word (outputs).
#define NBQ_REG_AP_CTRL 0x00
#define NBQ_REG_IN_H 0x10       // W: input tile rows carried by the feature-map packet
#define NBQ_REG_IN_W 0x18       // W: input tile columns
#define NBQ_REG_C_IN 0x20       // W: input channels
#define NBQ_REG_C_OUT 0x28      // W: output channels of this call
#define NBQ_REG_FLAGS 0x30      // W: NBQ_FLAG_* bits
#define NBQ_REG_STATUS 0x38     // R: NBQ_STATUS_* bits of the last call (0 = ok)
#define NBQ_REG_HW_ID 0x40      // R: NBQ_ID
#define NBQ_REG_HW_VERSION 0x48 // R: NBQ_VERSION
#define NBQ_REG_PE_KIND 0x50    // R: NBQ_PE_SVPE or NBQ_PE_VPE
#define NBQ_REG_PM 0x58         // R: NBQ_PM
#define NBQ_REG_PN 0x60         // R: NBQ_PN
#define NBQ_REG_MAX_H 0x68      // R: NBQ_MAX_H
#define NBQ_REG_MAX_W 0x70      // R: NBQ_MAX_W
#define NBQ_REG_MAX_CIN 0x78    // R: NBQ_MAX_CIN
#define NBQ_REG_MAX_COUT 0x80   // R: NBQ_MAX_COUT
#define NBQ_REG_ACC_BITS 0x88   // R: NBQ_ACC_BITS
#define NBQ_REG_WORD_BITS 0x90  // R: NBQ_WORD_BITS
#define NBQ_REG_WEIGHT_BITS 0x98  // R: NBQ_WEIGHT_BITS (widest weight this build runs; 2.1)

// ---- FLAGS register bits --------------------------------------------------------
#define NBQ_FLAG_K3 (1u << 0)          // 3x3 kernel (else 1x1)
#define NBQ_FLAG_RELU (1u << 1)        // ReLU after requantisation
#define NBQ_FLAG_POOL (1u << 2)        // fused 2x2 max-pool, stride 2 (floor mode)
#define NBQ_FLAG_LOAD (1u << 3)        // weight + requant packets precede the feature map
#define NBQ_FLAG_PAD_TOP (1u << 4)     // a zero row above the tile (3x3 only)
#define NBQ_FLAG_PAD_BOTTOM (1u << 5)  // a zero row below the tile (3x3 only)
#define NBQ_FLAG_PAD_LEFT (1u << 6)    // a zero column left of the tile (3x3 only)
#define NBQ_FLAG_PAD_RIGHT (1u << 7)   // a zero column right of the tile (3x3 only)
#define NBQ_FLAG_PROBE (1u << 8)       // only write the read-only registers
#define NBQ_FLAG_ALL 0x1FFu

// ---- STATUS register bits -------------------------------------------------------
#define NBQ_STATUS_OK 0u
#define NBQ_STATUS_BAD_CONFIG (1u << 0)   // shape over the limits / bad flags: no stream touched
#define NBQ_STATUS_NO_WEIGHTS (1u << 1)   // no LOAD and the held weights are for another shape
#define NBQ_STATUS_TLAST_EARLY (1u << 2)  // TLAST before the last word of a packet
#define NBQ_STATUS_TLAST_MISSING (1u << 3)  // no TLAST on the last word of a packet

// ---- status word (protocol 2.x and 3.x) ------------------------------------------------
// Every call - PROBE, BAD_CONFIG and NO_WEIGHTS included - ends by writing one
// status word on the output stream with TLAST set: bits 31..0 the call's STATUS
// value, bits 63..32 NBQ_STATUS_MAGIC, the bits above zero.  A normal call's output packet is its
// feature-map words (no TLAST) then the status word; an error or probe call writes
// the status word alone.  The host arms its receive for feature-map words + 1.
#define NBQ_STATUS_MAGIC 0x4E425153u  // "NBQS"
#define NBQ_STATUS_WORDS 1            // words the status word adds to every output packet

#endif  // NBQ_PARAMS_H
