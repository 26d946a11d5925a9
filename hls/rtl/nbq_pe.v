// nbq_pe.v - the RTL twin of the kernel's processing elements (hls/nbq_conv.h).
//
// Written to measure what the arithmetic costs with open tools (yosys) and to be
// simulated bit-exact against pynq_nbq/datapath.py (tests/test_rtl_twin.py).  It is
// not the HLS kernel's netlist: it is the same arithmetic at the same widths.
//
// nbq_svpe_pe  shift PE: an NB-bit code {sign, (NB-1)-bit magnitude m}; m = 0 is the
//              zero weight, m >= 1 means +-2^(m-1): x << (m-1), negated on sign.
//              No multiply.  A build with code width NB runs every bundle with
//              n <= NB (n = 1 codes are +-1, i.e. m = 1).
// nbq_vpe_pe   multiply PE: int16 x int16 -> int32 (a DSP48E2 on UltraScale+).
// nbq_products NP PEs of one kind side by side, products registered (1 cycle).
//
// STYLE selects one of two structurally different, bit-exact ways to write the same
// arithmetic (the cost of a PE depends on how the Verilog is written; the model takes
// the larger, pynq_nbq/perfmodel/costs.py):
//   0  negate the 17-bit input, then shift; products registered (the shipped twin)
//   1  shift the sign-extended input, then negate the PW-bit result; products NOT
//      registered (they feed the adder tree directly)
//
// Widths: x int16; svpe product PW = 17 + SMAX bits with SMAX = 2^(NB-1) - 2 the
// largest shift (|x << SMAX| <= 2^(15+SMAX), one more bit for the negation of
// -32768); vpe product 32 bits (|x*w| <= 2^30).
`default_nettype none

module nbq_svpe_pe (x, code, p);
  parameter NB = 3;                       // code width (2..5)
  parameter STYLE = 0;                    // 0 negate then shift, 1 shift then negate
  localparam MB = NB - 1;                 // magnitude bits
  localparam SMAX = (1 << MB) - 2;        // largest left shift
  localparam PW = 17 + SMAX;              // product width
  input wire signed [15:0] x;
  input wire [NB-1:0] code;               // code[NB-1] sign, code[MB-1:0] magnitude m
  output wire signed [PW-1:0] p;

  wire [MB-1:0] m = code[MB-1:0];
  wire neg = code[NB-1];
  wire [MB-1:0] s = m - 1'b1;             // shift amount when m >= 1
  generate
    if (STYLE == 0) begin : g_neg_first
      wire signed [16:0] xn = neg ? -$signed({x[15], x}) : $signed({x[15], x});  // +-x
      wire signed [PW-1:0] xs = xn;       // sign-extended
      assign p = (m == 0) ? {PW{1'b0}} : (xs <<< s);  // SHIFT
    end else begin : g_shift_first
      wire signed [PW-1:0] xs = $signed(x);  // sign-extended
      wire signed [PW-1:0] sh = xs <<< s;    // SHIFT: |x << s| < 2^(PW-1), exact
      assign p = (m == 0) ? {PW{1'b0}} : (neg ? -sh : sh);  // then the PW-bit negate
    end
  endgenerate
endmodule

module nbq_vpe_pe (x, w, p);
  input wire signed [15:0] x;
  input wire signed [15:0] w;
  output wire signed [31:0] p;
  assign p = x * w;                       // MUL
endmodule

// NP PEs, products registered.  KIND 1 = svpe (weights NB bits each), 2 = vpe (16 bits).
module nbq_products (clk, xs, ws, ps);
  parameter KIND = 1;
  parameter NB = 3;
  parameter NP = 9;
  parameter STYLE = 0;                    // 1: products not registered (see above)
  localparam WB = (KIND == 1) ? NB : 16;                         // weight bits
  localparam PW = (KIND == 1) ? 17 + (1 << (NB - 1)) - 2 : 32;   // product bits
  input wire clk;
  input wire [NP*16-1:0] xs;
  input wire [NP*WB-1:0] ws;
  output reg [NP*PW-1:0] ps;

  genvar i;
  generate
    for (i = 0; i < NP; i = i + 1) begin : g_pe
      wire signed [PW-1:0] p;
      if (KIND == 1) begin : g_svpe
        nbq_svpe_pe #(.NB(NB), .STYLE(STYLE)) pe (.x(xs[i*16 +: 16]), .code(ws[i*WB +: WB]), .p(p));
      end else begin : g_vpe
        nbq_vpe_pe pe (.x(xs[i*16 +: 16]), .w(ws[i*WB +: WB]), .p(p));
      end
      if (STYLE == 0) begin : g_reg
        always @(posedge clk) ps[i*PW +: PW] <= p;
      end else begin : g_comb
        always @* ps[i*PW +: PW] = p;
      end
    end
  endgenerate
endmodule
`default_nettype wire
