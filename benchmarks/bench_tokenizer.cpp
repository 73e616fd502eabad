// Tokenizer encode throughput (MB/s of input text) single-threaded and on every core, plus decode.
// Text: $MOR_BENCH_TEXT (a file, or a directory whose files are read recursively, one document
// each), else Debian python3.11-doc's reStructuredText sources (about 11 MB, 497 documents), else
// the texts of the tokenizer fixtures. Tokenizer: $MOR_BENCH_TOKENIZER (a tokenizer.json or .gguf),
// else the SmolLM2 fixture. bytes_per_second in the output is input bytes encoded per second.
// encode_batch_lines encodes the same bytes cut into lines (short texts, as in JSONL corpora).
// Run: build/benchmarks/mor_bench_tokenizer   (docs/formats/tokenizer.md has the reference numbers)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "mor/io/gguf.h"
#include "mor/io/tokenizer.h"

namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> load_documents() {
  std::vector<fs::path> files;
  fs::path root;
  if (const char* env = std::getenv("MOR_BENCH_TEXT")) {
    root = env;
  } else if (fs::is_directory("/usr/share/doc/python3.11/html/_sources")) {
    root = "/usr/share/doc/python3.11/html/_sources";
  }
  if (!root.empty() && fs::is_directory(root)) {
    for (const auto& e : fs::recursive_directory_iterator(root)) {
      if (e.is_regular_file()) files.push_back(e.path());
    }
  } else if (!root.empty()) {
    files.push_back(root);
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> docs;
  for (const auto& f : files) docs.push_back(read_file(f));
  if (docs.empty()) {  // the fixture texts, one per line of cases.jsonl (JSON-escaped, fine for timing)
    for (const char* name : {"trained-bpe", "smollm2"}) {
      docs.push_back(read_file(fs::path(MOR_SOURCE_DIR) / "tests/fixtures/tokenizer" / name / "cases.jsonl"));
    }
  }
  return docs;
}

struct Fixture {
  std::vector<std::string> docs;
  std::vector<std::string> lines;  // the same bytes cut after each '\n' (short texts)
  int64_t bytes = 0;
  std::unique_ptr<mor::io::Tokenizer> tok;
  Fixture() {
    docs = load_documents();
    for (const auto& d : docs) {
      bytes += static_cast<int64_t>(d.size());
      for (size_t start = 0; start < d.size();) {
        const size_t nl = d.find('\n', start);
        const size_t end = nl == std::string::npos ? d.size() : nl + 1;
        lines.push_back(d.substr(start, end - start));
        start = end;
      }
    }
    std::string path = std::string(MOR_SOURCE_DIR) + "/tests/fixtures/tokenizer/smollm2/tokenizer.json";
    if (const char* env = std::getenv("MOR_BENCH_TOKENIZER")) path = env;
    tok = std::make_unique<mor::io::Tokenizer>(path.size() > 5 && path.substr(path.size() - 5) == ".gguf"
                                                   ? mor::io::tokenizer_from_gguf(path)
                                                   : mor::io::Tokenizer::from_file(path));
    std::cerr << "tokenizer " << path << " (" << tok->vocab_size() << " tokens); text: " << docs.size()
              << " documents, " << bytes << " bytes\n";
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

void encode_single_thread(benchmark::State& state) {
  Fixture& f = fixture();
  int64_t tokens = 0;
  for (auto _ : state) {
    tokens = 0;
    for (const auto& d : f.docs) tokens += static_cast<int64_t>(f.tok->encode(d).size());
  }
  state.SetBytesProcessed(state.iterations() * f.bytes);
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["bytes_per_token"] = static_cast<double>(f.bytes) / static_cast<double>(std::max<int64_t>(tokens, 1));
}

void encode_batch(benchmark::State& state) {
  Fixture& f = fixture();
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(f.tok->encode_batch(f.docs, threads));
  state.SetBytesProcessed(state.iterations() * f.bytes);
}

void encode_batch_lines(benchmark::State& state) {
  Fixture& f = fixture();
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(f.tok->encode_batch(f.lines, threads));
  state.SetBytesProcessed(state.iterations() * f.bytes);
  state.counters["texts"] = static_cast<double>(f.lines.size());
}

void decode(benchmark::State& state) {
  Fixture& f = fixture();
  std::vector<std::vector<int32_t>> ids = f.tok->encode_batch(f.docs, 0);
  for (auto _ : state) {
    for (const auto& v : ids) benchmark::DoNotOptimize(f.tok->decode(v));
  }
  state.SetBytesProcessed(state.iterations() * f.bytes);
}

void load_tokenizer_json(benchmark::State& state) {
  const std::string path = std::string(MOR_SOURCE_DIR) + "/tests/fixtures/tokenizer/smollm2/tokenizer.json";
  for (auto _ : state) benchmark::DoNotOptimize(mor::io::Tokenizer::from_file(path));
}

}  // namespace

BENCHMARK(encode_single_thread)->Unit(benchmark::kMillisecond)->UseRealTime();
// 0 = every core (std::thread::hardware_concurrency()).
BENCHMARK(encode_batch)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(encode_batch_lines)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(decode)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(load_tokenizer_json)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
