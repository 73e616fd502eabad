// The kernel attention backend (make_kernel_attention) driven by the float64 reference kernels
// equals the ATen backend: model logits and every parameter gradient (training top-k and causal
// routing, recursion-wise caching, KV sharing, token-choice, document masking); the attention output
// and the q/k/v gradients on random padded inputs in both mask modes, with documents and grouped
// heads; and cached decoding over a paged K/V cache (the paged kernel for short chunks, the gather
// path for long ones, mixed in one call) gives the logits of the contiguous cache with ATen.
// make_default_attention: the ATen path on CPU, MOR_ATTENTION=aten|auto, anything else an error.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "mor/core/error.h"
#include "mor/model/attention.h"
#include "mor/model/decode.h"
#include "mor/model/model.h"
#include "support/test_helpers.h"

namespace mor::model {
namespace {

using config::Sharing;

// How often the kernel backend reached each operation (not the ATen fallback).
struct OpCounts {
  int64_t varlen_fwd = 0, varlen_bwd = 0, paged = 0, paged_rows = 0;
};

// reference_kernel_ops() with counters.
KernelOps counted_reference_ops(const std::shared_ptr<OpCounts>& counts) {
  KernelOps ops = reference_kernel_ops();
  ops.name = "counted-reference";
  auto fwd = ops.varlen_fwd;
  ops.varlen_fwd = [counts, fwd](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const kernels::VarlenArgs& c) {
    ++counts->varlen_fwd;
    return fwd(q, k, v, c);
  };
  auto bwd = ops.varlen_bwd;
  ops.varlen_bwd = [counts, bwd](const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& out, const at::Tensor& lse, const kernels::VarlenArgs& c) {
    ++counts->varlen_bwd;
    return bwd(dout, q, k, v, out, lse, c);
  };
  auto paged = ops.paged;
  ops.paged = [counts, paged](const PagedAttentionInputs& in) {
    ++counts->paged;
    counts->paged_rows += in.q.size(0);
    return paged(in);
  };
  return ops;
}

// Sets (or unsets) an environment variable for the lifetime of the guard.
class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~EnvGuard() {
    if (old_) {
      setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// ---------------------------------------------------------------------------------------------
// The whole model: ATen backend vs kernel backend.

struct ModelCase {
  const char* name;
  config::ModelConfig model;
  bool documents = false;
};
void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.name; }

std::vector<ModelCase> model_cases() {
  auto ec = testing::expert_config(Sharing::kMiddleCycle, 3, 5);
  ec.router.expert.capacities = {0.9, 0.6, 0.3};
  auto ec_share = ec;
  ec_share.kv_mode = config::KvMode::kShare;
  auto tc = testing::token_config(Sharing::kMiddleCycle, 3, 5);
  auto rec_share = testing::recursive_config(Sharing::kCycle, 2, 4);
  rec_share.kv_mode = config::KvMode::kShare;
  return {{"vanilla", testing::tiny_config()},
          {"expert_recursion_cache", ec},
          {"expert_kv_share", ec_share},
          {"token", tc},
          {"recursive_kv_share", rec_share},
          {"vanilla_documents", testing::tiny_config(), true},
          {"expert_documents", ec, true},
          {"expert_kv_share_documents", ec_share, true}};
}

class KernelBackendModel : public ::testing::TestWithParam<ModelCase> {};

TEST_P(KernelBackendModel, LogitsAndGradientsEqualTheAtenBackend) {
  const ModelCase& c = GetParam();
  MoRModel aten(c.model, at::kDouble), kern(c.model, at::kDouble);
  aten.set_attention_backend(make_aten_attention());
  auto counts = std::make_shared<OpCounts>();
  kern.set_attention_backend(make_kernel_attention(counted_reference_ops(counts)));
  EXPECT_EQ(kern.attention_backend().name(), "kernels:counted-reference");
  const int64_t batch = 3, seq = 19, vocab = c.model.vocab_size;
  at::Tensor tokens = testing::random_tokens(batch, seq, vocab, 101).clamp_min(1);
  if (c.model.router.kind != config::RouterKind::kNone) {
    // Same (seeded) weights in both models: scale both routers alike until depths are mixed.
    ASSERT_TRUE(testing::mix_routing_depth(aten, tokens, ForwardOptions{}));
    ASSERT_TRUE(testing::mix_routing_depth(kern, tokens, ForwardOptions{}));
  }
  ForwardOptions base;
  if (c.documents) {
    tokens[0][4] = 0;
    tokens[0][11] = 0;
    tokens[1][7] = 0;
    tokens[2][0] = 0;
    base.documents = document_ids(tokens, 0);
  }
  const at::Tensor targets = testing::random_targets(batch, seq, vocab, 102, 2);
  for (const bool training : {true, false}) {
    SCOPED_TRACE(std::string(c.name) + (training ? " training (top-k)" : " causal routing"));
    ForwardOptions opt = base;
    opt.training = training;
    opt.step = 1000;  // past any warm-up
    aten.zero_grad();
    kern.zero_grad();
    const int64_t fwd_before = counts->varlen_fwd, bwd_before = counts->varlen_bwd;
    const ForwardOutput oa = aten.forward(tokens, opt), ok = kern.forward(tokens, opt);
    EXPECT_TRUE(testing::tensors_equal(ok.depth, oa.depth));
    EXPECT_TRUE(testing::tensors_close(ok.logits, oa.logits, 1e-10, 1e-10));
    aten.loss(oa, targets).total.backward();
    kern.loss(ok, targets).total.backward();
    EXPECT_GT(counts->varlen_fwd, fwd_before) << "the kernel path did not run";
    EXPECT_GT(counts->varlen_bwd, bwd_before) << "the kernel backward did not run";
    const auto ga = testing::snapshot_grads(aten), gk = testing::snapshot_grads(kern);
    double largest = 0;
    for (const auto& [name, g] : ga) {
      EXPECT_TRUE(testing::tensors_close(gk.at(name), g, 1e-10, 1e-12)) << name;
      largest = std::max(largest, testing::max_abs(g));
    }
    EXPECT_GT(largest, 1e-6) << "no gradient at all";
  }
}

INSTANTIATE_TEST_SUITE_P(Models, KernelBackendModel, ::testing::ValuesIn(model_cases()),
                         [](const ::testing::TestParamInfo<ModelCase>& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------------
// The backend alone, on random compacted inputs.

enum class Keys { kPlainCausal, kSameSet, kByPosition };

struct Inputs {
  AttentionInputs in;
  at::Tensor q_mask;  // [B, Tq] double: 1 on valid queries
};

// B = 3, Hq = 4, Hkv = 2, D = 8, float64. kSameSet: the keys are the queries (k_pos/k_valid/k_doc
// are the same tensors), Tq = Tk = 6, arbitrary (not only prefix) valid masks. kByPosition: Tk = 8
// keys, each row's valid keys a prefix, the queries a sorted sample of the valid keys' positions
// (so every query sees at least itself), valid queries a prefix. Documents: id = position / 5.
Inputs random_inputs(Keys mode, bool documents, bool padded, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t b = 3, hq = 4, hkv = 2, d = 8;
  const int64_t tq = mode == Keys::kByPosition ? 5 : 6, tk = mode == Keys::kByPosition ? 8 : tq;
  auto sorted_sample = [&](const std::vector<int64_t>& from, int64_t n) {
    std::vector<int64_t> v = from;
    std::shuffle(v.begin(), v.end(), rng);
    v.resize(static_cast<size_t>(n));
    std::sort(v.begin(), v.end());
    return v;
  };
  auto range = [](int64_t n) {
    std::vector<int64_t> v(static_cast<size_t>(n));
    std::iota(v.begin(), v.end(), 0);
    return v;
  };
  std::vector<int64_t> qpos, kpos, qvalid, kvalid;
  if (mode == Keys::kPlainCausal) {
    for (int64_t r = 0; r < b; ++r) {
      const auto p = range(tq);
      qpos.insert(qpos.end(), p.begin(), p.end());
    }
  } else if (mode == Keys::kSameSet) {
    for (int64_t r = 0; r < b; ++r) {
      const auto p = sorted_sample(range(3 * tq), tq);
      qpos.insert(qpos.end(), p.begin(), p.end());
      std::vector<int64_t> v(static_cast<size_t>(tq), 1);
      if (padded) {
        for (auto& x : v) x = rng() % 3 != 0;
        v[rng() % static_cast<uint64_t>(tq)] = 1;
        if (r == 1) {  // one row with a single valid entry in the middle
          std::fill(v.begin(), v.end(), 0);
          v[3] = 1;
        }
      }
      qvalid.insert(qvalid.end(), v.begin(), v.end());
    }
  } else {
    const std::vector<int64_t> nk = padded ? std::vector<int64_t>{8, 6, 5} : std::vector<int64_t>{8, 8, 8};
    const std::vector<int64_t> nq = padded ? std::vector<int64_t>{5, 3, 1} : std::vector<int64_t>{5, 5, 5};
    for (int64_t r = 0; r < b; ++r) {
      auto kp = sorted_sample(range(20), tk);
      const std::vector<int64_t> valid_keys(kp.begin(), kp.begin() + nk[static_cast<size_t>(r)]);
      for (int64_t j = nk[static_cast<size_t>(r)]; j < tk; ++j) kp[static_cast<size_t>(j)] = 99;  // padding
      auto qp = sorted_sample(valid_keys, tq);
      for (int64_t i = nq[static_cast<size_t>(r)]; i < tq; ++i) qp[static_cast<size_t>(i)] = qp[0];  // padding
      kpos.insert(kpos.end(), kp.begin(), kp.end());
      qpos.insert(qpos.end(), qp.begin(), qp.end());
      for (int64_t j = 0; j < tk; ++j) kvalid.push_back(j < nk[static_cast<size_t>(r)]);
      for (int64_t i = 0; i < tq; ++i) qvalid.push_back(i < nq[static_cast<size_t>(r)]);
    }
  }
  Inputs x;
  AttentionInputs& in = x.in;
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  at::manual_seed(seed);
  // q/k/v as the model makes them: [B, T, H, D] projections viewed as [B, H, T, D].
  in.q = at::randn({b, tq, hq, d}, opts).transpose(1, 2).requires_grad_(true);
  in.k = at::randn({b, tk, hkv, d}, opts).transpose(1, 2).requires_grad_(true);
  in.v = at::randn({b, tk, hkv, d}, opts).transpose(1, 2).requires_grad_(true);
  in.q_pos = at::tensor(qpos, at::kLong).view({b, tq});
  in.scale = 0.37;
  if (padded && mode != Keys::kPlainCausal) in.q_valid = at::tensor(qvalid, at::kLong).view({b, tq}).to(at::kBool);
  if (documents) in.q_doc = at::floor_divide(in.q_pos, 5);
  if (mode == Keys::kByPosition) {
    in.k_pos = at::tensor(kpos, at::kLong).view({b, tk});
    if (padded) in.k_valid = at::tensor(kvalid, at::kLong).view({b, tk}).to(at::kBool);
    if (documents) in.k_doc = at::floor_divide(in.k_pos, 5);
  } else {
    in.k_pos = in.q_pos;
    in.k_valid = in.q_valid;
    in.k_doc = in.q_doc;
  }
  in.plain_causal = mode == Keys::kPlainCausal;
  x.q_mask = in.q_valid.defined() ? in.q_valid.to(at::kDouble) : at::ones({b, tq}, opts);
  return x;
}

struct BackendCase {
  const char* name;
  Keys keys;
  bool documents;
  bool padded;
};
void PrintTo(const BackendCase& c, std::ostream* os) { *os << c.name; }

class KernelBackendDirect : public ::testing::TestWithParam<BackendCase> {};

// Gradients are compared for a loss over the VALID query rows only: the ATen path lets padded
// query rows attend to key 0 (finite values that callers discard), so a loss that counted them would
// send gradient from those rows into key 0, which the packed kernel never computes. With the valid
// rows' loss, both give zero gradient to padded queries and keys, and the gradients agree
// everywhere.
TEST_P(KernelBackendDirect, OutputAndGradientsEqualTheAtenPathOnValidRows) {
  const BackendCase& c = GetParam();
  auto counts = std::make_shared<OpCounts>();
  const auto kern = make_kernel_attention(counted_reference_ops(counts));
  const auto aten = make_aten_attention();
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE(std::string(c.name) + " seed " + std::to_string(seed));
    const Inputs x = random_inputs(c.keys, c.documents, c.padded, seed);
    const AttentionInputs& in = x.in;
    const at::Tensor mask = x.q_mask.view({in.q.size(0), 1, in.q.size(2), 1});
    const at::Tensor ok = kern->attend(in), oa = aten->attend(in);
    ASSERT_EQ(ok.sizes(), oa.sizes());
    EXPECT_TRUE(testing::tensors_close(ok * mask, oa * mask, 1e-12, 1e-12));
    EXPECT_EQ(testing::max_abs(ok * (1 - mask)), 0.0) << "padded query rows must be zero";
    const at::Tensor w = at::randn(ok.sizes(), ok.options());
    const auto gk = torch::autograd::grad({(ok * w * mask).sum()}, {in.q, in.k, in.v});
    const auto ga = torch::autograd::grad({(oa * w * mask).sum()}, {in.q, in.k, in.v});
    const char* names[] = {"dq", "dk", "dv"};
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_TRUE(testing::tensors_close(gk[i], ga[i], 1e-12, 1e-12)) << names[i];
      EXPECT_GT(testing::max_abs(ga[i]), 1e-3) << names[i];
    }
  }
  EXPECT_EQ(counts->varlen_fwd, 3);
  EXPECT_EQ(counts->varlen_bwd, 3);
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, KernelBackendDirect,
    ::testing::Values(BackendCase{"plain_causal", Keys::kPlainCausal, false, false},
                      BackendCase{"same_set_full", Keys::kSameSet, false, false},
                      BackendCase{"same_set_padded", Keys::kSameSet, false, true},
                      BackendCase{"same_set_padded_documents", Keys::kSameSet, true, true},
                      BackendCase{"by_position_full", Keys::kByPosition, false, false},
                      BackendCase{"by_position_padded", Keys::kByPosition, false, true},
                      BackendCase{"by_position_padded_documents", Keys::kByPosition, true, true}),
    [](const ::testing::TestParamInfo<BackendCase>& info) { return std::string(info.param.name); });

TEST(KernelBackend, InputsTheOpsDoNotTakeGoToTheAtenPath) {
  auto counts = std::make_shared<OpCounts>();
  KernelOps ops = counted_reference_ops(counts);
  ops.takes_varlen = [](const at::Tensor& q, const at::Tensor& k) {
    // The backend asks with the packed layout [rows, H, D].
    EXPECT_EQ(q.dim(), 3);
    EXPECT_EQ(k.dim(), 3);
    EXPECT_EQ(q.size(1), 4);
    EXPECT_EQ(k.size(1), 2);
    return false;
  };
  const auto kern = make_kernel_attention(ops);
  const Inputs x = random_inputs(Keys::kByPosition, true, true, 5);
  EXPECT_TRUE(testing::tensors_close(kern->attend(x.in), make_aten_attention()->attend(x.in), 0, 0));
  EXPECT_EQ(counts->varlen_fwd, 0);
}

TEST(KernelBackend, DefaultBackendIsTheAtenPathOnCpuAndMorAttentionSelects) {
  const Inputs x = random_inputs(Keys::kByPosition, false, true, 9);
  const at::Tensor expected = make_aten_attention()->attend(x.in);
  {
    const EnvGuard env("MOR_ATTENTION", nullptr);
    const auto def = make_default_attention();
    EXPECT_EQ(def->name(), "kernels:cuda");
    EXPECT_TRUE(testing::tensors_close(def->attend(x.in), expected, 0, 0));
    EXPECT_FALSE(def->supports_paged(x.in.q[0].transpose(0, 1))) << "no CUDA kernel takes CPU float64";
    // A model built now has this backend.
    EXPECT_EQ(MoRModel(testing::tiny_config()).attention_backend().name(), "kernels:cuda");
  }
  {
    const EnvGuard env("MOR_ATTENTION", "auto");
    EXPECT_EQ(make_default_attention()->name(), "kernels:cuda");
  }
  {
    const EnvGuard env("MOR_ATTENTION", "aten");
    EXPECT_EQ(make_default_attention()->name(), "aten");
    EXPECT_TRUE(testing::tensors_close(make_default_attention()->attend(x.in), expected, 0, 0));
  }
  {
    const EnvGuard env("MOR_ATTENTION", "bogus");
    EXPECT_TRUE(testing::throws_error_containing([] { make_default_attention(); }, "MOR_ATTENTION"));
    EXPECT_TRUE(testing::throws_error_containing([] { MoRModel m(testing::tiny_config()); }, "'bogus'"));
  }
}

TEST(KernelBackend, PagedAttentionIsRefusedByBackendsWithoutIt) {
  PagedAttentionInputs in;
  in.q = at::zeros({1, 4, 8}, at::kDouble);
  EXPECT_FALSE(make_aten_attention()->supports_paged(in.q));
  EXPECT_TRUE(testing::throws_error_containing([&] { make_aten_attention()->attend_paged(in); },
                                               "aten: paged attention not supported"));
  EXPECT_TRUE(make_kernel_attention(reference_kernel_ops())->supports_paged(in.q));
}

// ---------------------------------------------------------------------------------------------
// Decoding over a paged cache.

// A paged K/V cache for tests: one pool [blocks, block_size, kv_heads, D], blocks handed out in
// shuffled order, one block list per (sequence, slot).
class TestPagedCache final : public KvCache {
 public:
  TestPagedCache(int64_t num_blocks, int64_t block_size, int64_t kv_heads, int64_t head_dim, uint64_t seed)
      : block_size_(block_size) {
    const auto opts = at::TensorOptions().dtype(at::kDouble);
    // Garbage in unwritten rows: a kernel reading past kv_len would show.
    k_ = at::full({num_blocks, block_size, kv_heads, head_dim}, 1e3, opts);
    v_ = at::full({num_blocks, block_size, kv_heads, head_dim}, -1e3, opts);
    free_.resize(static_cast<size_t>(num_blocks));
    std::iota(free_.begin(), free_.end(), 0);
    std::mt19937_64 rng(seed);
    std::shuffle(free_.begin(), free_.end(), rng);
  }

