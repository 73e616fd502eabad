// `mor generate` (stream a continuation, optionally coloured by recursion depth and rendered to an
// HTML depth map), `mor serve` (the OpenAI-compatible HTTP server) and `mor bench` (offline
// throughput, latency percentiles and K/V memory, MoR against a vanilla model of the same
// effective depth) -- all on the inference engine (mor::engine).
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include <pthread.h>
#include <unistd.h>

#include "commands.h"
#include "model_loading.h"
#include "mor/config/config.h"
#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/engine/engine.h"
#include "mor/engine/http_server.h"
#include "mor/model/bundle.h"
#include "mor/model/layout.h"
#include "mor/model/model.h"
#include "mor/train/export.h"

namespace mor::tools {

namespace {

struct ModelFlags {
  std::string path;
  std::string device = "auto";
  std::string dtype = "auto";
  std::string tokenizer;
  ConfigFlags config;  // engine section
};

struct Loaded {
  std::shared_ptr<model::MoRModel> model;
  std::optional<io::Tokenizer> tokenizer;
  std::optional<int32_t> eos;
  std::string name;
  config::EngineConfig engine;
};

void add_model_flags(CLI::App* cmd, ModelFlags& f) {
  cmd->add_option("model", f.path,
                  "Bundle (mor export / mor import), checkpoint or run directory, or a config YAML (initial weights)")
      ->required();
  cmd->add_option("--device", f.device, "auto | cpu | cuda")->capture_default_str();
  cmd->add_option("--dtype", f.dtype, "auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16")
      ->capture_default_str();
  cmd->add_option("--tokenizer", f.tokenizer, "tokenizer.json to use instead of the model's");
  cmd->add_option("--config", f.config.files, "YAML with an engine section (e.g. configs/engine/default.yaml)");
  cmd->add_option("--set", f.config.overrides, "Override a config key, e.g. --set engine.kv_memory_mb=4096");
}

Loaded load(const ModelFlags& f) {
  Loaded out;
  const bool from_yaml = core::ends_with(f.path, ".yaml") || core::ends_with(f.path, ".yml");
  if (!from_yaml && (!f.config.files.empty() || !f.config.overrides.empty())) {
    out.engine = config::load(f.config.files, f.config.overrides).engine;
  }
  const Placement place = resolve_placement(f.device, f.dtype);
  std::string tokenizer_path;
  if (from_yaml) {
    // A configuration: the model it describes with its initial (random) weights -- for benchmarks,
    // where speed and memory do not depend on the values (routing does: see the depth histogram).
    std::vector<std::string> files = {f.path};
    files.insert(files.end(), f.config.files.begin(), f.config.files.end());
    const config::Config cfg = config::load(files, f.config.overrides);
    out.model = std::make_shared<model::MoRModel>(cfg.model, place.dtype, place.device);
    tokenizer_path = cfg.data.tokenizer;
    out.engine = cfg.engine;
  } else {
    InferenceModel m = load_inference_model(f.path, place);
    out.model = std::move(m.model);
    tokenizer_path = m.tokenizer_path;
    if (m.eos) out.eos = static_cast<int32_t>(*m.eos);
  }
  if (!f.tokenizer.empty()) tokenizer_path = f.tokenizer;
  MOR_CHECK(!tokenizer_path.empty() && core::file_exists(tokenizer_path), f.path,
            ": no tokenizer.json found; pass --tokenizer FILE");
  out.tokenizer.emplace(io::Tokenizer::from_file(tokenizer_path));
  if (!out.eos) {
    if (auto e = out.tokenizer->eos_id()) out.eos = *e;
  }
  out.name = out.model->config().name.empty() ? f.path : out.model->config().name;
  MOR_CHECK(out.engine.routing == config::RoutingMode::kCausal,
            "engine.routing: topk looks at future tokens and cannot generate token by token; use causal");
  return out;
}

engine::EngineOptions engine_options(const config::EngineConfig& e) {
  engine::EngineOptions o;
  o.kv_block_size = e.kv_block_size;
  o.kv_memory_mb = e.kv_memory_mb;
  o.scheduler.max_batch_tokens = e.max_batch_tokens;
  o.scheduler.max_running = e.max_running;
  o.scheduler.max_queue = e.max_queue;
  return o;
}

// ---------------------------------------------------------------------------------------------
// mor generate

struct GenerateFlags {
  ModelFlags model;
  std::string prompt;
  int64_t max_tokens = 64;
  double temperature = 0.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool show_depth = false;
  std::string depth_map;
};

// ANSI 256-colour background per depth: light (shallow) to dark (deep).
std::string depth_colour(int64_t depth, int64_t max_depth) {
  static const int kColours[] = {255, 153, 111, 69, 27, 21, 19, 17};
  const int64_t i = max_depth <= 0 ? 0 : std::min<int64_t>(7, depth * 7 / std::max<int64_t>(1, max_depth));
  const int bg = kColours[i];
  const int fg = i >= 3 ? 231 : 16;
  return "\033[48;5;" + std::to_string(bg) + ";38;5;" + std::to_string(fg) + "m";
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\n': out += "<br>\n"; break;
      default: out += c;
    }
  }
  return out;
}

