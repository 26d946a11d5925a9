// nbq_requant.v - the requantisation of one output value (datapath.requantize):
//   y = (acc * mult + bias + half) >>> shift, half = 2^(shift-1) (0 if shift = 0),
//   ReLU if relu, saturate to int16.
// acc int48, mult int16, bias int64, shift 0..62.  Arithmetic in 64 bits, like the
// kernel (the exporter keeps |acc*mult| + |bias| below 2^62).  Three pipeline
// stages: multiply (acc x mult: 48 x 16 bits -> DSP48E2 cascade), add bias + half,
// shift/ReLU/saturate.  One instance per output lane (Pn per build).
`default_nettype none

module nbq_requant (clk, acc, mult, bias, shift, relu, y);
  input wire clk;
  input wire signed [47:0] acc;
  input wire signed [15:0] mult;
  input wire signed [63:0] bias;
  input wire [5:0] shift;
  input wire relu;
  output reg signed [15:0] y;

  reg signed [63:0] prod, b1, s2;
  reg [5:0] sh1, sh2;
  reg r1, r2;
  wire signed [63:0] half = (sh1 == 0) ? 64'sd0 : (64'sd1 <<< (sh1 - 1'b1));
  wire signed [63:0] shifted = s2 >>> sh2;
  wire signed [63:0] relued = (r2 && shifted < 0) ? 64'sd0 : shifted;
  always @(posedge clk) begin
    prod <= acc * mult;                   // stage 1: MUL (48 x 16, exact in 64 bits)
    b1 <= bias;
    sh1 <= shift;
    r1 <= relu;
    s2 <= prod + b1 + half;               // stage 2: + bias + half (wraps like int64)
    sh2 <= sh1;
    r2 <= r1;
    if (relued > 64'sd32767) y <= 16'sd32767;           // stage 3: shift, ReLU, saturate
    else if (relued < -64'sd32768) y <= -16'sd32768;
    else y <= relued[15:0];
  end
endmodule
`default_nettype wire
