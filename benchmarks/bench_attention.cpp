// mor_bench_attention: speed of the depth-masked attention kernels (kernels/varlen_attention,
// kernels/paged_decode) against the ATen/FlashAttention alternatives, on one CUDA GPU.
//
//   build/benchmarks/mor_bench_attention [--quick] [--out report.md] [--json report.json]
//
// Built without the CUDA kernels (MOR_WITH_CUDA off) or run without a GPU, it says so and exits 0.
// Exit status 1 when one of our kernels threw or disagreed with the ATen reference (relative error
// above 5e-2); targets that are missed are reported, not failed.
//
// ## Methodology
//
// Timing. CUDA events on the current stream around each call; `--warmup` untimed calls first
// (module load, handle creation, allocator growth), then `--iters` (at least 20) timed calls
// enqueued back to back; the median is reported (min and max in the JSON). Inputs are random
// normal bf16 (never zeros), scale 1/sqrt(D). Everything is bf16.
//
// Useful FLOPs (design note kernels.md §3.7). Forward: 4·D·Σ_h Σ_q #{keys visible to q}, counted
// exactly from the positions: index-causal (recursion-wise caching, keys = the active queries)
// gives k(k+1)/2 pairs per sequence of k active tokens; position-causal (KV sharing, compacted
// queries over all N keys of the sequence) gives Σ_q (pos_q + 1). Backward counts 2.5× the forward,
// so fwd+bwd = 3.5× forward. Every row of a case is credited with the same useful FLOPs, whatever
// the method actually computes (the masked full-sequence row computes about N²/2 pairs per head and
// sequence, of which only k(k+1)/2 are useful), so TFLOP/s compare time to solution.
//
// Training shapes. Head dim 64 (Hq 15, Hkv 5: SmolLM-360M) and 128 (Hq 16, Hkv 8 by default);
// N in --seq-lens with B = --tokens / N sequences (16384 tokens fills an H100 with B·Hq·tiles CTAs).
// Cases: expert-choice active fractions f in {1, 2/3, 1/3} (k = round(f·N) random sorted
// positions per sequence, the same k for every sequence) and a token-choice-like case (k_b uniform
// in [N/8, N] per sequence). Rows per case:
//   ours, index-causal        varlen_attention_{fwd,bwd}_cuda on the packed [Σk, H, D] tensors.
//   flash SDPA (dense)        at::scaled_dot_product_attention with only the flash backend enabled
//                             (global SDP toggles, restored afterwards), causal, on the same memory
//                             viewed as [B, H, k, D] (expert-choice only: equal k); GQA through
//                             enable_gqa, or K/V expanded outside the timed region when flash
//                             refuses it (the note says which). fwd+bwd through autograd.
//   FA2 varlen (ATen)         at::_flash_attention_forward/_backward with cu_seqlens (the flash
//                             reference of the token-choice case; informative for the others).
//   masked SDPA, full N       the naive alternative: full-length [B, Hq, N, D] tensors (K/V
//                             expanded to Hq heads), a boolean mask visible(i, j) = active_i &&
//                             active_j && j <= i (plus the diagonal, so that inactive rows stay
//                             finite), default SDP backend selection (the note names the backend).
//   mor ATen path             compact_attention_ref on the compacted tensors padded to the longest
//                             sequence, what MOR_ATTENTION=aten runs in the model.
//   ours, position-causal     KV sharing: the same compacted queries over all N keys per sequence
//                             (mask kCausalPos); TFLOP/s on its own useful FLOPs.
//   mor ATen path, KV sharing compact_attention_ref for the same position-causal problem.
// The ratio column is our TFLOP/s over the row's (>1: ours faster) for baselines, and
// position-causal over index-causal TFLOP/s for the position-causal row. Targets: ours/flash
// >= 0.85 (flash = dense SDPA for expert-choice, FA2 varlen for token-choice), pos/index >= 0.85.
// "rel err" is ‖ours - ATen‖ / ‖ATen‖ of the forward output against the mor ATen path.
//
// Decode. R query rows, each at a random depth r in {1, 2, 3} with kv_len = round(L·f_r) minus a
// random 0..block-1 (f = 1, 2/3, 1/3: recursion-wise caches of one request), each row with its own
// blocks of a shuffled pool (random block tables). Achieved bandwidth = (bytes of the K and V rows
// the call must read, Σ kv_len·Hkv·D·2·2, plus q and out) / time, against the device's HBM
// bandwidth measured in the same process with a 1 GiB device-to-device copy (bytes read + bytes
// written over time; a read-only reduction is printed beside it). Target >= 0.75 of the copy
// bandwidth. When one call reads less than 4x the L2 cache, several disjoint copies of the block
// tables/pool are rotated so repeated calls do not hit L2. The gather+SDPA row gathers each row's
// K/V (index_select into [R, Hkv, L_max, D]) and runs SDPA with a key-length mask: the path the
// kernel replaces, for reference.
//
// Compare numbers only within one GPU model; the published H100 figures are in
// ../shared/reference/kernels.md §1.4 (this program does not embed any).

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <CLI/CLI.hpp>
#include <c10/core/GradMode.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "compact_attention/compact_attention.h"
#include "paged_decode/paged_decode.h"
#include "varlen_attention/varlen_attention.h"

#ifdef MOR_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/csrc/autograd/autograd.h>
#endif

namespace {

struct Options {
  std::string out;
  std::string json;
  bool quick = false;
  int warmup = 5;
  int iters = 30;
  int64_t tokens = 16384;
  std::vector<int64_t> seq_lens;
  std::vector<int64_t> head_dims = {64, 128};
  int64_t kv_heads_128 = 8;
  int64_t chunk = 512;
  uint64_t seed = 1234;
  bool no_varlen = false;
  bool no_decode = false;
};

// Markdown report: printed to stdout as it grows and rewritten to --out after every section, so a
// run stopped by a time limit still leaves the finished sections.
class Report {
 public:
  explicit Report(std::string path) : path_(std::move(path)) {}
  void add(const std::string& text) {
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
    md_ += text;
    if (!path_.empty()) {
      std::ofstream f(path_, std::ios::trunc);
      f << md_;
    }
  }

 private:
  std::string path_;
  std::string md_;
};

// JSON records (flat objects), written to --json after every section.
class JsonLog {
 public:
  explicit JsonLog(std::string path) : path_(std::move(path)) {}
  struct Obj {
    std::string body;
    Obj& num(const std::string& k, double v) {
      sep();
      body += quote(k) + ": ";
      if (std::isfinite(v)) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.6g", v);
        body += buf;
      } else {
        body += "null";
      }
      return *this;
    }
    Obj& str(const std::string& k, const std::string& v) {
      sep();
      body += quote(k) + ": " + quote(v);
      return *this;
    }
    void sep() {
      if (!body.empty()) body += ", ";
    }
  };
  static std::string quote(const std::string& s) {
    std::string o = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') {
        o += '\\';
        o += c;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        o += ' ';
      } else {
        o += c;
      }
    }
    return o + "\"";
  }
  void header(Obj o) { header_ = std::move(o); }
  void add(Obj o) { records_.push_back(std::move(o)); }
  void flush() const {
    if (path_.empty()) return;
    std::ofstream f(path_, std::ios::trunc);
    f << "{\"info\": {" << header_.body << "},\n \"records\": [\n";
    for (size_t i = 0; i < records_.size(); ++i) {
      f << "  {" << records_[i].body << "}" << (i + 1 < records_.size() ? ",\n" : "\n");
    }
    f << "]}\n";
  }

 private:
  std::string path_;
  Obj header_;
  std::vector<Obj> records_;
};