void write_depth_map(const std::string& path, const std::string& model_name, const std::string& prompt,
                     const std::vector<std::pair<std::string, int64_t>>& tokens, int64_t max_depth) {
  std::ostringstream os;
  os << "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>mor depth map</title><style>\n"
     << "body{font-family:ui-monospace,monospace;max-width:60em;margin:2em auto;line-height:1.9}\n"
     << ".p{color:#777}.t{padding:1px 0;border-radius:3px}.legend span{padding:2px 8px;margin-right:4px}\n"
     << "</style></head><body>\n<h3>" << html_escape(model_name) << ": recursion depth per generated token</h3>\n"
     << "<p class=\"legend\">";
  auto shade = [&](int64_t d) {
    const double x = max_depth <= 0 ? 0.0 : static_cast<double>(d) / static_cast<double>(max_depth);
    const int light = static_cast<int>(std::lround(95 - 60 * x));
    return "hsl(220,80%," + std::to_string(light) + "%)";
  };
  for (int64_t d = 0; d <= max_depth; ++d) {
    os << "<span style=\"background:" << shade(d) << ";color:" << (d * 2 > max_depth ? "#fff" : "#000") << "\">depth "
       << d << "</span>";
  }
  os << "</p>\n<p><span class=\"p\">" << html_escape(prompt) << "</span>";
  for (const auto& [text, d] : tokens) {
    os << "<span class=\"t\" title=\"depth " << d << "\" style=\"background:" << shade(d)
       << ";color:" << (d * 2 > max_depth ? "#fff" : "#000") << "\">" << html_escape(text) << "</span>";
  }
  os << "</p>\n</body></html>\n";
  core::atomic_write(path, os.str());
}