  std::pair<at::Tensor, at::Tensor> read(int64_t seq, int64_t slot) override {
    ++reads;
    const int64_t len = length(seq, slot);
    if (len == 0) return {};
    const at::Tensor idx = rows(seq, slot, 0, len);
    return {flat(k_).index_select(0, idx), flat(v_).index_select(0, idx)};
  }
  void append(int64_t seq, int64_t slot, const at::Tensor& k, const at::Tensor& v) override {
    Entry& e = entries_[{seq, slot}];
    const int64_t old = e.length, n = k.size(0);
    while (static_cast<int64_t>(e.blocks.size()) * block_size_ < old + n) {
      if (free_.empty()) throw std::runtime_error("TestPagedCache: out of blocks");
      e.blocks.push_back(free_.back());
      free_.pop_back();
    }
    e.length = old + n;
    const at::Tensor idx = rows(seq, slot, old, n);
    flat(k_).index_copy_(0, idx, k);
    flat(v_).index_copy_(0, idx, v);
  }
  bool paged(Paged* out) const override {
    out->k_pool = k_;
    out->v_pool = v_;
    out->block_size = block_size_;
    return true;
  }
  int64_t length(int64_t seq, int64_t slot) const override {
    const auto it = entries_.find({seq, slot});
    return it == entries_.end() ? 0 : it->second.length;
  }
  std::vector<int32_t> blocks(int64_t seq, int64_t slot) const override {
    const auto it = entries_.find({seq, slot});
    return it == entries_.end() ? std::vector<int32_t>{} : it->second.blocks;
  }

