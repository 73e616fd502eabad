// Incremental decoding over the K/V cache equals the full causal forward: same logits (float64,
// 1e-9) and the same depths, for every KV mode and router, whether the tokens arrive one at a time,
// in prefill chunks of any size, or as chunks of several sequences in one call; and the cache holds
// exactly the tokens the depths predict (recursion-wise caching stores a token only where it went).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <random>

#include "mor/model/decode.h"
#include "mor/model/model.h"
#include "support/test_helpers.h"

namespace mor::model {
namespace {

using config::Sharing;

struct Case {
  const char* name;
  config::ModelConfig model;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  auto ec = testing::expert_config(Sharing::kMiddleCycle, 3, 5);
  auto ec_share = ec;
  ec_share.kv_mode = config::KvMode::kShare;
  auto ec_aux = ec;
  ec_aux.router.expert.aux = config::ExpertAux::kRouter;
  auto ec_cap1 = ec;
  ec_cap1.router.expert.capacities = {1.0, 0.5, 0.25};
  auto tc = testing::token_config(Sharing::kMiddleCycle, 3, 5);
  auto tc_share = tc;
  tc_share.kv_mode = config::KvMode::kShare;
  auto tc_free = tc;
  tc_free.router.token.balancing = config::Balancing::kLossFree;
  auto rec = testing::recursive_config(Sharing::kCycle, 2, 4);
  auto rec_share = rec;
  rec_share.kv_mode = config::KvMode::kShare;
  return {{"vanilla", testing::tiny_config()}, {"recursive", rec},          {"recursive_share", rec_share},
          {"expert", ec},                       {"expert_share", ec_share}, {"expert_aux_router", ec_aux},
          {"expert_first_capacity_1", ec_cap1}, {"token", tc},              {"token_share", tc_share},
          {"token_loss_free", tc_free}};
}

class DecodeTest : public ::testing::TestWithParam<Case> {};

TEST_P(DecodeTest, EqualsTheFullCausalForwardInEveryChunking) {
  MoRModel m(GetParam().model, at::kDouble);
  const int64_t vocab = GetParam().model.vocab_size;
  const std::vector<int64_t> lengths = {23, 9, 16};
  std::vector<at::Tensor> seqs;
  for (size_t s = 0; s < lengths.size(); ++s) seqs.push_back(testing::random_tokens(1, lengths[s], vocab, 40 + s));
  if (GetParam().model.router.token.balancing == config::Balancing::kLossFree) {
    at::Tensor b = m.balance_bias();
    b.copy_(at::tensor(std::vector<double>{0.002, -0.001, 0.0}).to(b.options()));
  }
  if (GetParam().model.router.kind != config::RouterKind::kNone) {
    testing::mix_routing_depth(m, seqs[0], ForwardOptions{});
  }
  std::vector<ForwardOutput> full;
  for (const auto& s : seqs) full.push_back(m.forward(s));
  if (GetParam().model.router.kind != config::RouterKind::kNone) {
    // Routing must be mixed for the test to mean anything: some tokens stop early, some go deep.
    const at::Tensor d = at::cat({full[0].depth[0], full[1].depth[0], full[2].depth[0]});
    ASSERT_LT(d.min().item<int64_t>(), d.max().item<int64_t>()) << "all tokens got the same depth";
  }

  std::mt19937_64 rng(7);
  for (int mode = 0; mode < 3; ++mode) {  // 0: token by token, 1: random chunks, 2: all prompts at once
    ContiguousKvCache cache;
    std::vector<int64_t> done(seqs.size(), 0);
    std::vector<std::vector<at::Tensor>> logits(seqs.size()), depths(seqs.size());
    bool more = true;
    while (more) {
      std::vector<DecodeChunk> chunks;
      for (size_t s = 0; s < seqs.size(); ++s) {
        const int64_t left = lengths[s] - done[s];
        if (left == 0) continue;
        int64_t take = mode == 0 ? 1 : mode == 2 ? left : 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(left));
        DecodeChunk c;
        c.seq = static_cast<int64_t>(s);
        c.start = done[s];
        for (int64_t j = 0; j < take; ++j) c.tokens.push_back(seqs[s][0][done[s] + j].item<int64_t>());
        chunks.push_back(std::move(c));
      }
      if (chunks.empty()) break;
      const DecodeOutput out = m.forward_cached(chunks, cache);
      for (size_t c = 0; c < chunks.size(); ++c) {
        const auto s = static_cast<size_t>(chunks[c].seq);
        const int64_t b = out.offsets[c], e = out.offsets[c + 1];
        logits[s].push_back(out.logits.narrow(0, b, e - b));
        depths[s].push_back(out.depth.narrow(0, b, e - b));
        done[s] += e - b;
      }
    }
    for (size_t s = 0; s < seqs.size(); ++s) {
      SCOPED_TRACE(std::string(GetParam().name) + " mode " + std::to_string(mode) + " sequence " + std::to_string(s));
      EXPECT_TRUE(testing::tensors_equal(at::cat(depths[s]), full[s].depth[0]));
      EXPECT_TRUE(testing::tensors_close(at::cat(logits[s]), full[s].logits[0], 0, 1e-9));
      // Exact KV accounting: slot (r, i) holds the tokens whose depth exceeds r (prelude/coda: all).
      const CacheLayout layout = cache_layout(GetParam().model);
      for (int64_t slot = 0; slot < layout.num_slots; ++slot) {
        const int64_t r = layout.slot_recursion[static_cast<size_t>(slot)];
        const int64_t expected =
            r < 0 ? lengths[s] : full[s].depth[0].gt(r).sum().item<int64_t>();
        EXPECT_EQ(cache.length(static_cast<int64_t>(s), slot), expected) << "slot " << slot;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, DecodeTest, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

TEST_P(DecodeTest, ChunksAtDifferentRecursionsShareOneBlockCall) {
  // Depth-wise batching: sequence A is one recursion ahead of B when B enters; every following
  // block call mixes A's and B's recursions. Both still equal the full causal forward.
  MoRModel m(GetParam().model, at::kDouble);
  if (m.layout().num_recursions < 2) GTEST_SKIP() << "needs at least two recursions";
  const int64_t vocab = GetParam().model.vocab_size;
  const at::Tensor sa = testing::random_tokens(1, 14, vocab, 71), sb = testing::random_tokens(1, 9, vocab, 72);
  if (GetParam().model.router.kind != config::RouterKind::kNone) {
    testing::mix_routing_depth(m, sa, ForwardOptions{});
  }
  auto to_vec = [](const at::Tensor& t) {
    std::vector<int64_t> v(static_cast<size_t>(t.size(1)));
    for (int64_t i = 0; i < t.size(1); ++i) v[static_cast<size_t>(i)] = t[0][i].item<int64_t>();
    return v;
  };
  ContiguousKvCache cache;
  // Prefill both (A first, one recursion ahead), then decode nothing more: compare prefill logits.
  FlightChunk a, b;
  a.seq = 0;
  a.tokens = to_vec(sa);
  b.seq = 1;
  b.tokens = to_vec(sb);
  m.decode_enter({&a}, cache);
  m.decode_recursion({&a}, cache);
  m.decode_enter({&b}, cache);
  int mixed_calls = 0;
  while (a.in_block || b.in_block) {
    std::vector<FlightChunk*> in;
    if (a.in_block) in.push_back(&a);
    if (b.in_block) in.push_back(&b);
    mixed_calls += in.size() == 2 && a.next_r != b.next_r;
    m.decode_recursion(in, cache);
  }
  EXPECT_GT(mixed_calls, 0);
  const at::Tensor la = m.decode_exit({&a}, cache, false), lb = m.decode_exit({&b}, cache, false);
  EXPECT_TRUE(testing::tensors_close(la, m.forward(sa).logits[0], 0, 1e-9));
  EXPECT_TRUE(testing::tensors_close(lb, m.forward(sb).logits[0], 0, 1e-9));
  EXPECT_TRUE(testing::tensors_equal(at::tensor(a.depth), m.forward(sa).depth[0]));
  EXPECT_TRUE(testing::tensors_equal(at::tensor(b.depth), m.forward(sb).depth[0]));
}

TEST(Decode, CacheLayoutHasOneSlotPerStoringLayer) {
  auto ec = testing::expert_config(Sharing::kMiddleCycle, 3, 5);  // prelude 1, block 1 x 3, coda 1
  CacheLayout l = cache_layout(ec);
  EXPECT_EQ(l.num_slots, 5);
  EXPECT_EQ(l.slot_recursion, (std::vector<int64_t>{-1, 0, 1, 2, -1}));
  ec.kv_mode = config::KvMode::kShare;
  l = cache_layout(ec);
  EXPECT_EQ(l.num_slots, 3);
  EXPECT_EQ(l.read_slot, (std::vector<int64_t>{0, 1, 1, 1, 2}));
  EXPECT_EQ(l.write_slot, (std::vector<int64_t>{0, 1, -1, -1, 2}));
}

TEST(Decode, DecodesCausallyEvenWhenTheModelDefaultsToTopkAndRefusesPositionsPastTheContext) {
  auto ec = testing::expert_config(Sharing::kMiddleCycle, 3, 5);
  ec.inference_routing = config::RoutingMode::kTopk;
  MoRModel m(ec, at::kDouble);
  const at::Tensor tokens = testing::random_tokens(1, 12, ec.vocab_size, 9);
  ForwardOptions causal;
  causal.routing = config::RoutingMode::kCausal;
  testing::mix_routing_depth(m, tokens, causal);
  ContiguousKvCache cache;
  std::vector<int64_t> ids(12);
  for (int64_t i = 0; i < 12; ++i) ids[static_cast<size_t>(i)] = tokens[0][i].item<int64_t>();
  const DecodeOutput out = m.forward_cached({{0, ids, 0}}, cache);
  EXPECT_TRUE(testing::tensors_close(out.logits, m.forward(tokens, causal).logits[0], 0, 1e-9));
  MoRModel v(testing::tiny_config());
  EXPECT_TRUE(testing::throws_error_containing(
      [&] { v.forward_cached({{0, {1}, testing::tiny_config().max_seq_len}}, cache); }, "max_seq_len"));
}

}  // namespace
}  // namespace mor::model
