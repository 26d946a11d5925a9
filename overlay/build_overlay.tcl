# build_overlay.tcl - Vivado batch script: the block design, bitstream, .hwh and reports of
# ONE overlay (one PE kind, one board: a Zynq UltraScale+ PS8 or a Zynq-7000 PS7 board).  overlay/Makefile runs it once per PE kind; see
# overlay/README.md.  Written for Vivado 2022.1; never run here (no Vivado on the machines
# this project is developed on) - tests/test_overlay_tcl.py runs it under tclsh with stub
# Vivado commands and checks every call against pynq_nbq/kernel/design.py.
#
#   vivado -mode batch -source build_overlay.tcl -tclargs DESIGN_TCL IP_REPO OUT_DIR [JOBS]
#
# DESIGN_TCL  the description written by `python3 -m pynq_nbq.kernel.design tcl KIND BOARD F`
#             (part, board part, PS family, cell names, ports and pins, VLNVs, DMA/PS
#             parameters, fabric clock, address map)
# IP_REPO     the HLS IP export of that kind (nbq_conv_<kind>/solution1/impl/ip)
# OUT_DIR     receives <name>.bit, <name>.hwh, <name>_utilization.rpt, <name>_timing.rpt and
#             <name>_report.json (<name> = nbq_svpe / nbq_vpe)
#
# The project is created in the current directory.  The build fails (Tcl error, non-zero
# exit) on a missing IP, a failed run, or negative setup/hold slack; in that last case the
# reports are written but no .bit/.hwh.

if {$argc < 3} {
    error "usage: vivado -mode batch -source build_overlay.tcl -tclargs\
           DESIGN_TCL IP_REPO OUT_DIR \[JOBS\]"
}
lassign $argv design_tcl ip_repo out_dir jobs
if {$jobs eq ""} { set jobs 4 }
source $design_tcl

# ---- helpers ------------------------------------------------------------------------------
# A value of the design description: [d dma parameters c_sg_length_width].
proc d {args} {
    global nbq_design
    return [dict get $nbq_design {*}$args]
}

# {CONFIG.k v ...} for set_property -dict, from a dict of IP parameters.
proc config_list {params} {
    set out {}
    dict for {k v} $params { lappend out CONFIG.$k $v }
    return $out
}

# Stop with a clear message when the catalog lacks an IP (another Vivado release, or the
# HLS export missing from IP_REPO).
proc require_ip {vlnv} {
    if {[llength [get_ipdefs -all $vlnv]] == 0} {
        error "IP $vlnv is not in Vivado's catalog: the build is written for Vivado\
               [d vivado_version]; for an HLS kernel, check that IP_REPO holds its export"
    }
}

# Create one cell of the block design.
proc add_cell {vlnv name {params {}}} {
    set cell [create_bd_cell -type ip -vlnv $vlnv $name]
    if {[dict size $params] > 0} {
        set_property -dict [config_list $params] $cell
    }
    return $cell
}

# Connect one net from a driver pin to a list of "cell/pin" sinks.
proc wire {driver sinks} {
    set pins {}
    foreach s $sinks { lappend pins [get_bd_pins $s] }
    connect_bd_net [get_bd_pins $driver] {*}$pins
}

proc intf {from to} {
    connect_bd_intf_net [get_bd_intf_pins $from] [get_bd_intf_pins $to]
}

# Used/available per resource from `report_utilization` text, by column name (the column
# set differs between Vivado releases).  Returns {resource {used N available M} ...}.
proc parse_utilization {text} {
    set wanted {"CLB LUTs" "CLB Registers" "Block RAM Tile" "URAM" "DSPs"}
    set result [dict create]
    set columns {}
    foreach line [split $text "\n"] {
        if {![string match "|*|" [string trim $line]]} { continue }
        set fields {}
        foreach f [lrange [split [string trim $line] "|"] 1 end-1] { lappend fields [string trim $f] }
        set name [string trimright [lindex $fields 0] "*"]
        if {$name eq "Site Type"} {
            set columns $fields
            continue
        }
        if {$columns eq {} || [lsearch -exact $wanted $name] < 0 || [dict exists $result $name]} {
            continue
        }
        set used [lindex $fields [lsearch -exact $columns "Used"]]
        set avail [lindex $fields [lsearch -exact $columns "Available"]]
        dict set result $name [dict create used $used available $avail]
    }
    return $result
}