  int64_t reads = 0;

 private:
  struct Entry {
    int64_t length = 0;
    std::vector<int32_t> blocks;
  };
  at::Tensor flat(const at::Tensor& pool) const { return pool.view({-1, pool.size(2), pool.size(3)}); }
  at::Tensor rows(int64_t seq, int64_t slot, int64_t begin, int64_t count) const {
    const Entry& e = entries_.at({seq, slot});
    std::vector<int64_t> r;
    for (int64_t t = begin; t < begin + count; ++t) {
      r.push_back(static_cast<int64_t>(e.blocks[static_cast<size_t>(t / block_size_)]) * block_size_ + t % block_size_);
    }
    return at::tensor(r, at::kLong);
  }
  int64_t block_size_;
  at::Tensor k_, v_;
  std::vector<int32_t> free_;
  std::map<std::pair<int64_t, int64_t>, Entry> entries_;
};

struct DecodeCase {
  const char* name;
  config::ModelConfig model;
};
void PrintTo(const DecodeCase& c, std::ostream* os) { *os << c.name; }

std::vector<DecodeCase> decode_cases() {
  auto ec = testing::expert_config(Sharing::kMiddleCycle, 3, 5);
  auto ec_share = ec;
  ec_share.kv_mode = config::KvMode::kShare;
  auto tc_share = testing::token_config(Sharing::kMiddleCycle, 3, 5);
  tc_share.kv_mode = config::KvMode::kShare;
  auto rec_share = testing::recursive_config(Sharing::kCycle, 2, 4);
  rec_share.kv_mode = config::KvMode::kShare;
  return {{"vanilla", testing::tiny_config()},
          {"expert_recursion_cache", ec},
          {"expert_kv_share", ec_share},
          {"token_kv_share", tc_share},
          {"recursive_kv_share", rec_share}};
}

class PagedDecode : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(PagedDecode, EqualsTheContiguousCacheWithAten) {
  const DecodeCase& c = GetParam();
  MoRModel m(c.model, at::kDouble);
  const int64_t vocab = c.model.vocab_size;
  const std::vector<int64_t> lengths = {23, 9, 30, 14};
  std::vector<at::Tensor> seqs;
  for (size_t s = 0; s < lengths.size(); ++s) seqs.push_back(testing::random_tokens(1, lengths[s], vocab, 60 + s));
  if (c.model.router.kind != config::RouterKind::kNone) testing::mix_routing_depth(m, seqs[0], ForwardOptions{});
  // The schedule, the same for both runs: first chunks of 5, 9 (all), 20 (longer than the paged
  // limit: gathered, in the same calls as paged groups) and 1 tokens, then chunks of 1 to 3
  // tokens; sequence 3 enters late.
  std::mt19937_64 rng(3);
  std::vector<std::vector<DecodeChunk>> calls;
  {
    std::vector<int64_t> done(lengths.size(), 0);
    const std::vector<int64_t> first = {5, 9, 20, 1};
    for (int step = 0;; ++step) {
      std::vector<DecodeChunk> chunks;
      for (size_t s = 0; s < lengths.size(); ++s) {
        if (s == 3 && step < 2) continue;
        const int64_t left = lengths[s] - done[s];
        if (left == 0) continue;
        const int64_t take =
            std::min(left, done[s] == 0 ? first[s] : 1 + static_cast<int64_t>(rng() % 3));
        DecodeChunk ch;
        ch.seq = static_cast<int64_t>(s);
        ch.start = done[s];
        for (int64_t j = 0; j < take; ++j) ch.tokens.push_back(seqs[s][0][done[s] + j].item<int64_t>());
        done[s] += take;
        chunks.push_back(std::move(ch));
      }
      if (chunks.empty()) break;
      calls.push_back(std::move(chunks));
    }
  }
  auto run = [&](KvCache& cache) {
    std::vector<DecodeOutput> outs;
    for (const auto& chunks : calls) outs.push_back(m.forward_cached(chunks, cache));
    return outs;
  };
  m.set_attention_backend(make_aten_attention());
  ContiguousKvCache contiguous;
  const auto expected = run(contiguous);