[[maybe_unused]] std::string fmt(const char* f, double v) {
  if (!std::isfinite(v)) return "–";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

#ifdef MOR_WITH_CUDA
namespace {

namespace mk = mor::kernels;

#define MOR_CUDA_OK(expr)                                                                        \
  do {                                                                                           \
    const cudaError_t err_ = (expr);                                                             \
    if (err_ != cudaSuccess) throw std::runtime_error(std::string(#expr) + ": " + cudaGetErrorString(err_)); \
  } while (0)

struct Timing {
  double median = NAN, min = NAN, max = NAN;
  int runs = 0;
};

// Owns CUDA events; destroys them on every path.
struct Events {
  std::vector<cudaEvent_t> ev;
  explicit Events(size_t n) : ev(n, nullptr) {
    for (auto& e : ev) MOR_CUDA_OK(cudaEventCreate(&e));
  }
  ~Events() {
    for (auto& e : ev) {
      if (e) cudaEventDestroy(e);
    }
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
};

Timing time_ms(const std::function<void()>& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  MOR_CUDA_OK(cudaDeviceSynchronize());
  MOR_CUDA_OK(cudaGetLastError());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  Events events(2 * static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    MOR_CUDA_OK(cudaEventRecord(events.ev[2 * i], stream));
    fn();
    MOR_CUDA_OK(cudaEventRecord(events.ev[2 * i + 1], stream));
  }
  MOR_CUDA_OK(cudaEventSynchronize(events.ev.back()));
  MOR_CUDA_OK(cudaDeviceSynchronize());
  MOR_CUDA_OK(cudaGetLastError());
  std::vector<double> t(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    float ms = 0.f;
    MOR_CUDA_OK(cudaEventElapsedTime(&ms, events.ev[2 * i], events.ev[2 * i + 1]));
    t[static_cast<size_t>(i)] = ms;
  }
  std::sort(t.begin(), t.end());
  Timing r;
  const size_t n = t.size();
  r.median = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  r.min = t.front();
  r.max = t.back();
  r.runs = iters;
  return r;
}

std::string short_error(const std::exception& e) {
  std::string s = e.what();
  const size_t nl = s.find('\n');
  if (nl != std::string::npos) s = s.substr(0, nl);
  if (s.size() > 140) s = s.substr(0, 137) + "...";
  for (char& c : s) {
    if (c == '|') c = '/';
  }
  return s;
}

// One measured quantity; a thrown exception (unsupported input, out of memory) becomes a message.
struct Meas {
  bool ok = false;
  Timing t;
  std::string err;
};

Meas measure(const Options& o, const std::function<void()>& fn) {
  Meas m;
  try {
    m.t = time_ms(fn, o.warmup, o.iters);
    m.ok = true;
  } catch (const std::exception& e) {
    m.err = short_error(e);
    cudaGetLastError();  // clear a sticky launch error where possible
  }
  return m;
}

double rel_err(const at::Tensor& a, const at::Tensor& ref) {
  const at::Tensor af = a.to(at::kFloat), rf = ref.to(at::kFloat);
  const double den = rf.norm().item<double>();
  const double num = (af - rf).norm().item<double>();
  return den > 0 ? num / den : num;
}

// Enables only the flash SDPA backend while alive; restores the previous toggles.
class FlashOnly {
 public:
  FlashOnly()
      : flash_(ctx().userEnabledFlashSDP()),
        mem_(ctx().userEnabledMemEfficientSDP()),
        math_(ctx().userEnabledMathSDP()),
        cudnn_(ctx().userEnabledCuDNNSDP()) {
    ctx().setSDPUseFlash(true);
    ctx().setSDPUseMemEfficient(false);
    ctx().setSDPUseMath(false);
    ctx().setSDPUseCuDNN(false);
  }
  ~FlashOnly() {
    ctx().setSDPUseFlash(flash_);
    ctx().setSDPUseMemEfficient(mem_);
    ctx().setSDPUseMath(math_);
    ctx().setSDPUseCuDNN(cudnn_);
  }
  FlashOnly(const FlashOnly&) = delete;
  FlashOnly& operator=(const FlashOnly&) = delete;

 private:
  static at::Context& ctx() { return at::globalContext(); }
  bool flash_, mem_, math_, cudnn_;
};

std::string backend_name(int64_t b) {
  switch (static_cast<at::SDPBackend>(b)) {
    case at::SDPBackend::math: return "math";
    case at::SDPBackend::flash_attention: return "flash";
    case at::SDPBackend::efficient_attention: return "mem-efficient";
    case at::SDPBackend::cudnn_attention: return "cuDNN";
    case at::SDPBackend::overrideable: return "overrideable";
    default: return "none";
  }
}

std::string sdp_choice(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                       bool causal, double scale, bool gqa) {
  try {
    return backend_name(at::_fused_sdp_choice(q, k, v, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt,
                                              0.0, causal, scale, gqa));
  } catch (const std::exception&) {
    return "none";
  }
}

std::vector<at::Tensor> grads(const at::Tensor& out, const std::vector<at::Tensor>& inputs, const at::Tensor& dout) {
  return torch::autograd::grad({out}, inputs, {dout});
}

at::TensorOptions cuda_opts(at::ScalarType t) { return at::TensorOptions().dtype(t).device(at::kCUDA); }

at::Tensor randn_bf16(at::IntArrayRef shape) { return at::randn(shape, cuda_opts(at::kFloat)).to(at::kBFloat16); }

// ----------------------------------------------------------------------------------------------
// Training (varlen) benchmark
// ----------------------------------------------------------------------------------------------

struct Shape {
  int64_t d, hq, hkv;
};

// One batch of B sequences of length N with per-sequence active positions, packed on the device.
struct Packed {
  std::string label;
  bool equal = true;   // same active count in every sequence (expert-choice)
  int64_t B = 0, N = 0, total = 0, max_len = 0;
  std::vector<int64_t> lens;
  at::Tensor cu;         // [B+1] int32
  at::Tensor pos;        // [total] int32, original positions
  at::Tensor pad_idx;    // [B*Tmax] int64: padded row -> packed row
  at::Tensor unpad_idx;  // [total] int64: packed row -> padded row b*Tmax + t
  at::Tensor pad_valid;  // [B, Tmax] bool, undefined when every sequence has Tmax entries
  at::Tensor pad_pos;    // [B, Tmax] int64 (padding: N)
  at::Tensor active;     // [B, N] bool
  double pairs_index = 0, pairs_pos = 0;
};

std::vector<int32_t> sorted_sample(std::mt19937_64& rng, int64_t n, int64_t k) {
  std::vector<int32_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  for (int64_t i = 0; i < k; ++i) {
    const int64_t j = i + static_cast<int64_t>(rng() % static_cast<uint64_t>(n - i));
    std::swap(all[static_cast<size_t>(i)], all[static_cast<size_t>(j)]);
  }
  all.resize(static_cast<size_t>(k));
  std::sort(all.begin(), all.end());
  return all;
}

Packed make_packed(std::string label, bool equal, int64_t B, int64_t N, const std::vector<std::vector<int32_t>>& pos) {
  Packed p;
  p.label = std::move(label);
  p.equal = equal;
  p.B = B;
  p.N = N;
  std::vector<int32_t> cu(static_cast<size_t>(B + 1), 0), flat;
  for (int64_t b = 0; b < B; ++b) {
    const auto& s = pos[static_cast<size_t>(b)];
    const int64_t k = static_cast<int64_t>(s.size());
    p.lens.push_back(k);
    p.max_len = std::max(p.max_len, k);
    cu[static_cast<size_t>(b + 1)] = cu[static_cast<size_t>(b)] + static_cast<int32_t>(k);
    flat.insert(flat.end(), s.begin(), s.end());
    p.pairs_index += 0.5 * static_cast<double>(k) * static_cast<double>(k + 1);
    for (int32_t x : s) p.pairs_pos += static_cast<double>(x) + 1.0;
  }
  p.total = static_cast<int64_t>(flat.size());
  const int64_t T = p.max_len;
  std::vector<int64_t> pad_idx(static_cast<size_t>(B * T)), unpad_idx, pad_pos(static_cast<size_t>(B * T));
  std::vector<uint8_t> valid(static_cast<size_t>(B * T)), active(static_cast<size_t>(B * N), 0);
  bool all_valid = true;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t base = cu[static_cast<size_t>(b)], k = p.lens[static_cast<size_t>(b)];
    for (int64_t t = 0; t < T; ++t) {
      const size_t i = static_cast<size_t>(b * T + t);
      const bool v = t < k;
      all_valid = all_valid && v;
      pad_idx[i] = v ? base + t : (k > 0 ? base : 0);
      valid[i] = v;
      pad_pos[i] = v ? pos[static_cast<size_t>(b)][static_cast<size_t>(t)] : N;
      if (v) unpad_idx.push_back(b * T + t);
    }
    for (int32_t x : pos[static_cast<size_t>(b)]) active[static_cast<size_t>(b * N + x)] = 1;
  }
  const auto i32 = at::TensorOptions().dtype(at::kInt);
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  p.cu = at::tensor(cu, i32).to(at::kCUDA);
  p.pos = at::tensor(flat, i32).to(at::kCUDA);
  p.pad_idx = at::tensor(pad_idx, i64).to(at::kCUDA);
  p.unpad_idx = at::tensor(unpad_idx, i64).to(at::kCUDA);
  p.pad_pos = at::tensor(pad_pos, i64).view({B, T}).to(at::kCUDA);
  if (!all_valid) {
    p.pad_valid = at::tensor(std::vector<int64_t>(valid.begin(), valid.end()), i64).view({B, T}).to(at::kBool).to(at::kCUDA);
  }
  p.active = at::tensor(std::vector<int64_t>(active.begin(), active.end()), i64).view({B, N}).to(at::kBool).to(at::kCUDA);
  return p;
}

// [total, H, D] -> [B, H, Tmax, D] (padding rows repeat a real row; they are masked out).
at::Tensor to_padded(const Packed& p, const at::Tensor& x) {
  return x.index_select(0, p.pad_idx).view({p.B, p.max_len, x.size(1), x.size(2)}).transpose(1, 2);
}
// [B, H, Tmax, D] -> [total, H, D]
at::Tensor from_padded(const Packed& p, const at::Tensor& y) {
  return y.transpose(1, 2).reshape({p.B * p.max_len, y.size(1), y.size(3)}).index_select(0, p.unpad_idx);
}

struct Row {
  std::string method;
  double flops = 0;  // useful forward FLOPs of this row's problem
  Meas fwd, fb;
  double ratio_fwd = NAN, ratio_fb = NAN;
  double err = NAN;
  std::string note;
};

double tflops(double flops, const Meas& m) { return m.ok ? flops / (m.t.median * 1e-3) / 1e12 : NAN; }

std::string ms_cell(const Meas& m) { return m.ok ? fmt("%.3f", m.t.median) : "error: " + m.err; }

struct Summary {
  Shape s;
  int64_t B, N;
  std::string label;
  double ours_fwd, ours_fb, ref_fwd, ref_fb, pos_fwd, pos_fb, masked_speedup_fb, aten_speedup_fb;
  std::string ref_name;
};

struct State {
  State(Options o) : opt(std::move(o)), report(opt.out), json(opt.json) {}
  Options opt;
  Report report;
  JsonLog json;
  bool our_failure = false;
  std::vector<Summary> summaries;
  double copy_gbs = NAN;
};

void varlen_case(State& st, const Shape& s, const Packed& p, std::vector<Row>& rows_out) {
  const Options& o = st.opt;
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.d));
  const double flops = 4.0 * static_cast<double>(s.d * s.hq) * p.pairs_index;
  const double flops_pos = 4.0 * static_cast<double>(s.d * s.hq) * p.pairs_pos;
  const int64_t g = s.hq / s.hkv;

  const at::Tensor q = randn_bf16({p.total, s.hq, s.d});
  const at::Tensor k = randn_bf16({p.total, s.hkv, s.d});
  const at::Tensor v = randn_bf16({p.total, s.hkv, s.d});
  const at::Tensor dout = randn_bf16({p.total, s.hq, s.d});

  mk::VarlenArgs ai;
  ai.cu_q = p.cu;
  ai.cu_k = p.cu;
  ai.max_q = p.max_len;
  ai.max_k = p.max_len;
  ai.mask = mk::Mask::kCausalIndex;
  ai.scale = scale;

  // The mor ATen path on the padded compacted tensors (also the error reference).
  const at::Tensor qp = to_padded(p, q), kp = to_padded(p, k), vp = to_padded(p, v);
  at::Tensor ref_out;
  std::string ref_err;
  try {
    c10::NoGradGuard ng;
    ref_out = from_padded(p, mk::compact_attention_ref(qp, kp, vp, p.pad_pos, p.pad_pos, p.pad_valid, p.pad_valid, {},
                                                       {}, false, scale));
  } catch (const std::exception& e) {
    ref_err = short_error(e);
  }

  // (a) ours, index-causal.
  Row ours{"ours, index-causal (varlen)", flops, {}, {}, NAN, NAN, NAN, ""};
  if (!mk::varlen_attention_cuda_supports(q, k)) {
    ours.fwd.err = ours.fb.err = "varlen_attention_cuda_supports: false";
  } else {
    ours.fwd = measure(o, [&] { (void)mk::varlen_attention_fwd_cuda(q, k, v, ai); });
    ours.fb = measure(o, [&] {
      const mk::VarlenOut r = mk::varlen_attention_fwd_cuda(q, k, v, ai);
      (void)mk::varlen_attention_bwd_cuda(dout, q, k, v, r.out, r.lse, ai);
    });
    try {
      if (ref_out.defined()) ours.err = rel_err(mk::varlen_attention_fwd_cuda(q, k, v, ai).out, ref_out);
    } catch (const std::exception& e) {
      ours.note = "check: " + short_error(e);
    }
  }
  if (!ours.fwd.ok || !ours.fb.ok || !(ours.err <= 5e-2)) st.our_failure = true;
  if (ours.err > 5e-2) ours.note = "WRONG (rel err above 5e-2)";
  if (!ref_err.empty()) ours.note += (ours.note.empty() ? "" : "; ") + std::string("ATen reference: ") + ref_err;

  std::vector<Row> rows;
  rows.push_back(ours);

  // (b) flash SDPA, dense [B, H, k, D] causal (equal k only).
  if (p.equal) {
    Row r{"flash SDPA, dense [B,H,k,D] causal", flops, {}, {}, NAN, NAN, NAN, ""};
    const int64_t kk = p.max_len;
    const at::Tensor q4 = q.view({p.B, kk, s.hq, s.d}).transpose(1, 2);
    at::Tensor k4 = k.view({p.B, kk, s.hkv, s.d}).transpose(1, 2);
    at::Tensor v4 = v.view({p.B, kk, s.hkv, s.d}).transpose(1, 2);
    const at::Tensor dout4 = dout.view({p.B, kk, s.hq, s.d}).transpose(1, 2);
    FlashOnly flash_only;
    bool gqa = g > 1;
    if (gqa) {
      try {
        c10::NoGradGuard ng;
        (void)at::scaled_dot_product_attention(q4, k4, v4, {}, 0.0, true, scale, true);
        r.note = "enable_gqa";
      } catch (const std::exception&) {
        gqa = false;
        k4 = k4.repeat_interleave(g, 1);
        v4 = v4.repeat_interleave(g, 1);
        r.note = "K/V expanded to Hq heads (flash refused enable_gqa)";
      }
    }
    r.fwd = measure(o, [&] {
      c10::NoGradGuard ng;
      (void)at::scaled_dot_product_attention(q4, k4, v4, {}, 0.0, true, scale, gqa);
    });
    const at::Tensor qL = q4.detach().requires_grad_(true);
    const at::Tensor kL = k4.detach().requires_grad_(true);
    const at::Tensor vL = v4.detach().requires_grad_(true);
    r.fb = measure(o, [&] {
      const at::Tensor out = at::scaled_dot_product_attention(qL, kL, vL, {}, 0.0, true, scale, gqa);
      (void)grads(out, {qL, kL, vL}, dout4);
    });
    try {
      c10::NoGradGuard ng;
      if (ref_out.defined()) {
        const at::Tensor out = at::scaled_dot_product_attention(q4, k4, v4, {}, 0.0, true, scale, gqa);
        r.err = rel_err(out.transpose(1, 2).reshape({p.total, s.hq, s.d}), ref_out);
      }
    } catch (const std::exception&) {
    }
    rows.push_back(r);
  }

  // (b') FA2 varlen through the ATen op (cu_seqlens, native GQA).
  {
    Row r{"FA2 varlen (at::_flash_attention_forward)", flops, {}, {}, NAN, NAN, NAN, "cu_seqlens, native GQA"};
    r.fwd = measure(o, [&] {
      (void)at::_flash_attention_forward(q, k, v, p.cu, p.cu, p.max_len, p.max_len, 0.0, true, false, scale);
    });
    r.fb = measure(o, [&] {
      auto f = at::_flash_attention_forward(q, k, v, p.cu, p.cu, p.max_len, p.max_len, 0.0, true, false, scale);
      (void)at::_flash_attention_backward(dout, q, k, v, std::get<0>(f), std::get<1>(f), p.cu, p.cu, p.max_len,
                                          p.max_len, 0.0, true, std::get<2>(f), std::get<3>(f), scale);
    });
    try {
      if (ref_out.defined() && r.fwd.ok) {
        auto f = at::_flash_attention_forward(q, k, v, p.cu, p.cu, p.max_len, p.max_len, 0.0, true, false, scale);
        r.err = rel_err(std::get<0>(f), ref_out);
      }
    } catch (const std::exception&) {
    }
    rows.push_back(r);
  }

  // (c) masked SDPA over the full sequence (the naive alternative).
  {
    Row r{"masked SDPA, full N (naive)", flops, {}, {}, NAN, NAN, NAN, ""};
    try {
      const at::Tensor qf = randn_bf16({p.B, s.hq, p.N, s.d});
      const at::Tensor kf = randn_bf16({p.B, s.hq, p.N, s.d});
      const at::Tensor vf = randn_bf16({p.B, s.hq, p.N, s.d});
      const at::Tensor df = randn_bf16({p.B, s.hq, p.N, s.d});
      const at::Tensor tri = at::ones({p.N, p.N}, cuda_opts(at::kBool)).tril();
      const at::Tensor eye = at::eye(p.N, cuda_opts(at::kBool));
      const at::Tensor both = p.active.unsqueeze(2).logical_and(p.active.unsqueeze(1));  // [B, N, N]
      const at::Tensor mask = both.logical_and(tri).logical_or(eye).unsqueeze(1);        // [B, 1, N, N]
      r.note = "backend " + sdp_choice(qf, kf, vf, mask, false, scale, false) + ", K/V expanded";
      r.fwd = measure(o, [&] {
        c10::NoGradGuard ng;
        (void)at::scaled_dot_product_attention(qf, kf, vf, mask, 0.0, false, scale);
      });
      const at::Tensor qL = qf.detach().requires_grad_(true);
      const at::Tensor kL = kf.detach().requires_grad_(true);
      const at::Tensor vL = vf.detach().requires_grad_(true);
      r.fb = measure(o, [&] {
        const at::Tensor out = at::scaled_dot_product_attention(qL, kL, vL, mask, 0.0, false, scale);
        (void)grads(out, {qL, kL, vL}, df);
      });
    } catch (const std::exception& e) {
      r.fwd.err = r.fb.err = short_error(e);
    }
    rows.push_back(r);
  }

  // (e) the mor ATen path (MOR_ATTENTION=aten): compact_attention_ref on the padded tensors.
  {
    Row r{"mor ATen path (compact_attention_ref)", flops, {}, {}, NAN, NAN, NAN, ""};
    const at::Tensor dmask = at::ones({p.B, 1, p.max_len, p.max_len}, cuda_opts(at::kBool));
    r.note = "backend " + sdp_choice(qp, kp, vp, dmask, false, scale, g > 1) + ", padded to " + std::to_string(p.max_len);
    r.fwd = measure(o, [&] {
      c10::NoGradGuard ng;
      (void)mk::compact_attention_ref(qp, kp, vp, p.pad_pos, p.pad_pos, p.pad_valid, p.pad_valid, {}, {}, false, scale);
    });
    const at::Tensor qL = qp.detach().requires_grad_(true);
    const at::Tensor kL = kp.detach().requires_grad_(true);
    const at::Tensor vL = vp.detach().requires_grad_(true);
    const at::Tensor dp = to_padded(p, dout);
    r.fb = measure(o, [&] {
      const at::Tensor out =
          mk::compact_attention_ref(qL, kL, vL, p.pad_pos, p.pad_pos, p.pad_valid, p.pad_valid, {}, {}, false, scale);
      (void)grads(out, {qL, kL, vL}, dp);
    });
    rows.push_back(r);
  }

  // (d) ours, position-causal (KV sharing): the compacted queries over all N keys.
  {
    Row r{"ours, position-causal (KV sharing, N keys)", flops_pos, {}, {}, NAN, NAN, NAN, ""};
    Row ra{"mor ATen path, KV sharing", flops_pos, {}, {}, NAN, NAN, NAN, ""};
    const at::Tensor kfull = randn_bf16({p.B * p.N, s.hkv, s.d});
    const at::Tensor vfull = randn_bf16({p.B * p.N, s.hkv, s.d});
    const at::Tensor cu_k = (at::arange(p.B + 1, cuda_opts(at::kLong)) * p.N).to(at::kInt);
    const at::Tensor kpos_b = at::arange(p.N, cuda_opts(at::kLong)).unsqueeze(0).expand({p.B, p.N}).contiguous();
    const at::Tensor kpos = kpos_b.reshape({-1}).to(at::kInt);
    mk::VarlenArgs ap;
    ap.cu_q = p.cu;
    ap.cu_k = cu_k;
    ap.q_pos = p.pos;
    ap.k_pos = kpos;
    ap.max_q = p.max_len;
    ap.max_k = p.N;
    ap.mask = mk::Mask::kCausalPos;
    ap.scale = scale;
    const at::Tensor kf4 = kfull.view({p.B, p.N, s.hkv, s.d}).transpose(1, 2);
    const at::Tensor vf4 = vfull.view({p.B, p.N, s.hkv, s.d}).transpose(1, 2);
    at::Tensor pos_ref;
    try {
      c10::NoGradGuard ng;
      pos_ref = from_padded(p, mk::compact_attention_ref(qp, kf4, vf4, p.pad_pos, kpos_b, p.pad_valid, {}, {}, {},
                                                         false, scale));
    } catch (const std::exception& e) {
      r.note = "ATen reference: " + short_error(e);
    }
    if (!mk::varlen_attention_cuda_supports(q, kfull)) {
      r.fwd.err = r.fb.err = "varlen_attention_cuda_supports: false";
    } else {
      r.fwd = measure(o, [&] { (void)mk::varlen_attention_fwd_cuda(q, kfull, vfull, ap); });
      r.fb = measure(o, [&] {
        const mk::VarlenOut x = mk::varlen_attention_fwd_cuda(q, kfull, vfull, ap);
        (void)mk::varlen_attention_bwd_cuda(dout, q, kfull, vfull, x.out, x.lse, ap);
      });
      try {
        if (pos_ref.defined()) r.err = rel_err(mk::varlen_attention_fwd_cuda(q, kfull, vfull, ap).out, pos_ref);
      } catch (const std::exception& e) {
        r.note = "check: " + short_error(e);
      }
    }
    if (!r.fwd.ok || !r.fb.ok || !(r.err <= 5e-2)) st.our_failure = true;
    if (r.err > 5e-2) r.note = "WRONG (rel err above 5e-2)";
    r.ratio_fwd = tflops(flops_pos, r.fwd) / tflops(flops, ours.fwd);
    r.ratio_fb = tflops(flops_pos, r.fb) / tflops(flops, ours.fb);
    rows.push_back(r);

    ra.note = "backend " + sdp_choice(qp, kf4, vf4, at::ones({p.B, 1, p.max_len, p.N}, cuda_opts(at::kBool)), false,
                                      scale, g > 1);
    ra.fwd = measure(o, [&] {
      c10::NoGradGuard ng;
      (void)mk::compact_attention_ref(qp, kf4, vf4, p.pad_pos, kpos_b, p.pad_valid, {}, {}, {}, false, scale);
    });
    const at::Tensor qL = qp.detach().requires_grad_(true);
    const at::Tensor kL = kf4.detach().requires_grad_(true);
    const at::Tensor vL = vf4.detach().requires_grad_(true);
    const at::Tensor dp = to_padded(p, dout);
    ra.fb = measure(o, [&] {
      const at::Tensor out = mk::compact_attention_ref(qL, kL, vL, p.pad_pos, kpos_b, p.pad_valid, {}, {}, {}, false, scale);
      (void)grads(out, {qL, kL, vL}, dp);
    });
    const Row& pos_ours = rows.back();
    ra.ratio_fwd = tflops(flops_pos, pos_ours.fwd) / tflops(flops_pos, ra.fwd);
    ra.ratio_fb = tflops(flops_pos, pos_ours.fb) / tflops(flops_pos, ra.fb);
    rows.push_back(ra);
  }

  // Ratios of the baselines: our TFLOP/s over theirs (same useful FLOPs).
  for (Row& r : rows) {
    if (r.method.rfind("ours", 0) == 0 || r.method == "mor ATen path, KV sharing") continue;
    r.ratio_fwd = tflops(flops, ours.fwd) / tflops(flops, r.fwd);
    r.ratio_fb = tflops(flops, ours.fb) / tflops(flops, r.fb);
  }
  rows_out = rows;
}

void varlen_section(State& st, const Shape& s, int64_t N) {
  const Options& o = st.opt;
  const int64_t B = std::max<int64_t>(1, o.tokens / N);
  std::mt19937_64 rng(o.seed ^ static_cast<uint64_t>(N * 1000003 + s.d));
  std::vector<Packed> cases;
  const std::vector<std::pair<std::string, double>> fracs = {{"EC f=1", 1.0}, {"EC f=2/3", 2.0 / 3.0}, {"EC f=1/3", 1.0 / 3.0}};
  for (const auto& [label, f] : fracs) {
    const int64_t k = std::max<int64_t>(1, std::llround(f * static_cast<double>(N)));
    std::vector<std::vector<int32_t>> pos;
    for (int64_t b = 0; b < B; ++b) pos.push_back(sorted_sample(rng, N, k));
    cases.push_back(make_packed(label, true, B, N, pos));
  }
  {
    std::vector<std::vector<int32_t>> pos;
    const int64_t lo = std::max<int64_t>(1, N / 8);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t k = lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(N - lo + 1));
      pos.push_back(sorted_sample(rng, N, k));
    }
    cases.push_back(make_packed("TC-like (k_b ~ U[N/8, N])", false, B, N, pos));
  }

  std::ostringstream md;
  md << "\n### D " << s.d << " (Hq " << s.hq << ", Hkv " << s.hkv << "), N " << N << ", B " << B << "\n\n";
  md << "| case | Σk | method | useful GFLOP fwd | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | ratio fwd | "
        "ratio fwd+bwd | rel err | note |\n";
  md << "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const Packed& p : cases) {
    std::vector<Row> rows;
    try {
      varlen_case(st, s, p, rows);
    } catch (const std::exception& e) {
      st.our_failure = true;
      md << "| " << p.label << " | " << p.total << " | (case failed) | | | | | | | | | " << short_error(e) << " |\n";
      continue;
    }
    for (const Row& r : rows) {
      md << "| " << p.label << " | " << p.total << " | " << r.method << " | " << fmt("%.2f", r.flops / 1e9) << " | "
         << ms_cell(r.fwd) << " | " << fmt("%.1f", tflops(r.flops, r.fwd)) << " | " << ms_cell(r.fb) << " | "
         << fmt("%.1f", tflops(3.5 * r.flops, r.fb)) << " | " << fmt("%.2f", r.ratio_fwd) << " | "
         << fmt("%.2f", r.ratio_fb) << " | " << fmt("%.1e", r.err) << " | " << r.note << " |\n";
      st.json.add(JsonLog::Obj{}
                      .str("section", "varlen")
                      .num("head_dim", static_cast<double>(s.d))
                      .num("hq", static_cast<double>(s.hq))
                      .num("hkv", static_cast<double>(s.hkv))
                      .num("seq_len", static_cast<double>(N))
                      .num("batch", static_cast<double>(B))
                      .str("case", p.label)
                      .num("active_tokens", static_cast<double>(p.total))
                      .str("method", r.method)
                      .num("useful_flops_fwd", r.flops)
                      .num("fwd_ms", r.fwd.ok ? r.fwd.t.median : NAN)
                      .num("fwd_ms_min", r.fwd.ok ? r.fwd.t.min : NAN)
                      .num("fwd_ms_max", r.fwd.ok ? r.fwd.t.max : NAN)
                      .num("fwd_tflops", tflops(r.flops, r.fwd))
                      .num("fwdbwd_ms", r.fb.ok ? r.fb.t.median : NAN)
                      .num("fwdbwd_ms_min", r.fb.ok ? r.fb.t.min : NAN)
                      .num("fwdbwd_ms_max", r.fb.ok ? r.fb.t.max : NAN)
                      .num("fwdbwd_tflops", tflops(3.5 * r.flops, r.fb))
                      .num("ratio_fwd", r.ratio_fwd)
                      .num("ratio_fwdbwd", r.ratio_fb)
                      .num("rel_err", r.err)
                      .str("note", r.note + (r.fwd.ok ? "" : " fwd: " + r.fwd.err) + (r.fb.ok ? "" : " fwd+bwd: " + r.fb.err)));
    }
    // Summary line of the case.
    auto find = [&](const std::string& name) -> const Row* {
      for (const Row& r : rows) {
        if (r.method.rfind(name, 0) == 0) return &r;
      }
      return nullptr;
    };
    const Row* ours = find("ours, index");
    const Row* ref = p.equal ? find("flash SDPA") : find("FA2 varlen");
    const Row* pos = find("ours, position");
    const Row* masked = find("masked SDPA");
    const Row* aten = find("mor ATen path (");
    Summary sm{s, B, N, p.label, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, ref ? ref->method : "–"};
    if (ours) {
      sm.ours_fwd = tflops(ours->flops, ours->fwd);
      sm.ours_fb = tflops(3.5 * ours->flops, ours->fb);
    }
    if (ref) {
      sm.ref_fwd = tflops(ref->flops, ref->fwd);
      sm.ref_fb = tflops(3.5 * ref->flops, ref->fb);
    }
    if (pos) {
      sm.pos_fwd = tflops(pos->flops, pos->fwd);
      sm.pos_fb = tflops(3.5 * pos->flops, pos->fb);
    }
    if (masked) sm.masked_speedup_fb = masked->ratio_fb;
    if (aten) sm.aten_speedup_fb = aten->ratio_fb;
    st.summaries.push_back(sm);
  }
  st.report.add(md.str());
  st.json.flush();
}

