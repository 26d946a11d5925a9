# vivado_stub.tcl - stand-ins for the Vivado Tcl commands overlay/build_overlay.tcl calls, for
# running it under plain tclsh (tests/test_overlay_tcl.py).  Each stub appends its call to
# ::stub_calls (with `set_property -dict` split into one call per property, so the log needs
# no Tcl parsing), and mimics just enough of Vivado for the script to proceed: objects are
# their own names, the IP catalog is Xilinx's IP plus the component.xml files in the IP
# repositories, runs finish at 100 % and write their outputs into STUB_DIR.
#
# Environment: STUB_DIR (scratch directory), STUB_LOG (JSON log written at exit),
# STUB_WNS / STUB_WHS (the slack the implementation run reports, default 0.1 / 0.01 ns),
# STUB_ACT_MHZ (the fabric clock the PS reports making; default: the one requested).

set ::stub_calls {}
set ::stub_cells [dict create]
set ::stub_repos {}
set ::stub_top ""
set ::stub_dir $::env(STUB_DIR)
#: The Xilinx IP a Vivado install has (any version: a missing one is design.py's problem).
set ::stub_xilinx_ip {zynq_ultra_ps_e processing_system7 axi_dma proc_sys_reset axi_interconnect}
# CONFIG.* values set per cell: {cell {NAME value ...}}
set ::stub_config [dict create]
# Board parts the stub's "installation" carries (STUB_BOARD_PARTS overrides; "" = none),
# several versions of some, as a Vivado with updated board files has.
set ::stub_board_parts {
    xilinx.com:zcu102:part0:3.3 xilinx.com:zcu102:part0:3.4 xilinx.com:zcu104:part0:1.1
    xilinx.com:kv260_som:part0:1.2 xilinx.com:kv260_som:part0:1.3
    tul.com.tw:pynq-z2:part0:1.0
}
if {[info exists ::env(STUB_BOARD_PARTS)]} { set ::stub_board_parts $::env(STUB_BOARD_PARTS) }

proc stub_log {args} { lappend ::stub_calls $args }

proc stub_json_str {s} {
    return "\"[string map [list \\ \\\\ \" \\\" \n \\n \t \\t \r \\r] $s]\""
}

proc stub_write_log {error_text} {
    set calls {}
    foreach c $::stub_calls {
        set items {}
        foreach a $c { lappend items [stub_json_str $a] }
        lappend calls "\[[join $items {, }]\]"
    }
    set f [open $::env(STUB_LOG) w]
    puts $f "{\"error\": [stub_json_str $error_text],\n \"calls\": \[\n  [join $calls ",\n  "]\n\]}"
    close $f
}

# --- projects, properties, IP catalog -------------------------------------------------------
proc create_project {args} { stub_log create_project {*}$args; return [lindex $args end-2] }
proc current_project {} { return project }
proc current_fileset {} { return sources_1 }
proc update_compile_order {args} { stub_log update_compile_order {*}$args }

proc set_property {args} {
    if {[lindex $args 0] eq "-dict"} {
        lassign $args - pairs obj
        if {[llength $pairs] % 2} { error "set_property -dict: odd list $pairs" }
        foreach {k v} $pairs { set_property $k $v $obj }
        return
    }
    if {[llength $args] != 3} { error "set_property: expected NAME VALUE OBJECT, got $args" }
    lassign $args k v obj
    if {$k eq "ip_repo_paths"} { set ::stub_repos $v }
    if {$k eq "top"} { set ::stub_top $v }
    if {[string match CONFIG.* $k]} {
        set cell [string trimleft $obj /]
        if {![dict exists $::stub_cells $cell]} { error "set_property $k on unknown cell $obj" }
        dict set ::stub_config $cell [string range $k 7 end] $v
    }
    stub_log set_property $k $v $obj
}

# get_board_parts [-quiet] [-latest_file_version] PATTERN: the matching installed parts;
# with -latest_file_version only the highest version of each board part.
proc get_board_parts {args} {
    stub_log get_board_parts {*}$args
    set pattern [lindex $args end]
    set found [lsearch -all -inline -glob $::stub_board_parts $pattern]
    if {[lsearch -exact $args -latest_file_version] < 0} { return $found }
    set best [dict create]
    foreach bp $found {
        set stem [join [lrange [split $bp :] 0 end-1] :]
        set version [lindex [split $bp :] end]
        if {![dict exists $best $stem] ||
            [package vcompare $version [dict get $best $stem]] > 0} {
            dict set best $stem $version
        }
    }
    set out {}
    dict for {stem version} $best { lappend out $stem:$version }
    return $out
}

proc update_ip_catalog {args} { stub_log update_ip_catalog {*}$args }

# The catalog: Xilinx's IP of the stub's list, and the IP of each repository's component.xml
# (the file Vitis HLS's export_design writes).
proc get_ipdefs {args} {
    set vlnv [lindex $args end]
    lassign [split $vlnv :] vendor library name version
    if {$vendor eq "xilinx.com" && [lsearch -exact $::stub_xilinx_ip $name] >= 0} { return $vlnv }
    foreach repo $::stub_repos {
        foreach xml [glob -nocomplain -directory $repo component.xml */component.xml] {
            set fh [open $xml r]
            set text [read $fh]
            close $fh
            set have {}
            foreach tag {vendor library name version} {
                regexp "<spirit:$tag>(\[^<\]*)</spirit:$tag>" $text - value
                lappend have $value
            }
            if {[join $have :] eq $vlnv} { return $vlnv }
        }
    }
    return {}
}

