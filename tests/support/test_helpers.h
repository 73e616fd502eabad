// Shared helpers of the model tests: tiny configurations built in code, seeded random tokens and
// targets, gradient snapshots and tensor comparisons with readable failure messages.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "mor/config/config.h"
#include "mor/model/model.h"

namespace mor::testing {

// vocab 61, hidden 32, 4 heads, 2 KV heads, ff 48, max_seq_len 64, 4 layers, vanilla, untied off.
config::ModelConfig tiny_config();

// Recursive (router none) with the given sharing, N_r and unrolled depth.
config::ModelConfig recursive_config(config::Sharing sharing, int64_t num_recursions,
                                     int64_t num_layers);

// Expert-choice MoR on top of recursive_config (linear sigmoid router, aux loss, default caps).
config::ModelConfig expert_config(config::Sharing sharing, int64_t num_recursions,
                                  int64_t num_layers);

// Token-choice MoR on top of recursive_config (linear softmax router, balancing loss).
config::ModelConfig token_config(config::Sharing sharing, int64_t num_recursions,
                                 int64_t num_layers);

// [B, T] int64 uniform in [0, vocab), from a std::mt19937_64 seeded with `seed`.
at::Tensor random_tokens(int64_t batch, int64_t length, int64_t vocab, uint64_t seed);

// Like random_tokens, with `ignored_per_row` positions of each row set to -100.
at::Tensor random_targets(int64_t batch, int64_t length, int64_t vocab, uint64_t seed,
                          int64_t ignored_per_row = 0);

// Multiplies every router / auxiliary-router weight in place (no autograd record).
void scale_router_weights(const model::MoRModel& model, double factor);

// Scales the router weights (x4 per try, at most `tries` times) until the model's depth on
// `tokens` has a token below N_r and a token at N_r. Returns whether it got there.
bool mix_routing_depth(const model::MoRModel& model, const at::Tensor& tokens,
                       const model::ForwardOptions& options, int tries = 10);

// True for names of expert/token routers and auxiliary routers.
bool is_router_param(const std::string& name);

// name -> clone of the current gradient (zeros where the gradient is undefined).
std::map<std::string, at::Tensor> snapshot_grads(const model::MoRModel& model);

// |actual - expected| <= atol + rtol * max|expected| elementwise (same shape; both cast to double).
::testing::AssertionResult tensors_close(const at::Tensor& actual, const at::Tensor& expected,
                                         double rtol, double atol);

// Exactly equal values (after casting to int64).
::testing::AssertionResult tensors_equal(const at::Tensor& actual, const at::Tensor& expected);

// Calls fn and checks it throws mor::Error whose message contains `needle`.
::testing::AssertionResult throws_error_containing(const std::function<void()>& fn,
                                                   const std::string& needle);

double max_abs(const at::Tensor& t);

// Number of elements of a bool/int tensor that are nonzero.
int64_t count_true(const at::Tensor& t);

}  // namespace mor::testing