proc json_report {path name util timing} {
    set rows {}
    dict for {k v} $util {
        lappend rows "    \"$k\": {\"used\": [dict get $v used], \"available\": [dict get $v available]}"
    }
    set t {}
    dict for {k v} $timing { lappend t "\"$k\": $v" }
    set f [open $path w]
    puts $f "{\n  \"name\": \"$name\",\n  \"board\": \"[d board]\",\n  \"part\": \"[d part]\","
    puts $f "  \"pl_clock_mhz\": [d pl_clock_mhz],\n  \"timing_ns\": {[join $t {, }]},"
    puts $f "  \"utilization\": {\n[join $rows ",\n"]\n  }\n}"
    close $f
}

# ---- project --------------------------------------------------------------------------
set name [d bitstream]
set ps [d cells ps]
set kernel [d cells kernel]
set dma [d cells dma]
set rst [d cells reset]
set ctrl [d cells ctrl_interconnect]
set data [d cells data_interconnect]

create_project -force $name ./$name -part [d part]
# The board part: the latest file version of it that this Vivado carries (a 2022.1 install
# has zcu102 3.4, older ones 3.3); stop, naming it, if this Vivado has none.
set board_part [lindex [get_board_parts -quiet -latest_file_version "[d board_part]:*"] 0]
if {$board_part eq ""} {
    error "board part [d board_part] is not installed in this Vivado: install the board\
           files (Vivado's Xilinx Board Store) or build with a Vivado that carries them"
}
set_property board_part $board_part [current_project]
set_property ip_repo_paths [list [file normalize $ip_repo]] [current_project]
update_ip_catalog -rebuild
foreach vlnv [list [d ps vlnv] [d dma vlnv] [d reset vlnv] [d interconnect vlnv] [d kernel vlnv]] {
    require_ip $vlnv
}

# ---- block design ---------------------------------------------------------------------
create_bd_design $name

# The PS: the board preset (DDR, MIO), then our ports and the fabric clock.  Zynq-7000's
# automation also makes its DDR and FIXED_IO pins external (PS8 has none to make).
add_cell [d ps vlnv] $ps
switch -- [d ps family] {
    ps8 {
        apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e \
            -config {apply_board_preset "1"} [get_bd_cells $ps]
    }
    ps7 {
        apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 \
            -config {make_external "FIXED_IO, DDR" apply_board_preset "1"\
                     Master "Disable" Slave "Disable"} [get_bd_cells $ps]
    }
    default { error "unknown PS family [d ps family] in $design_tcl" }
}
set_property -dict [config_list [d ps parameters]] [get_bd_cells $ps]
# The clock the PS makes (its PLL over integer divisors) must be the one the kernel was
# synthesised and modelled for: stop, naming both, if Vivado's configuration differs.
set actual_mhz [get_property CONFIG.[d ps actual_clock_param] [get_bd_cells $ps]]
if {abs($actual_mhz - [d pl_clock_mhz]) > 0.001 * [d pl_clock_mhz]} {
    error "the PS makes a fabric clock of $actual_mhz MHz ([d ps actual_clock_param]), not\
           the [d pl_clock_mhz] MHz of pynq_nbq/kernel/design.py and the board file"
}

add_cell [d kernel vlnv] $kernel
add_cell [d dma vlnv] $dma [d dma parameters]
add_cell [d reset vlnv] $rst
add_cell [d interconnect vlnv] $ctrl {NUM_SI 1 NUM_MI 2}
add_cell [d interconnect vlnv] $data {NUM_SI 2 NUM_MI 1}

# AXI-Lite: the PS's control master -> interconnect -> DMA and kernel registers.
intf $ps/[d ps ctrl_master] $ctrl/S00_AXI
intf $ctrl/M00_AXI $dma/S_AXI_LITE
intf $ctrl/M01_AXI $kernel/[d kernel ctrl_port]
# Streams: DMA MM2S -> kernel -> DMA S2MM.
intf $dma/M_AXIS_MM2S $kernel/[d kernel in_port]
intf $kernel/[d kernel out_port] $dma/S_AXIS_S2MM
# DMA data: both masters -> interconnect -> the HP port (DDR).  The DMA's memory map is
# [d stream_bits] bits; on a PS7 the interconnect converts it to the 64-bit HP port.
intf $dma/M_AXI_MM2S $data/S00_AXI
intf $dma/M_AXI_S2MM $data/S01_AXI
intf $data/M00_AXI $ps/[d ps data_slave]

