// tb_nbq_conv.cpp - C++ testbench of nbq_conv, for Vitis HLS csim (run_hls.tcl)
// and for the sanitizer test (tests/test_hls_csim.py builds it with
// -fsanitize=address,undefined).
//
// Usage: tb_nbq_conv VECTORS.bin
// The vector file (version 3, written by hls/gen_vectors.py through the host
// scheduler and the numpy reference) holds kernel calls: the five layer
// registers, the input packets, the expected STATUS and the expected output
// packet (feature-map words, then the status word; NBQ_WORD_BYTES-byte words).  The testbench
// first checks that the kernel it was built with reports the PE kind and limits
// the vectors were made for (a PROBE call), then replays every call in order
// (weights loaded by one call stay for the next, as on the board) and compares
// every output word and its TLAST.  Exit status 0 and "PASS" on success.
#include <stdio.h>
#include <stdlib.h>

#include <vector>

#include "nbq_host_call.h"

namespace {

struct reader {
  FILE* f;
  bool ok;
  uint32_t u32() {
    uint8_t b[4];
    if (fread(b, 1, 4, f) != 4) ok = false;
    return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
  }
  void words(std::vector<uint8_t>& out, uint32_t n) {
    size_t old = out.size();
    const size_t nbytes = NBQ_WORD_BYTES * size_t(n);
    out.resize(old + nbytes);
    if (n && fread(&out[old], 1, nbytes, f) != nbytes) ok = false;
  }
};

const char* const RO_NAMES[NBQ_N_RO_REGS] = {"STATUS", "HW_ID",   "HW_VERSION", "PE_KIND",
                                             "PM",     "PN",      "MAX_H",      "MAX_W",
                                             "MAX_CIN", "MAX_COUT", "ACC_BITS", "WORD_BITS",
                                             "WEIGHT_BITS"};

}  // namespace

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "tb_vectors.bin";
  FILE* f = fopen(path, "rb");
  if (!f) {
    printf("FAIL: cannot open vector file %s\n", path);
    return 2;
  }
  reader r = {f, true};
  char magic[4];
  if (fread(magic, 1, 4, f) != 4 || magic[0] != 'N' || magic[1] != 'B' || magic[2] != 'Q' ||
      magic[3] != 'V' || r.u32() != 3) {
    printf("FAIL: %s is not an NBQV version 3 vector file\n", path);
    return 2;
  }

  // the kernel's identity against the one the vectors were made for
  uint32_t ro[NBQ_N_RO_REGS];
  uint32_t probe[NBQ_N_WO_REGS] = {0, 0, 0, 0, NBQ_FLAG_PROBE};
  uint64_t n_out = 0;
  uint8_t probe_word[NBQ_WORD_BYTES], probe_last[1];  // a probe writes the status word alone
  const int probe_rc = nbq_host_call(probe, 0, 0, 0, probe_word, probe_last, 1, &n_out, ro);
  const nbq_data_t want_probe = nbq_data_t(NBQ_STATUS_MAGIC) << 32 | NBQ_STATUS_OK;
  if (probe_rc != NBQ_CALL_OK || n_out != 1 || nbq_get_word(probe_word) != want_probe ||
      probe_last[0] != 1) {
    printf("FAIL: the probe call did not write exactly one status word with TLAST\n");
    return 2;
  }
  const int checked[7] = {3, 4, 5, 6, 7, 8, 9};  // PE_KIND, PM, PN, MAX_H/W/CIN/COUT
  bool same = ro[1] == NBQ_ID;
  for (int i = 0; i < 7; i++) {
    uint32_t want = r.u32();
    if (ro[checked[i]] != want) {
      printf("FAIL: kernel %s = %u but the vectors are for %u (rebuild with other -D)\n",
             RO_NAMES[checked[i]], ro[checked[i]], want);
      same = false;
    }
  }
  if (!same) return 2;

  const uint32_t n_calls = r.u32();
  uint32_t failures = 0;
  for (uint32_t c = 0; c < n_calls && r.ok; c++) {
    uint32_t regs[NBQ_N_WO_REGS];
    for (int i = 0; i < NBQ_N_WO_REGS; i++) regs[i] = r.u32();
    std::vector<uint8_t> in_bytes, in_last;
    const uint32_t n_packets = r.u32();
    for (uint32_t p = 0; p < n_packets; p++) {
      const uint32_t n = r.u32();
      r.words(in_bytes, n);
      for (uint32_t i = 0; i < n; i++) in_last.push_back(i + 1 == n ? 1 : 0);
    }
    const uint32_t want_status = r.u32();
    std::vector<uint8_t> want;
    const uint32_t want_words = r.u32();
    r.words(want, want_words);
    if (!r.ok) break;

    std::vector<uint8_t> got(NBQ_WORD_BYTES * (size_t(want_words) + 1)), got_last(want_words + 1);
    const int rc = nbq_host_call(regs, in_bytes.data(), in_last.data(), in_last.size(),
                                 got.data(), got_last.data(), want_words + 1, &n_out, ro);
    bool bad = rc != NBQ_CALL_OK || ro[0] != want_status || n_out != want_words;
    for (uint64_t i = 0; !bad && i < n_out; i++) {
      bad = nbq_get_word(&got[NBQ_WORD_BYTES * i]) != nbq_get_word(&want[NBQ_WORD_BYTES * i]) ||
            got_last[i] != (i + 1 == n_out);
    }
    if (bad) {
      failures++;
      printf("FAIL call %u (in_h %u in_w %u c_in %u c_out %u flags 0x%x): rc %d, status %u "
             "(want %u), %llu words (want %u)\n",
             c, regs[0], regs[1], regs[2], regs[3], regs[4], rc, ro[0], want_status,
             (unsigned long long)n_out, want_words);
    }
  }
  fclose(f);
  if (!r.ok) {
    printf("FAIL: %s is truncated\n", path);
    return 2;
  }
  if (failures) {
    printf("FAIL: %u of %u calls differ from the numpy reference\n", failures, n_calls);
    return 1;
  }
  printf("PASS: %u calls bit-exact with the numpy reference\n", n_calls);
  return 0;
}
