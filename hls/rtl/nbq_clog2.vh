// nbq_clog2.vh - ceil(log2(v)) as a constant function (0 for v <= 1); `include it
// inside a module body (nbq_tree.v, nbq_lane.v).
function integer clog2f(input integer v);
  integer t;
  begin
    clog2f = 0;
    for (t = v - 1; t > 0; t = t >> 1) clog2f = clog2f + 1;
  end
endfunction
