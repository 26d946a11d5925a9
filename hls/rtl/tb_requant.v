// tb_requant.v - replays a vector file through nbq_requant (+vectors=FILE, one line
// per value: acc mult bias shift relu, decimal) and prints "y <decimal>" per value.
`default_nettype none
module tb_requant;
  reg clk = 0;
  reg signed [47:0] acc = 0;
  reg signed [15:0] mult = 0;
  reg signed [63:0] bias = 0;
  reg [5:0] shift = 0;
  reg relu = 0;
  wire signed [15:0] y;
  nbq_requant dut (.clk(clk), .acc(acc), .mult(mult), .bias(bias), .shift(shift),
                   .relu(relu), .y(y));
  integer fd, n, count;
  reg signed [63:0] a, m, b;
  integer s, r;
  reg [8*256-1:0] path;
  reg in_valid = 0;
  reg [2:0] vp = 0;  // in_valid through the 3 stages
  always #5 clk = ~clk;
  always @(posedge clk) vp <= {vp[1:0], in_valid};
  always @(negedge clk) if (vp[2]) $display("y %0d", y);
  initial begin
    if (!$value$plusargs("vectors=%s", path)) begin
      $display("ERROR no +vectors=");
      $finish;
    end
    fd = $fopen(path, "r");
    count = 0;
    while (!$feof(fd)) begin
      n = $fscanf(fd, "%d %d %d %d %d", a, m, b, s, r);
      if (n == 5) begin
        acc = a; mult = m; bias = b; shift = s; relu = r;
        in_valid = 1;
        @(negedge clk);
        count = count + 1;
      end
    end
    in_valid = 0;
    repeat (5) @(negedge clk);
    $display("done %0d", count);
    $finish;
  end
endmodule
`default_nettype wire