std::string target_mark(double ratio, double target) {
  if (!std::isfinite(ratio)) return "–";
  return fmt("%.2f", ratio) + (ratio >= target ? " ✓" : " ✗");
}

void varlen_summary(State& st) {
  std::ostringstream md;
  md << "\n### Summary (training kernel)\n\n"
        "ours/flash: our TFLOP/s over flash's at the same compacted shape (flash = dense SDPA for expert-choice, "
        "FA2 varlen for token-choice), target >= 0.85; pos/index: position-causal over index-causal TFLOP/s, target "
        ">= 0.85; vs masked / vs ATen: fwd+bwd speed-up over the masked full-sequence SDPA and over the mor ATen path.\n\n"
        "| D | N | B | case | ours fwd TFLOP/s | flash fwd | ours/flash fwd | ours fwd+bwd | flash fwd+bwd | "
        "ours/flash fwd+bwd | pos/index fwd | pos/index fwd+bwd | vs masked | vs ATen |\n"
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Summary& s : st.summaries) {
    md << "| " << s.s.d << " | " << s.N << " | " << s.B << " | " << s.label << " | " << fmt("%.1f", s.ours_fwd) << " | "
       << fmt("%.1f", s.ref_fwd) << " | " << target_mark(s.ours_fwd / s.ref_fwd, 0.85) << " | "
       << fmt("%.1f", s.ours_fb) << " | " << fmt("%.1f", s.ref_fb) << " | " << target_mark(s.ours_fb / s.ref_fb, 0.85)
       << " | " << target_mark(s.pos_fwd / s.ours_fwd, 0.85) << " | " << target_mark(s.pos_fb / s.ours_fb, 0.85)
       << " | " << fmt("%.2fx", s.masked_speedup_fb) << " | " << fmt("%.2fx", s.aten_speedup_fb) << " |\n";
  }
  st.report.add(md.str());
}