  auto counts = std::make_shared<OpCounts>();
  m.set_attention_backend(make_kernel_attention(counted_reference_ops(counts)));
  const CacheLayout layout = cache_layout(c.model);
  TestPagedCache paged(400, 4, layout.kv_heads, layout.head_dim, 17);
  // The first call mixes paged groups (5, 9 and 1 tokens) and a gathered one (20 tokens).
  const DecodeOutput first = m.forward_cached(calls[0], paged);
  EXPECT_GT(counts->paged, 0);
  EXPECT_GT(counts->varlen_fwd, 0);
  EXPECT_GT(paged.reads, 0);
  const int64_t reads_after_first = paged.reads;
  std::vector<DecodeOutput> got = {first};
  for (size_t i = 1; i < calls.size(); ++i) got.push_back(m.forward_cached(calls[i], paged));
  EXPECT_EQ(paged.reads, reads_after_first) << "short chunks should never gather";
  EXPECT_GT(counts->paged_rows, 100);
  for (size_t i = 0; i < calls.size(); ++i) {
    SCOPED_TRACE(std::string(c.name) + " call " + std::to_string(i));
    EXPECT_TRUE(testing::tensors_equal(got[i].depth, expected[i].depth));
    EXPECT_TRUE(testing::tensors_close(got[i].logits, expected[i].logits, 1e-10, 1e-10));
    EXPECT_EQ(got[i].slot_appends, expected[i].slot_appends);
  }
  for (size_t s = 0; s < lengths.size(); ++s) {
    for (int64_t slot = 0; slot < layout.num_slots; ++slot) {
      EXPECT_EQ(paged.length(static_cast<int64_t>(s), slot), contiguous.length(static_cast<int64_t>(s), slot));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, PagedDecode, ::testing::ValuesIn(decode_cases()),
                         [](const ::testing::TestParamInfo<DecodeCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mor::model
