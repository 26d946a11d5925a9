# run_hls.tcl - C simulation, C synthesis and IP export of nbq_conv, for both PE
# kinds, for the ZCU102 (xczu9eg-ffvb1156-2-e) at the PL clock of kernel/design.py.  Needs Vitis HLS
# (2022.1 or newer) and python3 with numpy (the testbench vectors come from the
# numpy reference in this checkout's pynq_nbq).  See docs/hls.md.
#
#   cd <build dir> && vitis_hls -f <checkout>/hls/run_hls.tcl
#   vitis_hls -f hls/run_hls.tcl -tclargs svpe "csim csynth"   ;# one kind, some steps
#
# Arguments (optional): the PE kinds ("svpe vpe"), the steps ("csim csynth export").
# Each kind gets a project nbq_conv_<kind>/ in the current directory; the IP lands
# in nbq_conv_<kind>/solution1/impl/ip/ (a .zip for Vivado's IP catalog), the
# register map in .../impl/misc/drivers/nbq_conv_v1_0/src/xnbq_conv_hw.h - check
# it with:  python3 -m pynq_nbq.kernel check-header <that file>

set part xczu9eg-ffvb1156-2-e
# overlay/Makefile builds for other boards with NBQ_PART=<part> (pynq_nbq/kernel/design.py)
if {[info exists ::env(NBQ_PART)]} { set part $::env(NBQ_PART) }
set hls_dir [file dirname [file normalize [info script]]]
# The PL clock period (ns) from pynq_nbq/kernel/design.py, the one definition of the
# clock (187.5 MHz = the PS's 1500 MHz IOPLL / 8): overlay/Makefile passes NBQ_PERIOD_NS;
# run alone, this script asks the checkout's design.py.
if {[info exists ::env(NBQ_PERIOD_NS)]} {
    set period $::env(NBQ_PERIOD_NS)
} else {
    set period [exec env PYTHONPATH=[file dirname $hls_dir] python3 -m pynq_nbq.kernel.design period]
}

# The svpe build's code width (3: n <= 3 models, (Pm, Pn) = NBQ_SVPE3_*; 5: n <= 5,
# NBQ_SVPE5_*): overlay/Makefile passes NBQ_CODE_BITS; unset, nbq_params.h's default.
set code_bits ""
if {[info exists ::env(NBQ_CODE_BITS)]} { set code_bits $::env(NBQ_CODE_BITS) }

# The board's build (pynq_nbq/kernel/builds.py: Pm, Pn, buffer maxima, URAM binding, the
# svpe code width), as NAME=value words: overlay/Makefile passes NBQ_BUILD_DEFINES_SVPE and
# NBQ_BUILD_DEFINES_VPE (`python3 -m pynq_nbq.kernel.builds defines <board> <kind>`); they
# reach the kernel, the testbench and gen_vectors.  Unset: nbq_params.h's defaults.
proc build_defines {kind} {
    set var NBQ_BUILD_DEFINES_[string toupper $kind]
    if {[info exists ::env($var)]} { return $::env($var) }
    return ""
}

set kinds {svpe vpe}
set steps {csim csynth export}
if {$argc >= 1} { set kinds [lindex $argv 0] }
if {$argc >= 2} { set steps [lindex $argv 1] }

foreach kind $kinds {
    set KIND [string toupper $kind]
    # Vitis HLS's own ap_int.h, hls_stream.h and ap_axi_sdata.h: hls/csim_include/
    # (the g++ stand-in) must NOT be on this include path.
    set cflags "-std=c++14 -I$hls_dir -DNBQ_PE_KIND=NBQ_PE_$KIND"
    set vector_args {}
    set defines [build_defines $kind]
    if {$kind eq "svpe" && $code_bits ne "" && ![string match "*NBQ_CODE_BITS=*" $defines]} {
        append cflags " -DNBQ_CODE_BITS=$code_bits"
        set vector_args [list --code-bits $code_bits]
    }
    foreach def $defines {
        if {![regexp {^(NBQ_[A-Z0-9_]+)=([0-9]+)$} $def -> name value]} {
            error "NBQ_BUILD_DEFINES_$KIND: '$def' is not NBQ_NAME=integer"
        }
        append cflags " -D$name=$value"
        # gen_vectors.py takes the parallelism, the limits and the code width
        if {[regexp {^NBQ_(PM|PN|MAX_W|MAX_H|MAX_CIN|MAX_COUT|CODE_BITS)$} $name -> arg]} {
            lappend vector_args --[string map {_ -} [string tolower $arg]] $value
        }
    }

    open_project -reset nbq_conv_$kind
    set_top nbq_conv
    add_files $hls_dir/nbq_conv.cpp -cflags $cflags
    add_files -tb $hls_dir/tb_nbq_conv.cpp -cflags $cflags
    open_solution -reset solution1 -flow_target vivado
    set_part $part
    create_clock -period $period -name default

    if {[lsearch $steps csim] >= 0} {
        # expected outputs from the numpy reference (pynq_nbq.sim.reference), the build's limits
        set vectors [file normalize nbq_conv_$kind/tb_vectors_$kind.bin]
        exec python3 $hls_dir/gen_vectors.py --pe $kind --out $vectors {*}$vector_args >@ stdout
        csim_design -argv $vectors
    }
    if {[lsearch $steps csynth] >= 0} {
        csynth_design
    }
    if {[lsearch $steps export] >= 0} {
        export_design -format ip_catalog -vendor pynq-nbq.org -library hls \
            -version 1.0 -ipname nbq_conv_$kind -display_name "nbq_conv $kind"
    }
    close_project
}
exit