int run_generate(const GenerateFlags& f) {
  Loaded m = load(f.model);
  engine::EngineOptions eo = engine_options(m.engine);
  eo.kv_memory_mb = std::min<int64_t>(eo.kv_memory_mb, 256);  // one request
  engine::Engine engine(m.model, std::move(*m.tokenizer), m.name, m.eos, eo);
  engine::CompletionRequest req;
  req.prompt = engine.tokenizer().encode(f.prompt);
  MOR_CHECK(!req.prompt.empty(), "--prompt: encodes to no tokens");
  req.sampling.max_tokens = f.max_tokens;
  req.sampling.temperature = f.temperature;
  req.sampling.top_k = f.top_k;
  req.sampling.top_p = f.top_p;
  req.sampling.seed = f.seed;
  req.sampling.stop = f.stop;
  const int64_t room = engine.max_context() - static_cast<int64_t>(req.prompt.size());
  MOR_CHECK(room > 0, "--prompt: ", req.prompt.size(), " tokens fill the model's context of ", engine.max_context());
  req.sampling.max_tokens = std::min(req.sampling.max_tokens, room);
  const int64_t max_depth = m.model->layout().num_recursions;
  const bool colour = f.show_depth && ::isatty(STDOUT_FILENO);
  const auto t0 = std::chrono::steady_clock::now();
  auto stream = engine.submit(req);
  engine.start();
  std::vector<std::pair<std::string, int64_t>> tokens;
  std::vector<int64_t> hist(static_cast<size_t>(max_depth + 1), 0);
  std::cout << f.prompt << std::flush;
  engine::TokenInfo t;
  while (stream->next(t)) {
    tokens.emplace_back(t.text, t.depth);
    ++hist[static_cast<size_t>(std::clamp<int64_t>(t.depth, 0, max_depth))];
    if (colour) {
      std::cout << depth_colour(t.depth, max_depth) << t.text << "\033[0m" << std::flush;
    } else if (f.show_depth) {
      std::cout << t.text << "[" << t.depth << "]" << std::flush;
    } else {
      std::cout << t.text << std::flush;
    }
  }
  engine.stop();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << std::endl;
  std::fprintf(stderr, "%zu tokens in %.2f s (%.1f tokens/s), finish: %s", tokens.size(), secs,
               static_cast<double>(tokens.size()) / std::max(secs, 1e-9), stream->finish_reason().c_str());
  if (max_depth > 0 && !tokens.empty()) {
    std::fprintf(stderr, ", depth:");
    for (int64_t d = 1; d <= max_depth; ++d) {
      std::fprintf(stderr, " %lld:%.0f%%", static_cast<long long>(d),
                   100.0 * static_cast<double>(hist[static_cast<size_t>(d)]) / static_cast<double>(tokens.size()));
    }
  }
  std::fprintf(stderr, "\n");
  if (!stream->error().empty()) fail("generation failed: ", stream->error());
  if (!f.depth_map.empty()) {
    write_depth_map(f.depth_map, m.name, f.prompt, tokens, max_depth);
    std::fprintf(stderr, "depth map: %s\n", f.depth_map.c_str());
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// mor serve

struct ServeFlags {
  ModelFlags model;
  std::string host;
  int port = -1;
};

int run_serve(const ServeFlags& f) {
  Loaded m = load(f.model);
  engine::EngineOptions eo = engine_options(m.engine);
  engine::HttpServerOptions ho;
  ho.host = f.host.empty() ? m.engine.host : f.host;
  ho.port = f.port >= 0 ? f.port : static_cast<int>(m.engine.port);
  // Block SIGINT/SIGTERM in every thread; one thread waits for them and stops the server.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  engine::Engine engine(m.model, std::move(*m.tokenizer), m.name, m.eos, eo);
  engine::HttpServer server(engine, ho);
  const int port = server.bind();
  engine.start();
  std::fprintf(stderr,
               "serving %s on http://%s:%d (POST /v1/completions, GET /health, GET /metrics); %lld K/V blocks of %lld "
               "tokens (%.0f MiB); Ctrl-C stops\n",
               m.name.c_str(), ho.host.c_str(), port, static_cast<long long>(engine.kv().num_blocks()),
               static_cast<long long>(engine.kv().block_size()),
               static_cast<double>(engine.kv().num_blocks() * engine.kv_bytes_per_block()) / (1 << 20));
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "mor serve: signal %d, stopping\n", sig);
    server.stop();
  });
  server.run();
  pthread_kill(waiter.native_handle(), SIGTERM);  // wake the waiter if the server stopped by itself
  waiter.join();
  engine.stop();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// mor bench

struct BenchFlags {
  ModelFlags model;
  std::string batch = "8";
  int64_t prompt_len = 128;
  int64_t gen_len = 128;
  int64_t requests = 0;
  std::string vanilla = "auto";
  uint64_t seed = 0;
  std::string out;
  bool per_step = false;
};

