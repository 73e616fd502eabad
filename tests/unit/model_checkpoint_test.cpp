// Activation checkpointing recomputes each layer in backward: the loss and every gradient equal
// the plain forward's, for every model variant and KV mode (KV-sharing block layers are exempt
// from recomputation but must still be correct around recomputed ones).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function.h>

#include <set>

#include "support/test_helpers.h"

namespace mor::testing {
namespace {

struct Variant {
  std::string name;
  config::ModelConfig cfg;
};

std::vector<Variant> variants() {
  std::vector<Variant> out;
  out.push_back({"vanilla", tiny_config()});
  out.push_back({"recursive_cycle", recursive_config(config::Sharing::kCycle, 2, 4)});
  out.push_back({"expert_middle_cycle", expert_config(config::Sharing::kMiddleCycle, 2, 4)});
  out.push_back({"token_middle_cycle", token_config(config::Sharing::kMiddleCycle, 2, 4)});
  auto share = expert_config(config::Sharing::kMiddleCycle, 2, 4);
  share.kv_mode = config::KvMode::kShare;
  out.push_back({"expert_kv_share", share});
  out.push_back({"sequence", recursive_config(config::Sharing::kSequence, 2, 4)});
  return out;
}

TEST(ModelCheckpointing, RecomputedLayersGiveTheSameLossAndGradients) {
  for (const Variant& v : variants()) {
    const at::Tensor tokens = random_tokens(3, 12, v.cfg.vocab_size, 3);
    const at::Tensor targets = random_targets(3, 12, v.cfg.vocab_size, 4);
    auto run = [&](bool checkpoint, double* loss) {
      model::MoRModel m(v.cfg);
      model::ForwardOptions fo;
      fo.training = true;
      fo.checkpoint_layers = checkpoint;
      const auto out = m.forward(tokens, fo);
      const auto terms = m.loss(out, targets);
      *loss = terms.total.item<double>();
      terms.total.backward();
      return snapshot_grads(m);
    };
    double plain_loss = 0, ckpt_loss = 0;
    const auto plain = run(false, &plain_loss);
    const auto ckpt = run(true, &ckpt_loss);
    EXPECT_EQ(plain_loss, ckpt_loss) << v.name;
    for (const auto& [name, g] : plain) {
      EXPECT_TRUE(tensors_close(ckpt.at(name), g, 1e-5, 1e-7)) << v.name << " " << name;
      EXPECT_GT(g.abs().sum().item<double>(), 0.0) << v.name << " " << name << " has no gradient at all";
    }
  }
}

// Autograd nodes reachable from `t` whose name mentions "CheckpointedLayer".
int64_t checkpoint_nodes(const at::Tensor& t) {
  std::set<torch::autograd::Node*> seen;
  std::vector<torch::autograd::Node*> todo{t.grad_fn().get()};
  int64_t count = 0;
  while (!todo.empty()) {
    torch::autograd::Node* n = todo.back();
    todo.pop_back();
    if (n == nullptr || !seen.insert(n).second) continue;
    if (n->name().find("CheckpointedLayer") != std::string::npos) ++count;
    for (const auto& e : n->next_edges()) todo.push_back(e.function.get());
  }
  return count;
}

TEST(ModelCheckpointing, EveryLayerButKvSharingOnesIsRecomputed) {
  auto count = [](const config::ModelConfig& cfg, bool on) {
    model::MoRModel m(cfg);
    model::ForwardOptions fo;
    fo.training = true;
    fo.checkpoint_layers = on;
    return checkpoint_nodes(m.forward(random_tokens(2, 8, cfg.vocab_size, 6), fo).logits);
  };
  const auto vanilla = tiny_config();
  EXPECT_EQ(count(vanilla, true), vanilla.num_layers);
  EXPECT_EQ(count(vanilla, false), 0);
  const auto ec = expert_config(config::Sharing::kMiddleCycle, 2, 4);  // 1 + 2 x 1 + 1 layers
  EXPECT_EQ(count(ec, true), 4);
  auto share = ec;
  share.kv_mode = config::KvMode::kShare;  // block layers read or write the shared K/V
  EXPECT_EQ(count(share, true), 2);
}

TEST(ModelCheckpointing, IsOffOutsideTrainingAndWithoutGradients) {
  const auto cfg = expert_config(config::Sharing::kMiddleCycle, 2, 4);
  model::MoRModel m(cfg);
  model::ForwardOptions fo;
  fo.checkpoint_layers = true;  // inference: ignored
  const at::Tensor tokens = random_tokens(2, 8, cfg.vocab_size, 5);
  model::ForwardOptions plain;
  EXPECT_TRUE(at::equal(m.forward(tokens, fo).logits, m.forward(tokens, plain).logits));
}

}  // namespace
}  // namespace mor::testing
