// The engine on tiny models: greedy generation equals a plain loop of full causal forwards, for a
// request alone and inside a mixed batch (different prompts, lengths and depths), with chunked
// prefill and with preemption forced by a small K/V pool; echo logprobs equal log-softmax of the full
// forward; the K/V written per cache slot is exactly what the depths predict; stop strings,
// max_tokens and EOS end requests with the right finish reason; a full queue is refused; the kernel
// attention backend (reference kernels, paged decode over the block pool) gives the same tokens.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <thread>

#include "mor/engine/engine.h"
#include "mor/model/decode.h"
#include "mor/model/model.h"
#include "support/test_helpers.h"

namespace mor::engine {
namespace {

using config::Sharing;

const std::string kTokenizer = std::string(MOR_SOURCE_DIR) + "/tests/fixtures/tokenizer/mor-trained/bytelevel.json";

struct Case {
  const char* name;
  config::ModelConfig model;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

config::ModelConfig with_vocab(config::ModelConfig c) {
  c.vocab_size = 640;  // covers the 600-token fixture tokenizer
  c.max_seq_len = 96;
  c.init_std = 0.2;
  return c;
}

std::vector<Case> cases() {
  auto ec = with_vocab(testing::expert_config(Sharing::kMiddleCycle, 3, 5));
  auto ec_share = ec;
  ec_share.kv_mode = config::KvMode::kShare;
  auto tc = with_vocab(testing::token_config(Sharing::kMiddleCycle, 3, 5));
  return {{"vanilla", with_vocab(testing::tiny_config())}, {"expert", ec}, {"expert_share", ec_share}, {"token", tc}};
}

// Greedy continuation by full forwards, and the depth of every processed token.
std::vector<int32_t> reference_greedy(const model::MoRModel& m, std::vector<int32_t> tokens, int64_t n) {
  const at::NoGradGuard no_grad;
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> ids(tokens.begin(), tokens.end());
    const at::Tensor logits = m.forward(at::tensor(ids, at::kLong).view({1, -1})).logits[0][-1];
    const auto next = static_cast<int32_t>(logits.argmax().item<int64_t>());
    out.push_back(next);
    tokens.push_back(next);
  }
  return out;
}

std::vector<std::vector<int32_t>> prompts(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> out;
  for (int64_t i = 0; i < count; ++i) {
    std::vector<int32_t> p(3 + rng() % 30);
    for (auto& t : p) t = static_cast<int32_t>(rng() % 600);
    out.push_back(p);
  }
  return out;
}

// Greedy, exactly `n` new tokens (EOS ignored).
CompletionRequest greedy_request(const std::vector<int32_t>& prompt, int64_t n) {
  CompletionRequest r;
  r.prompt = prompt;
  r.sampling.temperature = 0.0;
  r.sampling.max_tokens = n;
  r.sampling.ignore_eos = true;
  return r;
}

std::vector<int32_t> drain(CompletionStream& s) {
  std::vector<int32_t> ids;
  TokenInfo t;
  while (s.next(t)) ids.push_back(t.id);
  return ids;
}

class EngineTest : public ::testing::TestWithParam<Case> {};

TEST_P(EngineTest, GreedyEqualsFullForwardAloneInABatchAndUnderPreemption) {
  auto m = std::make_shared<model::MoRModel>(GetParam().model);
  if (GetParam().model.router.kind != config::RouterKind::kNone) {
    testing::mix_routing_depth(*m, testing::random_tokens(1, 40, 600, 5), model::ForwardOptions{});
  }
  const auto ps = prompts(6, 11);
  const int64_t gen = 12;
  std::vector<std::vector<int32_t>> expected;
  for (const auto& p : ps) expected.push_back(reference_greedy(*m, p, gen));

  // Budgets: roomy; tight token budget (chunked prefill); a K/V pool small enough to preempt;
  // each with depth-wise batching (chunks at different recursions share block calls) and without.
  for (int variant = 0; variant < 6; ++variant) {
    const bool depth_wise = variant < 3;
    SCOPED_TRACE(std::string(GetParam().name) + " variant " + std::to_string(variant % 3) +
                 (depth_wise ? " depth-wise" : " per-step"));
    EngineOptions eo;
    eo.depth_wise_batching = depth_wise;
    eo.kv_block_size = 4;
    eo.scheduler.max_batch_tokens = variant % 3 == 1 ? 7 : 512;
    eo.kv_memory_mb = 1;
    if (variant % 3 == 2) eo.kv_blocks = 70;  // about one request's worst case: forces preemption
    Engine engine(m, io::Tokenizer::from_file(kTokenizer), "tiny", std::nullopt, eo);
    std::vector<std::unique_ptr<CompletionStream>> streams;
    for (const auto& p : ps) streams.push_back(engine.submit(greedy_request(p, gen)));
    engine.run_until_idle();
    for (size_t i = 0; i < ps.size(); ++i) {
      EXPECT_EQ(drain(*streams[i]), expected[i]) << "request " << i;
      EXPECT_EQ(streams[i]->finish_reason(), "length") << streams[i]->error();
    }
    EXPECT_EQ(engine.kv().used_blocks(), 0) << "K/V blocks leaked";
    if (variant % 3 == 2) EXPECT_GT(engine.stats().preemptions, 0) << "the small pool should force preemption";
    if (variant % 3 == 1) EXPECT_GT(engine.stats().steps, 10);
    if (depth_wise && m->layout().num_recursions > 1) {
      EXPECT_GT(engine.stats().mixed_depth_calls, 0) << "no block call mixed recursions";
    } else {
      EXPECT_EQ(engine.stats().mixed_depth_calls, 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, EngineTest, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

TEST(Engine, ReferenceKernelBackendDecodesThroughThePagedPathToTheSameGreedyTokens) {
  // The kernel attention backend over the float64 reference kernels: decode steps and short
  // prefill chunks read the engine's block pool through the paged kernel; the greedy tokens equal
  // full forwards with the ATen path (float64, so that near-ties cannot flip a token).
  for (const auto& c : {cases()[0], cases()[1], cases()[2]}) {
    auto m = std::make_shared<model::MoRModel>(c.model, at::kDouble);
    if (c.model.router.kind != config::RouterKind::kNone) {
      testing::mix_routing_depth(*m, testing::random_tokens(1, 40, 600, 5), model::ForwardOptions{});
    }
    const auto ps = prompts(5, 13);
    const int64_t gen = 10;
    std::vector<std::vector<int32_t>> expected;
    for (const auto& p : ps) expected.push_back(reference_greedy(*m, p, gen));
    auto paged_calls = std::make_shared<int64_t>(0);
    model::KernelOps ops = model::reference_kernel_ops();
    ops.paged = [paged_calls, inner = ops.paged](const model::PagedAttentionInputs& in) {
      ++*paged_calls;
      return inner(in);
    };
    m->set_attention_backend(model::make_kernel_attention(ops));
    for (int variant = 0; variant < 3; ++variant) {
      SCOPED_TRACE(std::string(c.name) + " variant " + std::to_string(variant));
      EngineOptions eo;
      eo.kv_block_size = 4;
      eo.depth_wise_batching = variant != 2;
      eo.scheduler.max_batch_tokens = variant == 1 ? 7 : 512;
      eo.kv_memory_mb = 1;
      if (variant == 2) eo.kv_blocks = 70;  // preemption
      const int64_t before = *paged_calls;
      Engine engine(m, io::Tokenizer::from_file(kTokenizer), "tiny", std::nullopt, eo);
      std::vector<std::unique_ptr<CompletionStream>> streams;
      for (const auto& p : ps) streams.push_back(engine.submit(greedy_request(p, gen)));
      engine.run_until_idle();
      for (size_t i = 0; i < ps.size(); ++i) {
        EXPECT_EQ(drain(*streams[i]), expected[i]) << "request " << i;
        EXPECT_EQ(streams[i]->finish_reason(), "length") << streams[i]->error();
      }
      EXPECT_EQ(engine.kv().used_blocks(), 0) << "K/V blocks leaked";
      EXPECT_GT(*paged_calls, before) << "the paged path did not run";
    }
  }
}


TEST(Engine, EchoLogprobsEqualTheFullForward) {
  auto m = std::make_shared<model::MoRModel>(cases()[1].model);  // expert-choice
  testing::mix_routing_depth(*m, testing::random_tokens(1, 40, 600, 5), model::ForwardOptions{});
  EngineOptions eo;
  eo.kv_block_size = 4;
  eo.scheduler.max_batch_tokens = 9;  // the prompt arrives in chunks: logprobs across chunk borders
  Engine engine(m, io::Tokenizer::from_file(kTokenizer), "tiny", std::nullopt, eo);
  const std::vector<int32_t> prompt = prompts(1, 3)[0];
  CompletionRequest r;
  r.prompt = prompt;
  r.echo = true;
  r.sampling.max_tokens = 0;
  r.sampling.logprobs = 2;
  auto stream = engine.submit(r);
  engine.run_until_idle();
  const auto info = stream->prompt_tokens();
  ASSERT_EQ(info.size(), prompt.size());
  EXPECT_FALSE(info[0].logprob.has_value());
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  const at::NoGradGuard no_grad;
  const at::Tensor logp =
      at::log_softmax(m->forward(at::tensor(ids, at::kLong).view({1, -1})).logits[0].to(at::kDouble), -1);
  for (size_t p = 1; p < prompt.size(); ++p) {
    ASSERT_TRUE(info[p].logprob.has_value());
    EXPECT_NEAR(*info[p].logprob, logp[p - 1][prompt[p]].item<double>(), 1e-4) << "position " << p;
    ASSERT_EQ(info[p].top.size(), 2u);
    EXPECT_EQ(info[p].top[0].first, logp[p - 1].argmax().item<int64_t>());
    EXPECT_EQ(info[p].id, prompt[p]);
  }
  TokenInfo t;
  EXPECT_FALSE(stream->next(t));
  EXPECT_EQ(stream->finish_reason(), "length");
}

TEST(Engine, KvWrittenPerSlotIsWhatTheDepthsPredict) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    auto m = std::make_shared<model::MoRModel>(c.model);
    if (c.model.router.kind != config::RouterKind::kNone) {
      testing::mix_routing_depth(*m, testing::random_tokens(1, 40, 600, 5), model::ForwardOptions{});
    }
    EngineOptions eo;
    eo.kv_block_size = 4;
    Engine engine(m, io::Tokenizer::from_file(kTokenizer), "tiny", std::nullopt, eo);
    const auto ps = prompts(4, 21);
    const int64_t gen = 6;
    std::vector<std::unique_ptr<CompletionStream>> streams;
    for (const auto& p : ps) streams.push_back(engine.submit(greedy_request(p, gen)));
    engine.run_until_idle();
    // Every processed token (prompt + generated but the last) wrote one entry per slot it reached:
    // prelude/coda slots always, the slots of recursion r when its depth exceeds r.
    const model::CacheLayout layout = model::cache_layout(c.model);
    std::vector<int64_t> expected(static_cast<size_t>(layout.num_slots), 0);
    for (size_t i = 0; i < ps.size(); ++i) {
      std::vector<int64_t> ids(ps[i].begin(), ps[i].end());
      const auto gen_ids = drain(*streams[i]);
      ids.insert(ids.end(), gen_ids.begin(), gen_ids.end() - 1);
      const at::NoGradGuard no_grad;
      const at::Tensor depth = m->forward(at::tensor(ids, at::kLong).view({1, -1})).depth[0];
      for (int64_t s = 0; s < layout.num_slots; ++s) {
        const int64_t r = layout.slot_recursion[static_cast<size_t>(s)];
        expected[static_cast<size_t>(s)] += r < 0 ? depth.numel() : depth.gt(r).sum().item<int64_t>();
      }
    }
    EXPECT_EQ(engine.stats().slot_tokens, expected);
    EXPECT_EQ(engine.stats().preemptions, 0);
  }
}

TEST(Engine, StopStringsEosMaxTokensAndAFullQueue) {
  auto m = std::make_shared<model::MoRModel>(cases()[0].model);
  const io::Tokenizer tok = io::Tokenizer::from_file(kTokenizer);
  const std::vector<int32_t> prompt = prompts(1, 8)[0];
  const auto greedy = reference_greedy(*m, prompt, 8);
  const std::string text = tok.decode(greedy);
  {
    // EOS: the greedy token at step 3 declared end-of-text: generation stops before it.
    EngineOptions eo;
    Engine engine(m, io::Tokenizer::from_file(kTokenizer), "tiny", greedy[3], eo);
    CompletionRequest r;
    r.prompt = prompt;
    r.sampling.temperature = 0.0;
    r.sampling.max_tokens = 8;
    auto s = engine.submit(r);
    engine.run_until_idle();
    const auto ids = drain(*s);
    const auto first_eos = std::find(greedy.begin(), greedy.end(), greedy[3]) - greedy.begin();
    EXPECT_EQ(static_cast<int64_t>(ids.size()), first_eos);
    EXPECT_EQ(s->finish_reason(), "stop");
  }
  {
    // A stop string taken from the middle of the greedy text: the output ends right before it.
    const size_t cut = text.size() / 2;
    const std::string stop = text.substr(cut, std::min<size_t>(3, text.size() - cut));
    EngineOptions eo;
    Engine engine(m, io::Tokenizer::from_file(kTokenizer), "tiny", std::nullopt, eo);
    CompletionRequest r;
    r.prompt = prompt;
    r.sampling.temperature = 0.0;
    r.sampling.max_tokens = 8;
    r.sampling.stop = {stop};
    auto s = engine.submit(r);
    engine.run_until_idle();
    std::string got;
    TokenInfo t;
    while (s->next(t)) got += t.text;
    EXPECT_EQ(got, text.substr(0, text.find(stop)));
    EXPECT_EQ(s->finish_reason(), "stop");
  }
  {
    EngineOptions eo;
    eo.scheduler.max_queue = 2;
    Engine engine(m, io::Tokenizer::from_file(kTokenizer), "tiny", std::nullopt, eo);
    CompletionRequest r;
    r.prompt = prompt;
    r.sampling.max_tokens = 2;
    auto a = engine.submit(r), b = engine.submit(r);
    EXPECT_THROW(engine.submit(r), QueueFull);
    r.sampling.max_tokens = 1000;
    EXPECT_TRUE(testing::throws_error_containing([&] { engine.submit(r); }, "max_tokens"));
    engine.run_until_idle();
    EXPECT_EQ(drain(*a).size(), 2u);
    EXPECT_EQ(a->finish_reason(), "length");
  }
}

TEST(Engine, BackgroundThreadServesConcurrentClientsAndCancels) {
  auto m = std::make_shared<model::MoRModel>(cases()[1].model);
  EngineOptions eo;
  eo.kv_block_size = 8;
  Engine engine(m, io::Tokenizer::from_file(kTokenizer), "tiny", std::nullopt, eo);
  engine.start();
  const auto ps = prompts(8, 31);
  std::vector<std::vector<int32_t>> got(ps.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < ps.size(); ++i) {
    clients.emplace_back([&, i] {
      auto s = engine.submit(greedy_request(ps[i], 5));
      got[i] = drain(*s);
    });
  }
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(got[i], reference_greedy(*m, ps[i], 5)) << "client " << i;
  CompletionRequest r;
  r.prompt = ps[0];
  r.sampling.max_tokens = 50;
  r.sampling.ignore_eos = true;
  auto s = engine.submit(r);
  TokenInfo t;
  ASSERT_TRUE(s->next(t));
  s->cancel();
  while (s->next(t)) {
  }
  EXPECT_EQ(s->finish_reason(), "abort");
  engine.stop();
  EXPECT_EQ(engine.kv().used_blocks(), 0);
}
}  // namespace
}  // namespace mor::engine