# One fabric clock for everything, one reset block.
wire $ps/[d ps clock_pin] [list \
    $ps/[d ps ctrl_clock_pin] $ps/[d ps data_clock_pin] $rst/slowest_sync_clk $kernel/ap_clk \
    $dma/s_axi_lite_aclk $dma/m_axi_mm2s_aclk $dma/m_axi_s2mm_aclk \
    $ctrl/ACLK $ctrl/S00_ACLK $ctrl/M00_ACLK $ctrl/M01_ACLK \
    $data/ACLK $data/S00_ACLK $data/S01_ACLK $data/M00_ACLK]
wire $ps/[d ps reset_pin] [list $rst/ext_reset_in]
wire $rst/interconnect_aresetn [list $ctrl/ARESETN $data/ARESETN]
wire $rst/peripheral_aresetn [list \
    $kernel/ap_rst_n $dma/axi_resetn \
    $ctrl/S00_ARESETN $ctrl/M00_ARESETN $ctrl/M01_ARESETN \
    $data/S00_ARESETN $data/S01_ARESETN $data/M00_ARESETN]

# Address map: the register windows where design.py puts them, the rest automatic
# (the DMA's data masters see DDR through the HP port).
set slaves [dict create $dma S_AXI_LITE $kernel [d kernel ctrl_port]]
dict for {cell port} $slaves {
    lassign [d address_map $cell] base range
    assign_bd_address -offset $base -range $range \
        -target_address_space [get_bd_addr_spaces $ps/Data] \
        [get_bd_addr_segs $cell/$port/Reg] -force
}
assign_bd_address

validate_bd_design
save_bd_design

# ---- synthesis, implementation --------------------------------------------------------
set bd_file [get_files $name.bd]
generate_target all $bd_file
add_files -norecurse [make_wrapper -files $bd_file -top]
set_property top ${name}_wrapper [current_fileset]
update_compile_order -fileset sources_1

foreach {run step} {synth_1 {} impl_1 write_bitstream} {
    if {$step eq ""} {
        launch_runs $run -jobs $jobs
    } else {
        launch_runs $run -to_step $step -jobs $jobs
    }
    wait_on_run $run
    if {[get_property PROGRESS [get_runs $run]] ne "100%"} {
        error "$run failed: [get_property STATUS [get_runs $run]] (see ./$name)"
    }
}

# ---- reports, then the slack check, then the files the board needs ----------------------
file mkdir $out_dir
open_run impl_1
set util_rpt [file join $out_dir ${name}_utilization.rpt]
report_utilization -file $util_rpt
report_timing_summary -file [file join $out_dir ${name}_timing.rpt]
set timing [dict create]
foreach k {WNS TNS WHS THS} {
    dict set timing [string tolower $k] [get_property STATS.$k [get_runs impl_1]]
}
set fh [open $util_rpt r]
set util [parse_utilization [read $fh]]
close $fh
json_report [file join $out_dir ${name}_report.json] $name $util $timing

set wns [dict get $timing wns]
set whs [dict get $timing whs]
if {$wns < 0 || $whs < 0} {
    error "timing not met at [d pl_clock_mhz] MHz: WNS $wns ns, WHS $whs ns\
           (see [file join $out_dir ${name}_timing.rpt]); no bitstream written"
}

set impl_dir [get_property DIRECTORY [get_runs impl_1]]
file copy -force [file join $impl_dir ${name}_wrapper.bit] [file join $out_dir $name.bit]
set hwh [lindex [get_files -all -of_objects $bd_file $name.hwh] 0]
if {$hwh eq ""} { error "no $name.hwh among the block design's generated files" }
file copy -force $hwh [file join $out_dir $name.hwh]
puts "nbq overlay: wrote [file join $out_dir $name].bit and .hwh (WNS $wns ns, WHS $whs ns)"