struct BenchResult {
  std::string name;
  int64_t parameters = 0, unrolled = 0, running = 0, requests = 0, generated = 0;
  double seconds = 0, tokens_per_s = 0;
  double ttft_p50 = 0, ttft_p90 = 0, latency_p50 = 0, latency_p90 = 0, latency_p99 = 0, tpot_p50 = 0;
  double kv_peak_mib = 0;
  std::vector<int64_t> slot_tokens;
  std::vector<int64_t> depth_histogram;  // generated tokens by depth
  int64_t mixed_depth_calls = 0, block_calls = 0;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = static_cast<size_t>(std::ceil(pos));
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

BenchResult bench_one(const std::string& name, std::shared_ptr<model::MoRModel> model, const io::Tokenizer& tok,
                      engine::EngineOptions eo, int64_t running, int64_t requests, int64_t prompt_len,
                      int64_t gen_len, uint64_t seed) {
  eo.scheduler.max_running = running;
  eo.scheduler.max_queue = std::max<int64_t>(requests, 1);
  engine::Engine engine(model, io::Tokenizer::from_json(tok.to_json(), "tokenizer"), name, std::nullopt, eo);
  std::mt19937_64 rng(seed);
  const int64_t vocab = std::min<int64_t>(tok.vocab_size(), model->config().vocab_size);
  std::vector<std::unique_ptr<engine::CompletionStream>> streams;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < requests; ++i) {
    engine::CompletionRequest r;
    r.prompt.resize(static_cast<size_t>(prompt_len));
    for (auto& t : r.prompt) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
    r.sampling.temperature = 0.0;
    r.sampling.max_tokens = gen_len;
    r.sampling.ignore_eos = true;
    streams.push_back(engine.submit(r));
  }
  engine.run_until_idle();
  BenchResult b;
  b.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const engine::EngineStats st = engine.stats();
  std::vector<double> ttft, lat, tpot;
  for (const auto& r : st.finished) {
    b.generated += r.generated;
    lat.push_back(r.finished - r.submitted);
    if (r.first_token > 0) ttft.push_back(r.first_token - r.submitted);
    if (r.generated > 1 && r.first_token > 0) tpot.push_back((r.finished - r.first_token) / (r.generated - 1));
  }
  b.name = name;
  b.parameters = model->num_parameters();
  b.unrolled = model->layout().unrolled_depth();
  b.running = running;
  b.requests = requests;
  b.tokens_per_s = static_cast<double>(b.generated) / b.seconds;
  b.ttft_p50 = percentile(ttft, 0.5);
  b.ttft_p90 = percentile(ttft, 0.9);
  b.latency_p50 = percentile(lat, 0.5);
  b.latency_p90 = percentile(lat, 0.9);
  b.latency_p99 = percentile(lat, 0.99);
  b.tpot_p50 = percentile(tpot, 0.5);
  b.kv_peak_mib = static_cast<double>(st.peak_kv_blocks * engine.kv_bytes_per_block()) / (1 << 20);
  b.slot_tokens = st.slot_tokens;
  b.depth_histogram = engine.metrics().depth_histogram;
  b.mixed_depth_calls = st.mixed_depth_calls;
  b.block_calls = st.block_calls;
  for (const auto& s : streams) {
    if (!s->error().empty()) fail("bench: a request failed: ", s->error());
  }
  return b;
}

