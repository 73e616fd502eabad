// `mor model logits BUNDLE --tokens 1,2,3 [--out logits.safetensors]` (fp32 CPU logits of one
// sequence, for parity checks against other implementations) and `mor model generate BUNDLE
// --prompt TEXT` (a plain sampling loop: one full forward per new token, no KV cache).
// Both join the `model` group of model_cmd.cpp (registered under a later name, so that group exists).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "mor/core/error.h"
#include "mor/io/safetensors.h"
#include "mor/io/tokenizer.h"
#include "mor/model/bundle.h"

namespace mor::tools {

CLI::App* command_group(CLI::App& app, const std::string& name, const std::string& description);  // export_cmd.cpp

namespace {

std::vector<int64_t> parse_tokens(const std::string& text, int64_t vocab) {
  std::vector<int64_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int64_t id = -1;
    try {
      id = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    MOR_CHECK(used > 0 && used == item.size(), "--tokens: '", item, "' is not a token id (expected e.g. 1,2,3)");
    MOR_CHECK(id >= 0 && id < vocab, "--tokens: id ", id, " is outside the vocabulary [0, ", vocab, ")");
    ids.push_back(id);
  }
  MOR_CHECK(!ids.empty(), "--tokens: no token ids given");
  return ids;
}

struct LogitsFlags {
  std::string bundle, tokens, out;
};

struct GenerateFlags {
  std::string bundle, prompt;
  int64_t max_tokens = 32;
  double temperature = 0.0;
  uint64_t seed = 0;
};

int run_logits(const LogitsFlags& f) {
  const auto model = model::load_bundle(f.bundle, at::kFloat, at::kCPU);
  const std::vector<int64_t> ids = parse_tokens(f.tokens, model->config().vocab_size);
  MOR_CHECK(static_cast<int64_t>(ids.size()) <= model->config().max_seq_len, "--tokens: ", ids.size(),
            " tokens exceed the model's context of ", model->config().max_seq_len);
  const at::NoGradGuard no_grad;
  const at::Tensor tokens = at::tensor(ids, at::kLong).view({1, -1});
  const at::Tensor logits = model->forward(tokens).logits.to(at::kFloat).contiguous();
  const at::Tensor argmax = logits.argmax(-1).view(-1);
  std::printf("argmax:");
  for (int64_t i = 0; i < argmax.numel(); ++i) std::printf(" %lld", static_cast<long long>(argmax[i].item<int64_t>()));
  std::printf("\n");
  if (!f.out.empty()) {
    io::write_safetensors(f.out, {{"logits", io::DType::kF32, logits.sizes().vec(), logits.data_ptr()}},
                          {{"tokens", f.tokens}});
    std::printf("wrote logits %s to %s\n", "[1, T, V] F32", f.out.c_str());
  }
  return 0;
}

int run_generate(const GenerateFlags& f) {
  MOR_CHECK(f.max_tokens > 0, "--max-tokens: must be positive, got ", f.max_tokens);
  MOR_CHECK(f.temperature >= 0, "--temperature: must be >= 0, got ", f.temperature);
  const model::BundleInfo info = model::read_bundle_info(f.bundle);
  MOR_CHECK(!info.tokenizer_json.empty(), f.bundle, ": the bundle has no tokenizer.json; generate needs one");
  const io::Tokenizer tokenizer = io::Tokenizer::from_file(info.tokenizer_json);
  const auto model = model::load_bundle(f.bundle, at::kFloat, at::kCPU);
  const int64_t vocab = model->config().vocab_size, context = model->config().max_seq_len;
  std::optional<int64_t> eos = info.eos_token_id;
  if (!eos) {
    if (auto e = tokenizer.eos_id()) eos = *e;
  }
  const std::vector<int32_t> prompt = tokenizer.encode(f.prompt);
  MOR_CHECK(!prompt.empty(), "--prompt: encodes to no tokens");
  std::vector<int32_t> ids = prompt;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(f.seed);
  const at::NoGradGuard no_grad;
  for (int64_t step = 0; step < f.max_tokens; ++step) {
    const int64_t begin = std::max<int64_t>(0, static_cast<int64_t>(ids.size()) - context);
    std::vector<int64_t> window(ids.begin() + begin, ids.end());
    const at::Tensor tokens = at::tensor(window, at::kLong).view({1, -1});
    at::Tensor last = model->forward(tokens).logits[0][-1].to(at::kFloat);
    if (last.size(0) > vocab) last = last.narrow(0, 0, vocab);
    int64_t next = 0;
    if (f.temperature == 0.0) {
      next = last.argmax().item<int64_t>();
    } else {
      const at::Tensor probs = at::softmax(last / f.temperature, -1);
      next = at::multinomial(probs, 1, false, gen).item<int64_t>();
    }
    if (next >= tokenizer.vocab_size()) break;  // an id the tokenizer cannot print
    ids.push_back(static_cast<int32_t>(next));
    if (eos && next == *eos) break;
  }
  const std::string prefix = tokenizer.decode(prompt);
  const std::string all = tokenizer.decode(ids, /*skip_special=*/true);
  std::cout << (all.rfind(prefix, 0) == 0 ? all.substr(prefix.size()) : all) << "\n";
  return 0;
}

void register_model_run_commands(CLI::App& app, Action& action) {
  CLI::App* group = command_group(app, "model", "Inspect and run models");

  auto lf = std::make_shared<LogitsFlags>();
  CLI::App* logits = group->add_subcommand("logits", "Logits of a bundle's model on given token ids (fp32, CPU)");
  logits->add_option("bundle", lf->bundle, "Bundle directory (mor export / mor import)")->required();
  logits->add_option("--tokens", lf->tokens, "Comma-separated token ids, e.g. 1,2,3")->required();
  logits->add_option("-o,--out", lf->out, "Write the logits [1, T, V] as F32 safetensors (tensor 'logits')");
  logits->callback([lf, &action] { action = [lf] { return run_logits(*lf); }; });

  auto gf = std::make_shared<GenerateFlags>();
  CLI::App* generate = group->add_subcommand("generate", "Continue a prompt with a bundle's model (CPU, no KV cache)");
  generate->add_option("bundle", gf->bundle, "Bundle directory with tokenizer.json")->required();
  generate->add_option("-p,--prompt", gf->prompt, "Prompt text")->required();
  generate->add_option("-n,--max-tokens", gf->max_tokens, "New tokens at most (stops at EOS)")->capture_default_str();
  generate->add_option("-t,--temperature", gf->temperature, "Sampling temperature; 0: greedy")->capture_default_str();
  generate->add_option("--seed", gf->seed, "Sampling seed")->capture_default_str();
  generate->callback([gf, &action] { action = [gf] { return run_generate(*gf); }; });
}

}  // namespace

// "model_run" sorts after "model": model_cmd.cpp has created the group by then.
MOR_REGISTER_COMMANDS("model_run", register_model_run_commands);

}  // namespace mor::tools
