// Forward+backward training-step throughput (tokens/s) of the tiny presets on the CPU, and forward
// only with causal routing. Items/s in the output are tokens/s.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <benchmark/benchmark.h>

#include <string>

#include "mor/config/config.h"
#include "mor/model/model.h"

namespace {

// "tiny-mor-ec" loads the preset; "small-mor-ec" the same preset widened so that matmuls, not
// per-op overhead, dominate (d 256, ff 704, 8 heads, 10 layers, max_seq_len 512).
mor::config::Config preset(const std::string& name) {
  const bool small = name.rfind("small-", 0) == 0;
  const std::string file = std::string(MOR_SOURCE_DIR) + "/configs/model/tiny-" +
                           name.substr(small ? 6 : 5) + ".yaml";
  if (!small) return mor::config::load({file});
  return mor::config::load({file}, {"model.hidden_size=256", "model.intermediate_size=704",
                                    "model.num_heads=8", "model.num_kv_heads=4", "model.num_layers=10",
                                    "model.max_seq_len=512"});
}

void train_step(benchmark::State& state, const std::string& name) {
  const auto cfg = preset(name);
  mor::model::MoRModel model(cfg.model);
  const int64_t batch = state.range(0), seq = state.range(1);
  const at::Tensor tokens = at::randint(cfg.model.vocab_size, {batch, seq + 1}, at::kLong);
  const at::Tensor inputs = tokens.narrow(1, 0, seq), targets = tokens.narrow(1, 1, seq);
  mor::model::ForwardOptions opt;
  opt.training = true;
  for (auto _ : state) {
    model.zero_grad();
    const auto out = model.forward(inputs, opt);
    model.loss(out, targets).total.backward();
  }
  state.SetItemsProcessed(state.iterations() * batch * seq);
}

void forward_causal(benchmark::State& state, const std::string& name) {
  const auto cfg = preset(name);
  mor::model::MoRModel model(cfg.model);
  const int64_t batch = state.range(0), seq = state.range(1);
  const at::Tensor inputs = at::randint(cfg.model.vocab_size, {batch, seq}, at::kLong);
  mor::model::ForwardOptions opt;
  opt.training = false;
  const at::NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(model.forward(inputs, opt).logits);
  state.SetItemsProcessed(state.iterations() * batch * seq);
}

}  // namespace

BENCHMARK_CAPTURE(train_step, tiny_vanilla, std::string("tiny-vanilla"))->Args({8, 128})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(train_step, tiny_recursive, std::string("tiny-recursive"))->Args({8, 128})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(train_step, tiny_mor_ec, std::string("tiny-mor-ec"))->Args({8, 128})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(train_step, tiny_mor_tc, std::string("tiny-mor-tc"))->Args({8, 128})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(train_step, small_vanilla, std::string("small-vanilla"))->Args({4, 512})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(train_step, small_mor_ec, std::string("small-mor-ec"))->Args({4, 512})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(train_step, small_mor_tc, std::string("small-mor-tc"))->Args({4, 512})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(forward_causal, tiny_vanilla, std::string("tiny-vanilla"))->Args({8, 128})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(forward_causal, tiny_mor_ec, std::string("tiny-mor-ec"))->Args({8, 128})->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