int run_bench(const BenchFlags& f) {
  Loaded m = load(f.model);
  engine::EngineOptions eo = engine_options(m.engine);
  eo.depth_wise_batching = !f.per_step;
  MOR_CHECK(f.prompt_len > 0 && f.gen_len > 0, "--prompt-len and --gen-len must be positive");
  MOR_CHECK(f.prompt_len + f.gen_len <= m.model->config().max_seq_len, "--prompt-len + --gen-len (",
            f.prompt_len + f.gen_len, ") exceeds the model's context of ", m.model->config().max_seq_len);
  int64_t running = 0;
  if (f.batch == "max") {
    // As many as the K/V pool holds at the worst case (every token in every slot).
    const model::CacheLayout& layout = m.model->cache_slots();
    const int64_t blocks_per_seq =
        layout.num_slots * ((f.prompt_len + f.gen_len + eo.kv_block_size - 1) / eo.kv_block_size);
    const int64_t elem = static_cast<int64_t>(c10::elementSize(m.model->dtype()));
    const int64_t blocks = (eo.kv_memory_mb << 20) / (eo.kv_block_size * layout.bytes_per_token_slot(elem));
    running = std::max<int64_t>(1, blocks / std::max<int64_t>(1, blocks_per_seq));
  } else {
    try {
      running = std::stoll(f.batch);
    } catch (const std::exception&) {
      fail("--batch: '", f.batch, "' is not a number or 'max'");
    }
    MOR_CHECK(running > 0, "--batch must be positive or 'max'");
  }
  const int64_t requests = f.requests > 0 ? f.requests : running;
  std::fprintf(stderr, "bench: %lld requests, batch %lld, prompt %lld, generate %lld tokens each\n",
               static_cast<long long>(requests), static_cast<long long>(running), static_cast<long long>(f.prompt_len),
               static_cast<long long>(f.gen_len));
  std::vector<BenchResult> results;
  results.push_back(bench_one(m.name, m.model, *m.tokenizer, eo, running, requests, f.prompt_len, f.gen_len, f.seed));
  if (f.vanilla != "none") {
    std::shared_ptr<model::MoRModel> vanilla;
    std::string vname;
    if (f.vanilla == "auto") {
      // A vanilla Llama as deep as the MoR model's unrolled stack, with the same widths.
      config::ModelConfig vc = m.model->config();
      vc.name = "vanilla-" + std::to_string(m.model->layout().unrolled_depth()) + "L";
      vc.num_layers = m.model->layout().unrolled_depth();
      vc.recursion = config::RecursionConfig{};
      vc.router = config::RouterConfig{};
      vc.kv_mode = config::KvMode::kRecursion;
      vanilla = std::make_shared<model::MoRModel>(vc, m.model->dtype(), m.model->device());
      vname = vc.name + " (random init)";
    } else {
      ModelFlags vf = f.model;
      vf.path = f.vanilla;
      Loaded v = load(vf);
      vanilla = v.model;
      vname = v.name;
    }
    results.push_back(bench_one(vname, vanilla, *m.tokenizer, eo, running, requests, f.prompt_len, f.gen_len, f.seed));
  }
  std::printf("| model | params | layers (unrolled) | batch | tokens/s | TTFT p50 s | latency p50 / p90 / p99 s | per-token p50 ms | K/V peak MiB |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---|---:|---:|\n");
  for (const auto& b : results) {
    std::printf("| %s | %lld | %lld | %lld | %.1f | %.3f | %.2f / %.2f / %.2f | %.2f | %.1f |\n", b.name.c_str(),
                static_cast<long long>(b.parameters), static_cast<long long>(b.unrolled),
                static_cast<long long>(b.running), b.tokens_per_s, b.ttft_p50, b.latency_p50, b.latency_p90,
                b.latency_p99, b.tpot_p50 * 1e3, b.kv_peak_mib);
  }
  for (const auto& b : results) {
    int64_t total = 0;
    for (auto c : b.depth_histogram) total += c;
    if (b.depth_histogram.size() < 2 || total == 0) continue;
    std::printf("\n%s: generated tokens by depth:", b.name.c_str());
    for (size_t d = 1; d < b.depth_histogram.size(); ++d) {
      std::printf(" %zu:%.0f%%", d, 100.0 * static_cast<double>(b.depth_histogram[d]) / static_cast<double>(total));
    }
    std::printf("; block calls %lld, %lld mixing recursions (depth-wise batching)\n",
                static_cast<long long>(b.block_calls), static_cast<long long>(b.mixed_depth_calls));
  }
  if (results.size() == 2) {
    std::printf("\nMoR / vanilla: throughput %.2fx, K/V peak %.2fx, p50 latency %.2fx\n",
                results[0].tokens_per_s / results[1].tokens_per_s, results[0].kv_peak_mib / std::max(1e-9, results[1].kv_peak_mib),
                results[0].latency_p50 / std::max(1e-9, results[1].latency_p50));
  }
  if (!f.out.empty()) {
    std::ostringstream os;
    os << "{\"prompt_len\": " << f.prompt_len << ", \"gen_len\": " << f.gen_len << ", \"results\": [";
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& b = results[i];
      os << (i ? ", " : "") << "{\"name\": \"" << b.name << "\", \"parameters\": " << b.parameters
         << ", \"batch\": " << b.running << ", \"requests\": " << b.requests << ", \"generated\": " << b.generated
         << ", \"seconds\": " << b.seconds << ", \"tokens_per_s\": " << b.tokens_per_s << ", \"ttft_p50\": " << b.ttft_p50
         << ", \"latency_p50\": " << b.latency_p50 << ", \"latency_p90\": " << b.latency_p90
         << ", \"latency_p99\": " << b.latency_p99 << ", \"tpot_p50\": " << b.tpot_p50
         << ", \"kv_peak_mib\": " << b.kv_peak_mib << "}";
    }
    os << "]}\n";
    core::atomic_write(f.out, os.str());
  }
  return 0;
}