// ----------------------------------------------------------------------------------------------
// Bandwidth and decode benchmark
// ----------------------------------------------------------------------------------------------

void bandwidth_section(State& st) {
  const Options& o = st.opt;
  std::ostringstream md;
  md << "\n## HBM bandwidth (same process)\n\n| measurement | bytes moved | ms | GB/s |\n|---|---:|---:|---:|\n";
  try {
    const int64_t n = int64_t{1} << 29;  // 1 GiB of bf16
    const at::Tensor src = at::rand({n}, cuda_opts(at::kFloat)).to(at::kBFloat16);
    at::Tensor dst = at::empty_like(src);
    const double bytes = static_cast<double>(n) * 2.0;
    const Meas copy = measure(o, [&] { dst.copy_(src); });
    if (copy.ok) st.copy_gbs = 2.0 * bytes / (copy.t.median * 1e-3) / 1e9;
    md << "| device-to-device copy, 1 GiB (read + write) | " << fmt("%.0f", 2.0 * bytes) << " | " << ms_cell(copy)
       << " | " << fmt("%.0f", st.copy_gbs) << " |\n";
    const Meas rd = measure(o, [&] { (void)src.sum(at::kFloat); });
    const double read_gbs = rd.ok ? bytes / (rd.t.median * 1e-3) / 1e9 : NAN;
    md << "| read-only reduction (sum), 1 GiB | " << fmt("%.0f", bytes) << " | " << ms_cell(rd) << " | "
       << fmt("%.0f", read_gbs) << " |\n";
    st.json.add(JsonLog::Obj{}.str("section", "bandwidth").num("copy_gbs", st.copy_gbs).num("read_sum_gbs", read_gbs));
  } catch (const std::exception& e) {
    md << "| (failed) | | | " << short_error(e) << " |\n";
  }
  st.report.add(md.str());
  st.json.flush();
}