# --- block design ---------------------------------------------------------------------------
proc create_bd_design {name} { stub_log create_bd_design $name }

proc create_bd_cell {args} {
    set vlnv [lindex $args [expr {[lsearch -exact $args -vlnv] + 1}]]
    set name [lindex $args end]
    if {[get_ipdefs -all $vlnv] eq ""} { error "create_bd_cell: IP $vlnv not in the catalog" }
    if {[dict exists $::stub_cells $name]} { error "create_bd_cell: $name exists" }
    dict set ::stub_cells $name $vlnv
    stub_log create_bd_cell $vlnv $name
    return /$name
}

proc stub_object {kind path} {
    set cell [lindex [split [string trimleft $path /] /] 0]
    if {![dict exists $::stub_cells $cell]} { error "$kind $path: no cell $cell" }
    return /[string trimleft $path /]
}

proc get_bd_cells {path} { return [stub_object get_bd_cells $path] }
proc get_bd_pins {path} { return [stub_object get_bd_pins $path] }
proc get_bd_intf_pins {path} { return [stub_object get_bd_intf_pins $path] }
proc get_bd_addr_spaces {path} { return [stub_object get_bd_addr_spaces $path] }
proc get_bd_addr_segs {path} { return [stub_object get_bd_addr_segs $path] }

proc apply_bd_automation {args} { stub_log apply_bd_automation {*}$args }
proc connect_bd_net {args} { stub_log connect_bd_net {*}$args }
proc connect_bd_intf_net {a b} { stub_log connect_bd_intf_net $a $b }

proc assign_bd_address {args} {
    if {$args eq ""} { stub_log assign_bd_address; return }
    set opts [dict create]
    foreach flag {-offset -range -target_address_space} {
        dict set opts $flag [lindex $args [expr {[lsearch -exact $args $flag] + 1}]]
    }
    set seg [lindex $args end]
    if {[lindex $args end] eq "-force"} { set seg [lindex $args end-1] }
    stub_log assign_bd_address [dict get $opts -target_address_space] $seg \
        [dict get $opts -offset] [dict get $opts -range]
}

proc validate_bd_design {args} { stub_log validate_bd_design }
proc save_bd_design {args} { stub_log save_bd_design }

# --- files, runs, reports ---------------------------------------------------------------------
proc get_files {args} {
    set pattern [lindex $args end]
    if {[lsearch -exact $args -of_objects] >= 0} {
        # generated files of the block design: the .hwh Vivado writes with it
        set hwh [file join $::stub_dir hw_handoff $pattern]
        file mkdir [file dirname $hwh]
        set fh [open $hwh w]
        puts $fh "<MODULES/>"
        close $fh
        return $hwh
    }
    return [file join $::stub_dir $pattern]
}

proc generate_target {args} { stub_log generate_target {*}$args }
proc make_wrapper {args} {
    stub_log make_wrapper {*}$args
    return [file join $::stub_dir wrapper.v]
}
proc add_files {args} { stub_log add_files {*}$args }
proc get_runs {name} { return $name }
proc open_run {name} { stub_log open_run $name }

proc launch_runs {args} {
    stub_log launch_runs {*}$args
    set run [lindex $args 0]
    set dir [file join $::stub_dir $run]
    file mkdir $dir
    if {[lsearch -exact $args write_bitstream] >= 0} {
        set fh [open [file join $dir $::stub_top.bit] w]
        puts $fh "stub bitstream"
        close $fh
    }
}
proc wait_on_run {run} { stub_log wait_on_run $run }

proc get_property {name obj} {
    if {[string match CONFIG.* $name]} {
        # a PS's ACT_ (actual) clock: what was requested, or STUB_ACT_MHZ
        set key [string range $name 7 end]
        if {[string match *ACT_* $key] && [info exists ::env(STUB_ACT_MHZ)]} {
            return $::env(STUB_ACT_MHZ)
        }
        set asked [string map {ACT_ ""} $key]
        set cell [string trimleft $obj /]
        if {![dict exists $::stub_config $cell $asked]} {
            error "stub get_property: $name of $obj (no CONFIG.$asked set)"
        }
        stub_log get_property $name $obj
        return [dict get $::stub_config $cell $asked]
    }
    switch -- $name {
        PROGRESS { return "100%" }
        STATUS { return "write_bitstream Complete!" }
        DIRECTORY { return [file join $::stub_dir $obj] }
        STATS.WNS { return [expr {[info exists ::env(STUB_WNS)] ? $::env(STUB_WNS) : 0.1}] }
        STATS.WHS { return [expr {[info exists ::env(STUB_WHS)] ? $::env(STUB_WHS) : 0.01}] }
        STATS.TNS - STATS.THS { return 0.0 }
    }
    error "stub get_property: $name of $obj"
}

proc report_utilization {args} {
    set path [lindex $args [expr {[lsearch -exact $args -file] + 1}]]
    file copy -force $::env(STUB_UTIL_RPT) $path
    stub_log report_utilization {*}$args
}
proc report_timing_summary {args} {
    set path [lindex $args [expr {[lsearch -exact $args -file] + 1}]]
    set fh [open $path w]
    puts $fh "stub timing summary"
    close $fh
    stub_log report_timing_summary {*}$args
}

# --- Vitis HLS (hls/run_hls.tcl) ------------------------------------------------------------
foreach cmd {open_project set_top open_solution set_part create_clock csim_design
             csynth_design export_design close_project} {
    proc $cmd {args} "stub_log $cmd {*}\$args"
}