void register_engine_commands(CLI::App& app, Action& action) {
  auto g = std::make_shared<GenerateFlags>();
  CLI::App* gen = app.add_subcommand("generate", "Stream a continuation of a prompt (engine: paged K/V, causal routing)");
  add_model_flags(gen, g->model);
  gen->add_option("-p,--prompt", g->prompt, "Prompt text")->required();
  gen->add_option("-n,--max-tokens", g->max_tokens, "New tokens at most")->capture_default_str();
  gen->add_option("-t,--temperature", g->temperature, "0: greedy")->capture_default_str();
  gen->add_option("--top-k", g->top_k, "Keep the k most likely tokens (0: off)")->capture_default_str();
  gen->add_option("--top-p", g->top_p, "Nucleus mass (1: off)")->capture_default_str();
  gen->add_option("--seed", g->seed, "Sampling seed")->capture_default_str();
  gen->add_option("--stop", g->stop, "Stop string (repeatable)");
  gen->add_flag("--show-depth", g->show_depth, "Colour each token by its recursion depth (tags without a terminal)");
  gen->add_option("--depth-map", g->depth_map, "Write an HTML page with each token shaded by its depth");
  gen->callback([g, &action] { action = [g] { return run_generate(*g); }; });

  auto s = std::make_shared<ServeFlags>();
  CLI::App* serve = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/completions, /health, /metrics)");
  add_model_flags(serve, s->model);
  serve->add_option("--host", s->host, "Address to listen on (default engine.host: 127.0.0.1)");
  serve->add_option("--port", s->port, "Port (default engine.port: 8080; 0: any free port)");
  serve->callback([s, &action] { action = [s] { return run_serve(*s); }; });

  auto b = std::make_shared<BenchFlags>();
  CLI::App* bench = app.add_subcommand("bench", "Offline throughput / latency / K/V memory, MoR vs vanilla");
  add_model_flags(bench, b->model);
  bench->add_option("--batch", b->batch, "Sequences decoded together, or 'max' (as many as the K/V pool holds)")
      ->capture_default_str();
  bench->add_option("--prompt-len", b->prompt_len, "Prompt tokens per request")->capture_default_str();
  bench->add_option("--gen-len", b->gen_len, "Generated tokens per request")->capture_default_str();
  bench->add_option("--requests", b->requests, "Requests in total (default: the batch)");
  bench->add_option("--vanilla", b->vanilla,
                    "Comparison model: 'auto' (vanilla of the same unrolled depth and widths), a bundle, or 'none'")
      ->capture_default_str();
  bench->add_option("--seed", b->seed, "Seed of the random prompts")->capture_default_str();
  bench->add_option("-o,--out", b->out, "Also write the results as JSON");
  bench->add_flag("--per-step", b->per_step,
                  "Disable depth-wise batching (each step runs its chunks through all recursions)");
  bench->callback([b, &action] { action = [b] { return run_bench(*b); }; });
}

}  // namespace

MOR_REGISTER_COMMANDS("engine", register_engine_commands);

}  // namespace mor::tools
