// tb_lane.v - replays a vector file through nbq_lane and prints every valid
// accumulator (tests/test_rtl_twin.py writes the file and checks the output against
// pynq_nbq/datapath.py).  Parameters come from iverilog -P; files from plusargs:
//   +vectors=FILE  one line per cycle: valid first x[0..NP-1] w[0..NP-1]
//                  (decimal; svpe w = the NB-bit code as an unsigned number)
//   output         one line per out_valid cycle: "acc <decimal>"
`default_nettype none
module tb_lane;
  parameter KIND = 1;
  parameter NB = 3;
  parameter PM = 2;
  parameter STYLE = 0;
  localparam NP = 9 * PM;
  localparam WB = (KIND == 1) ? NB : 16;
  reg clk = 0;
  reg valid = 0, first = 0;
  reg [NP*16-1:0] xs = 0;
  reg [NP*WB-1:0] ws = 0;
  wire out_valid;
  wire signed [47:0] acc;
  nbq_lane #(.KIND(KIND), .NB(NB), .PM(PM), .STYLE(STYLE)) dut (
      .clk(clk), .valid(valid), .first(first), .xs(xs), .ws(ws),
      .out_valid(out_valid), .acc(acc));

  integer fd, i, v, f, n, x, w, cycles;
  reg [8*256-1:0] path;
  always #5 clk = ~clk;
  always @(posedge clk) if (out_valid) $display("acc %0d", acc);
  initial begin
    if (!$value$plusargs("vectors=%s", path)) begin
      $display("ERROR no +vectors=");
      $finish;
    end
    fd = $fopen(path, "r");
    if (fd == 0) begin
      $display("ERROR cannot open vectors");
      $finish;
    end
    cycles = 0;
    while (!$feof(fd)) begin
      n = $fscanf(fd, "%d %d", v, f);
      if (n == 2) begin
        for (i = 0; i < NP; i = i + 1) begin
          n = $fscanf(fd, "%d", x);
          xs[i*16 +: 16] = x;
        end
        for (i = 0; i < NP; i = i + 1) begin
          n = $fscanf(fd, "%d", w);
          ws[i*WB +: WB] = w;
        end
        valid = v;
        first = f;
        @(negedge clk);
        cycles = cycles + 1;
      end
    end
    valid = 0;
    repeat (NP + 8) @(negedge clk);
    $display("done %0d", cycles);
    $finish;
  end
endmodule
`default_nettype wire
