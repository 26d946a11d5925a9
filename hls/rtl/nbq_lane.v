// nbq_lane.v - one 3x3 PE array, and one output lane of the kernel.
//
// nbq_array3x3  9 PEs (one 3x3 window of one input channel against one output
//               channel's 3x3 weights) and their adder tree: the paper's array.
// nbq_lane      one output channel of the kernel's compute loop: Pm arrays (Pm input
//               channels per cycle) = 9*Pm PEs, one adder tree over all 9*Pm
//               products (widths per level, nbq_tree.v), and the int48 accumulator
//               (datapath.ACC_BITS).  A build has Pn lanes side by side.
//
// Timing of nbq_lane: inputs in cycle t (valid, first = "this cycle starts a new
// output pixel"); the products are registered (1), the tree adds LV levels
// (LV = ceil(log2(9*Pm))), the accumulator 1 more: acc shows the running sum at
// t + LAT, LAT = LV + 2, with out_valid.  acc = sum (first) or acc + sum.
`default_nettype none

module nbq_array3x3 (clk, xs, ws, sum);
  parameter KIND = 1;                     // 1 svpe, 2 vpe
  parameter NB = 3;                       // svpe code width
  parameter STYLE = 0;                    // nbq_pe.v: 0 shipped twin, 1 the other twin
  localparam WB = (KIND == 1) ? NB : 16;
  localparam PW = (KIND == 1) ? 17 + (1 << (NB - 1)) - 2 : 32;
  localparam SW = PW + 4;                 // 9 products: ceil(log2 9) = 4 more bits
  input wire clk;
  input wire [9*16-1:0] xs;
  input wire [9*WB-1:0] ws;
  output wire signed [SW-1:0] sum;

  wire [9*PW-1:0] ps;
  nbq_products #(.KIND(KIND), .NB(NB), .NP(9), .STYLE(STYLE)) prod (
      .clk(clk), .xs(xs), .ws(ws), .ps(ps));
  nbq_tree #(.N(9), .W(PW)) tree (.clk(clk), .in(ps), .out(sum));
endmodule

module nbq_lane (clk, valid, first, xs, ws, out_valid, acc);
  parameter KIND = 1;
  parameter NB = 3;
  parameter PM = 4;                       // input channels per cycle
  parameter ACCW = 48;                    // accumulator bits
  parameter STYLE = 0;                    // nbq_pe.v: 0 shipped twin, 1 the other twin
`include "nbq_clog2.vh"
  localparam NP = 9 * PM;
  localparam WB = (KIND == 1) ? NB : 16;
  localparam PW = (KIND == 1) ? 17 + (1 << (NB - 1)) - 2 : 32;
  localparam LV = clog2f(NP);
  localparam SW = PW + LV;
  localparam PR = (STYLE == 0) ? 1 : 0;  // product register stages
  localparam LAT = LV + PR + 1;
  input wire clk;
  input wire valid;
  input wire first;
  input wire [NP*16-1:0] xs;
  input wire [NP*WB-1:0] ws;
  output reg out_valid;
  output reg signed [ACCW-1:0] acc;

  wire [NP*PW-1:0] ps;
  wire signed [SW-1:0] sum;
  nbq_products #(.KIND(KIND), .NB(NB), .NP(NP), .STYLE(STYLE)) prod (
      .clk(clk), .xs(xs), .ws(ws), .ps(ps));
  nbq_tree #(.N(NP), .W(PW)) tree (.clk(clk), .in(ps), .out(sum));

  // valid/first travel beside the data: products (PR) + tree (LV)
  reg [LV:0] v_d, f_d;
  always @(posedge clk) begin
    v_d <= {v_d[LV-1:0], valid};
    f_d <= {f_d[LV-1:0], first};
  end
  wire signed [ACCW-1:0] sum_x = sum;     // sign-extended
  always @(posedge clk) begin
    out_valid <= v_d[LV + PR - 1];
    if (v_d[LV + PR - 1]) acc <= f_d[LV + PR - 1] ? sum_x : acc + sum_x;
  end
endmodule
`default_nettype wire
