// Document masking: a packed row with documents A and B gives, position by position, the logits of
// running A and B as separate sequences (no attention across documents, positions restarting at
// each document), in every causal mode. Computed another way: two independent forwards.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/test_helpers.h"

namespace mor::testing {
namespace {

constexpr int64_t kEos = 0;

struct DocCase {
  std::string name;
  config::ModelConfig config;
  bool mix_routing = false;  // scale routers until some tokens exit early
};

void PrintTo(const DocCase& c, std::ostream* os) { *os << c.name; }

std::vector<DocCase> doc_cases() {
  std::vector<DocCase> cases;
  cases.push_back({"vanilla", tiny_config()});
  for (auto kv : {config::KvMode::kRecursion, config::KvMode::kShare}) {
    const std::string k = kv == config::KvMode::kShare ? "_kvshare" : "_kvrecursion";
    auto rec = recursive_config(config::Sharing::kMiddleCycle, 2, 6);
    rec.kv_mode = kv;
    cases.push_back({"recursive" + k, rec});
    auto ec = expert_config(config::Sharing::kMiddleCycle, 3, 8);
    ec.kv_mode = kv;
    ec.router.expert.capacities = {0.9, 0.6, 0.3};  // every recursion decides by threshold
    cases.push_back({"expert_causal" + k, ec, true});
    auto tc = token_config(config::Sharing::kCycle, 2, 4);
    tc.kv_mode = kv;
    cases.push_back({"token" + k, tc, true});
  }
  return cases;
}

class DocumentMasking : public ::testing::TestWithParam<DocCase> {};

TEST_P(DocumentMasking, PackedRowEqualsSeparateDocuments) {
  const DocCase& c = GetParam();
  model::MoRModel m(c.config, at::kDouble);
  at::Tensor doc_a = random_tokens(1, 6, c.config.vocab_size, 11).clamp_min(1);
  at::Tensor doc_b = random_tokens(1, 7, c.config.vocab_size, 12).clamp_min(1);
  doc_a[0][5] = kEos;  // A ends with EOS; B does not (truncated by the row)
  const at::Tensor row = at::cat({doc_a, doc_b}, 1);
  model::ForwardOptions opt;  // inference, causal routing
  if (c.mix_routing) {  // sharpen the routers until tokens reach different depths
    for (int i = 0; i < 8 && m.forward(row, opt).depth.min().item<int64_t>() == m.forward(row, opt).depth.max().item<int64_t>(); ++i)
      scale_router_weights(m, 4.0);
    const at::Tensor depth = m.forward(row, opt).depth;
    ASSERT_LT(depth.min().item<int64_t>(), depth.max().item<int64_t>()) << depth;
  }

  opt.documents = model::document_ids(row, kEos);
  const at::Tensor packed = m.forward(row, opt).logits;
  const at::Tensor alone_a = m.forward(doc_a, {}).logits;
  const at::Tensor alone_b = m.forward(doc_b, {}).logits;
  EXPECT_TRUE(tensors_close(packed.narrow(1, 0, 6), alone_a, 1e-10, 1e-12));
  EXPECT_TRUE(tensors_close(packed.narrow(1, 6, 7), alone_b, 1e-10, 1e-12));

  // Without masking, document B sees document A: the comparison above is not vacuous.
  const at::Tensor unmasked = m.forward(row, {}).logits;
  EXPECT_GT(max_abs(unmasked.narrow(1, 6, 7) - alone_b), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(AllCausalModes, DocumentMasking, ::testing::ValuesIn(doc_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(DocumentIds, IncrementAfterEachEosWhichEndsItsDocument) {
  const at::Tensor tokens = at::tensor({int64_t{5}, kEos, int64_t{7}, int64_t{8}, kEos, int64_t{9}, kEos, kEos}, at::kLong).view({2, 4});
  const at::Tensor want = at::tensor({0, 0, 1, 1, 0, 1, 1, 2}, at::kLong).view({2, 4});
  EXPECT_TRUE(tensors_equal(model::document_ids(tokens, kEos), want));
}

TEST(DocumentMaskingErrors, DocumentsMustMatchTheTokenShape) {
  model::MoRModel m(tiny_config());
  model::ForwardOptions opt;
  opt.documents = at::zeros({2, 3}, at::kLong);
  EXPECT_TRUE(throws_error_containing([&] { m.forward(at::zeros({2, 4}, at::kLong), opt); },
                                      "documents must be [batch, seq]"));
}

}  // namespace
}  // namespace mor::testing
