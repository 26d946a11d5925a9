// nbq_tree.v - pipelined binary adder tree with widths sized per level.
//
// N signed W-bit inputs -> one signed (W + LV)-bit sum, LV = ceil(log2 N).  Level l
// (1..LV) holds ceil(N / 2^l) nodes of W + l bits: the worst case of 2^l inputs of
// W bits, so nothing can overflow and no bit is wasted.  One register per level:
// latency LV cycles, a new set of inputs every cycle.  An odd node is passed on
// (registered) to keep every path at the same latency.  N = 1: a wire (LV = 0).
`default_nettype none

module nbq_tree (clk, in, out);
  parameter N = 9;
  parameter W = 19;
`include "nbq_clog2.vh"
  localparam LV = clog2f(N);
  localparam WO = W + LV;                 // output width
  input wire clk;
  input wire [N*W-1:0] in;
  output wire signed [WO-1:0] out;

  // bus: level l, node i at bits ((l*N + i)*WO) +: WO, sign-extended to WO
  wire [(LV+1)*N*WO-1:0] bus;
  genvar i, l;
  generate
    for (i = 0; i < N; i = i + 1) begin : g_in
      wire signed [W-1:0] v = in[i*W +: W];
      wire signed [WO-1:0] e = v;
      assign bus[i*WO +: WO] = e;
    end
    for (l = 1; l <= LV; l = l + 1) begin : g_lvl
      localparam NP = (N + (1 << (l - 1)) - 1) >> (l - 1);  // nodes of level l-1
      localparam NC = (N + (1 << l) - 1) >> l;              // nodes of level l
      for (i = 0; i < NC; i = i + 1) begin : g_node
        wire signed [W+l-2:0] a = bus[((l-1)*N + 2*i)*WO +: W+l-1];
        reg signed [W+l-1:0] r;
        if (2 * i + 1 < NP) begin : g_add
          wire signed [W+l-2:0] b = bus[((l-1)*N + 2*i + 1)*WO +: W+l-1];
          always @(posedge clk) r <= a + b;
        end else begin : g_pass
          always @(posedge clk) r <= a;
        end
        wire signed [WO-1:0] e = r;
        assign bus[(l*N + i)*WO +: WO] = e;
      end
      for (i = NC; i < N; i = i + 1) begin : g_unused
        assign bus[(l*N + i)*WO +: WO] = {WO{1'b0}};
      end
    end
  endgenerate
  assign out = bus[LV*N*WO +: WO];
endmodule
`default_nettype wire