struct DecodeShape {
  int64_t d, hq, hkv, rows, max_len, block;
};

void decode_row(State& st, const DecodeShape& ds, int64_t l2_bytes, std::ostringstream& md) {
  const Options& o = st.opt;
  std::mt19937_64 rng(o.seed ^ static_cast<uint64_t>(ds.rows * 7919 + ds.max_len * 31 + ds.block + ds.d));
  const double fr[3] = {1.0, 2.0 / 3.0, 1.0 / 3.0};
  std::vector<int32_t> kv_len(static_cast<size_t>(ds.rows));
  std::vector<int64_t> nblocks(static_cast<size_t>(ds.rows));
  int64_t max_kv = 0, sum_kv = 0, sum_blocks = 0;
  int depth_count[3] = {0, 0, 0};
  for (int64_t r = 0; r < ds.rows; ++r) {
    const int depth = static_cast<int>(rng() % 3);
    ++depth_count[depth];
    const int64_t jitter = static_cast<int64_t>(rng() % static_cast<uint64_t>(ds.block));
    const int64_t len = std::max<int64_t>(1, std::llround(static_cast<double>(ds.max_len) * fr[depth]) - jitter);
    kv_len[static_cast<size_t>(r)] = static_cast<int32_t>(len);
    nblocks[static_cast<size_t>(r)] = (len + ds.block - 1) / ds.block;
    max_kv = std::max(max_kv, len);
    sum_kv += len;
    sum_blocks += nblocks[static_cast<size_t>(r)];
  }
  const int64_t max_blocks = (max_kv + ds.block - 1) / ds.block;
  const double elt = 2.0;  // bf16
  const double kv_bytes = static_cast<double>(sum_kv) * static_cast<double>(ds.hkv * ds.d) * 2.0 * elt;
  const double qo_bytes = static_cast<double>(ds.rows * ds.hq * ds.d) * 2.0 * elt;
  const double bytes = kv_bytes + qo_bytes;
  const int64_t copies =
      std::clamp<int64_t>(static_cast<int64_t>(std::ceil(4.0 * static_cast<double>(l2_bytes) / kv_bytes)), 1, 8);
  const int64_t num_blocks = copies * sum_blocks + 1;

  std::vector<int32_t> perm(static_cast<size_t>(num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const auto i32 = at::TensorOptions().dtype(at::kInt);
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  std::vector<at::Tensor> tables, gather_idx;
  size_t next = 0;
  for (int64_t c = 0; c < copies; ++c) {
    std::vector<int32_t> bt(static_cast<size_t>(ds.rows * max_blocks), 0);
    std::vector<int64_t> idx(static_cast<size_t>(ds.rows * max_kv), 0);
    for (int64_t r = 0; r < ds.rows; ++r) {
      for (int64_t j = 0; j < nblocks[static_cast<size_t>(r)]; ++j) bt[static_cast<size_t>(r * max_blocks + j)] = perm[next++];
      for (int64_t t = 0; t < kv_len[static_cast<size_t>(r)]; ++t) {
        idx[static_cast<size_t>(r * max_kv + t)] =
            static_cast<int64_t>(bt[static_cast<size_t>(r * max_blocks + t / ds.block)]) * ds.block + t % ds.block;
      }
    }
    tables.push_back(at::tensor(bt, i32).view({ds.rows, max_blocks}).to(at::kCUDA));
    gather_idx.push_back(at::tensor(idx, i64).to(at::kCUDA));
  }
  const at::Tensor lens = at::tensor(kv_len, i32).to(at::kCUDA);
  const at::Tensor key_mask =
      (at::arange(max_kv, cuda_opts(at::kInt)).unsqueeze(0) < lens.unsqueeze(1)).view({ds.rows, 1, 1, max_kv});
  const at::Tensor k_pool = randn_bf16({num_blocks, ds.block, ds.hkv, ds.d});
  const at::Tensor v_pool = randn_bf16({num_blocks, ds.block, ds.hkv, ds.d});
  const at::Tensor q = randn_bf16({ds.rows, ds.hq, ds.d});
  const double scale = 1.0 / std::sqrt(static_cast<double>(ds.d));
  const at::Tensor k_flat = k_pool.view({num_blocks * ds.block, ds.hkv, ds.d});
  const at::Tensor v_flat = v_pool.view({num_blocks * ds.block, ds.hkv, ds.d});

  auto gather_sdpa = [&](int64_t c) {
    c10::NoGradGuard ng;
    const at::Tensor kk = k_flat.index_select(0, gather_idx[static_cast<size_t>(c)]).view({ds.rows, max_kv, ds.hkv, ds.d}).transpose(1, 2);
    const at::Tensor vv = v_flat.index_select(0, gather_idx[static_cast<size_t>(c)]).view({ds.rows, max_kv, ds.hkv, ds.d}).transpose(1, 2);
    return at::scaled_dot_product_attention(q.unsqueeze(2), kk, vv, key_mask, 0.0, false, scale, ds.hq != ds.hkv)
        .squeeze(2);
  };

  Meas ours, gath;
  double err = NAN;
  std::string note;
  if (!mk::paged_decode_cuda_supports(q, k_pool)) {
    ours.err = "paged_decode_cuda_supports: false";
  } else {
    int64_t c = 0;
    ours = measure(o, [&] {
      (void)mk::paged_decode_cuda(q, k_pool, v_pool, tables[static_cast<size_t>(c)], lens, max_kv, scale, o.chunk);
      c = (c + 1) % copies;
    });
  }
  {
    int64_t c = 0;
    gath = measure(o, [&] {
      (void)gather_sdpa(c);
      c = (c + 1) % copies;
    });
  }
  try {
    const at::Tensor ref = gather_sdpa(0);
    if (ours.ok) err = rel_err(mk::paged_decode_cuda(q, k_pool, v_pool, tables[0], lens, max_kv, scale, o.chunk).out, ref);
  } catch (const std::exception& e) {
    note = "check: " + short_error(e);
  }
  if (!ours.ok || !(err <= 5e-2)) st.our_failure = true;
  if (err > 5e-2) note = "WRONG (rel err above 5e-2)";
  const std::string backend =
      sdp_choice(q.unsqueeze(2), at::empty({ds.rows, ds.hkv, max_kv, ds.d}, cuda_opts(at::kBFloat16)),
                 at::empty({ds.rows, ds.hkv, max_kv, ds.d}, cuda_opts(at::kBFloat16)), key_mask, false, scale,
                 ds.hq != ds.hkv);
  const double ours_gbs = ours.ok ? bytes / (ours.t.median * 1e-3) / 1e9 : NAN;
  const double gath_gbs = gath.ok ? bytes / (gath.t.median * 1e-3) / 1e9 : NAN;
  const double frac = ours_gbs / st.copy_gbs;
  const double speedup = gath.ok && ours.ok ? gath.t.median / ours.t.median : NAN;
  md << "| " << ds.d << " / " << ds.hq << " / " << ds.hkv << " | " << ds.rows << " (" << depth_count[0] << "/"
     << depth_count[1] << "/" << depth_count[2] << ") | " << ds.max_len << " | " << ds.block << " | " << sum_kv << " | "
     << fmt("%.1f", bytes / 1e6) << " | " << copies << " | " << ms_cell(ours) << " | " << fmt("%.0f", ours_gbs) << " | "
     << target_mark(frac, 0.75) << " | " << ms_cell(gath) << " (" << backend << ") | " << fmt("%.0f", gath_gbs) << " | "
     << fmt("%.2fx", speedup) << " | " << fmt("%.1e", err) << " | " << note << " |\n";
  st.json.add(JsonLog::Obj{}
                  .str("section", "decode")
                  .num("head_dim", static_cast<double>(ds.d))
                  .num("hq", static_cast<double>(ds.hq))
                  .num("hkv", static_cast<double>(ds.hkv))
                  .num("rows", static_cast<double>(ds.rows))
                  .num("max_len", static_cast<double>(ds.max_len))
                  .num("block_size", static_cast<double>(ds.block))
                  .num("sum_kv_len", static_cast<double>(sum_kv))
                  .num("bytes", bytes)
                  .num("ours_ms", ours.ok ? ours.t.median : NAN)
                  .num("ours_gbs", ours_gbs)
                  .num("ours_frac_of_copy_bw", frac)
                  .num("gather_sdpa_ms", gath.ok ? gath.t.median : NAN)
                  .num("gather_sdpa_gbs", gath_gbs)
                  .str("gather_sdpa_backend", backend)
                  .num("rel_err", err)
                  .str("note", note + (ours.ok ? "" : " ours: " + ours.err) + (gath.ok ? "" : " gather: " + gath.err)));
}

void decode_section(State& st, int64_t l2_bytes) {
  const Options& o = st.opt;
  std::vector<DecodeShape> shapes;
  if (o.quick) {
    shapes = {{64, 15, 5, 128, 4096, 16}, {64, 15, 5, 128, 4096, 64}, {128, 16, o.kv_heads_128, 64, 8192, 64}};
  } else {
    shapes = {{64, 15, 5, 256, 1024, 16}, {64, 15, 5, 128, 2048, 64}, {64, 15, 5, 128, 4096, 16},
              {64, 15, 5, 128, 4096, 64}, {64, 15, 5, 64, 8192, 16},  {128, 16, o.kv_heads_128, 128, 4096, 64},
              {128, 16, o.kv_heads_128, 64, 8192, 16}};
  }
  std::ostringstream md;
  md << "\n## Paged decode (kernels/paged_decode, chunk " << o.chunk << ")\n\n"
     << "Rows at depths 1/2/3 (counts in brackets) with kv_len = round(L·f_r) - U[0, block), f = 1, 2/3, 1/3. "
        "Bytes = K+V rows read + q + out. \"of copy BW\": achieved over the 1 GiB copy bandwidth above, target >= 0.75.\n\n"
     << "| D / Hq / Hkv | rows | L | block | Σ kv_len | MB | copies | ours ms | ours GB/s | of copy BW | "
        "gather+SDPA ms | gather+SDPA GB/s | speed-up | rel err | note |\n"
     << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|\n";
  for (const DecodeShape& ds : shapes) {
    try {
      decode_row(st, ds, l2_bytes, md);
    } catch (const std::exception& e) {
      st.our_failure = true;
      md << "| " << ds.d << " / " << ds.hq << " / " << ds.hkv << " | " << ds.rows << " | " << ds.max_len << " | "
         << ds.block << " | | | | error | | | | | | | " << short_error(e) << " |\n";
    }
  }
  st.report.add(md.str());
  st.json.flush();
}

int run_gpu(const Options& opt) {
  int count = 0;
  if (!at::hasCUDA() || cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    std::printf("mor_bench_attention: no CUDA device available; nothing to measure (exit 0).\n");
    if (!opt.out.empty()) {
      std::ofstream f(opt.out, std::ios::trunc);
      f << "# Attention kernel benchmark\n\nNot run: no CUDA device available.\n";
    }
    return 0;
  }
  State st(opt);
  at::manual_seed(static_cast<uint64_t>(opt.seed));
  int dev = 0;
  MOR_CUDA_OK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  MOR_CUDA_OK(cudaGetDeviceProperties(&prop, dev));
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  const auto ver = [](int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); };

  std::ostringstream md;
  md << "# Attention kernel benchmark (mor_bench_attention)\n\n"
     << "- device: " << prop.name << " (sm_" << prop.major << prop.minor << ", " << prop.multiProcessorCount << " SMs, "
     << fmt("%.1f", static_cast<double>(prop.totalGlobalMem) / (1u << 30)) << " GiB, L2 "
     << fmt("%.0f", static_cast<double>(prop.l2CacheSize) / (1 << 20)) << " MiB)\n"
     << "- torch " << TORCH_VERSION << "; CUDA runtime " << ver(rt) << ", driver " << ver(drv) << ", built with "
     << ver(CUDART_VERSION) << "\n"
     << "- SDP toggles at start: flash " << at::globalContext().userEnabledFlashSDP() << ", mem-efficient "
     << at::globalContext().userEnabledMemEfficientSDP() << ", math " << at::globalContext().userEnabledMathSDP()
     << ", cuDNN " << at::globalContext().userEnabledCuDNNSDP() << ", FA3 " << at::globalContext().userEnabledFA3SDP()
     << "\n"
     << "- bf16; median of " << opt.iters << " timed runs (CUDA events) after " << opt.warmup
     << " warm-up runs; seed " << opt.seed << "; " << opt.tokens << " tokens per batch (B = tokens / N)\n"
     << "- useful FLOPs: forward 4·D·Σ_h Σ_q #{visible keys} from the positions; backward 2.5× forward "
        "(fwd+bwd = 3.5×); every row of a case is credited with the same useful FLOPs\n";
  st.report.add(md.str());
  st.json.header(JsonLog::Obj{}
                     .str("device", prop.name)
                     .num("sm_count", prop.multiProcessorCount)
                     .str("torch", TORCH_VERSION)
                     .str("cuda_runtime", ver(rt))
                     .str("cuda_driver", ver(drv))
                     .num("warmup", opt.warmup)
                     .num("iters", opt.iters)
                     .num("seed", static_cast<double>(opt.seed))
                     .num("tokens", static_cast<double>(opt.tokens)));
  st.json.flush();

  bandwidth_section(st);
  if (!opt.no_varlen) {
    st.report.add("\n## Training kernel (kernels/varlen_attention)\n\n"
                  "ratio: our TFLOP/s over the row's for baselines (>1: ours faster); position-causal over "
                  "index-causal for the position-causal row, ours over the ATen path for its ATen row. "
                  "rel err: forward output against the mor ATen path.\n");
    for (int64_t d : opt.head_dims) {
      const Shape s = d == 64 ? Shape{64, 15, 5} : Shape{d, 16, opt.kv_heads_128};
      for (int64_t n : opt.seq_lens) {
        try {
          varlen_section(st, s, n);
        } catch (const std::exception& e) {
          st.our_failure = true;
          st.report.add("\n(D " + std::to_string(d) + ", N " + std::to_string(n) + " failed: " + short_error(e) + ")\n");
        }
      }
    }
    varlen_summary(st);
  }
  if (!opt.no_decode) decode_section(st, prop.l2CacheSize);
  st.json.flush();
  if (st.our_failure) {
    st.report.add("\nSome measurement of our kernels failed or disagreed with the reference (see the notes): exit 1.\n");
    return 1;
  }
  return 0;
}

}  // namespace
#endif  // MOR_WITH_CUDA

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"mor_bench_attention: depth-masked attention kernels vs flash/ATen (CUDA)"};
  app.add_option("--out", opt.out, "Also write the Markdown report to this file");
  app.add_option("--json", opt.json, "Write the measurements as JSON to this file");
  app.add_flag("--quick", opt.quick, "Fewer shapes and runs (N 2048 and 512; 3 decode shapes)");
  app.add_option("--warmup", opt.warmup, "Untimed calls before timing")->capture_default_str();
  app.add_option("--iters", opt.iters, "Timed calls (median reported; at least 20)")->capture_default_str();
  app.add_option("--tokens", opt.tokens, "Tokens per training batch, B = tokens / N")->capture_default_str();
  app.add_option("--seq-lens", opt.seq_lens, "Sequence lengths N (default 2048,1024,512)")->delimiter(',');
  app.add_option("--head-dims", opt.head_dims, "Head dims: 64 (Hq 15, Hkv 5) and/or 128 (Hq 16)")->delimiter(',');
  app.add_option("--kv-heads-128", opt.kv_heads_128, "Hkv for head dim 128 (4 or 8)")->capture_default_str();
  app.add_option("--chunk", opt.chunk, "Split-K chunk of the decode kernel")->capture_default_str();
  app.add_option("--seed", opt.seed, "Random seed")->capture_default_str();
  app.add_flag("--no-varlen", opt.no_varlen, "Skip the training-kernel section");
  app.add_flag("--no-decode", opt.no_decode, "Skip the decode section");
  CLI11_PARSE(app, argc, argv);
  if (opt.seq_lens.empty()) opt.seq_lens = opt.quick ? std::vector<int64_t>{2048, 512} : std::vector<int64_t>{2048, 1024, 512};
  if (opt.quick && app.count("--iters") == 0) opt.iters = 20;
  if (opt.quick && app.count("--warmup") == 0) opt.warmup = 3;
  opt.iters = std::max(opt.iters, 20);
  opt.warmup = std::max(opt.warmup, 1);
  for (int64_t d : opt.head_dims) {
    if (d != 64 && d != 128) {
      std::fprintf(stderr, "mor_bench_attention: --head-dims takes 64 and/or 128, got %lld\n", static_cast<long long>(d));
      return 2;
    }
  }
  if (opt.kv_heads_128 <= 0 || 16 % opt.kv_heads_128 != 0) {
    std::fprintf(stderr, "mor_bench_attention: --kv-heads-128 must divide 16\n");
    return 2;
  }
  for (int64_t n : opt.seq_lens) {
    if (n < 8) {
      std::fprintf(stderr, "mor_bench_attention: --seq-lens must be >= 8\n");
      return 2;
    }
  }
#ifdef MOR_WITH_CUDA
  try {
    return run_gpu(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mor_bench_attention: %s\n", e.what());
    return 1;
  }
#else
  std::printf("mor_bench_attention: built without the CUDA kernels (MOR_WITH_CUDA off); nothing to measure (exit 0).\n");
  if (!opt.out.empty()) {
    std::ofstream f(opt.out, std::ios::trunc);
    f << "# Attention kernel benchmark\n\nNot run: built without the CUDA kernels (MOR_WITH_CUDA off).\n";
  }
  return 0;
#endif
}
