// Progress display for long work (data preparation, tokenizer training, evaluation).
//   - On a terminal: one line redrawn in place, at most ~10 times a second:
//       tokenizing [##########          ]  5.2/10.4 MB  48%  3.1 MB/s  1.2M tokens  ETA 0:02
//   - Otherwise (a log file, CI): one plain line every `interval_s` seconds.
//   - Silent: nothing.
// add() is thread-safe and cheap (an atomic add; rendering is throttled and never blocks a caller
// behind another thread's rendering). finish() prints the final line once; the destructor finishes.
// The header is free of fmt/spdlog on purpose (LibTorch translation units include it).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace mor::core {

class Progress {
 public:
  enum class Mode { kAuto, kTty, kLines, kSilent };  // kAuto: kTty when the stream is a terminal
  enum class Unit { kCount, kBytes };                // kBytes prints KB/MB/GB and byte rates

  struct Options {
    Mode mode = Mode::kAuto;
    Unit unit = Unit::kCount;
    std::string secondary_label;  // e.g. "tokens": a second counter shown after the rate; "" hides it
    double interval_s = 10.0;     // line mode: seconds between lines
    std::FILE* stream = stderr;
  };

  // total <= 0: unknown (no bar, no ETA).
  Progress(std::string label, int64_t total, Options options);
  Progress(std::string label, int64_t total);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void add(int64_t n, int64_t secondary = 0);
  void set_total(int64_t total);
  // Prints the final line (a newline ends the redrawn TTY line). Idempotent.
  void finish();

  int64_t count() const { return count_.load(std::memory_order_relaxed); }
  int64_t secondary() const { return secondary_.load(std::memory_order_relaxed); }
  // The text of one status line for the current counts (exposed for tests).
  std::string status_line(bool with_bar) const;

 private:
  void maybe_render(bool force);
  double elapsed_s() const;

  std::string label_;
  Options options_;
  Mode mode_;
  std::atomic<int64_t> total_;
  std::atomic<int64_t> count_{0};
  std::atomic<int64_t> secondary_{0};
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_render_;
  std::mutex render_mutex_;
  bool finished_ = false;
  size_t last_width_ = 0;
};

}  // namespace mor::core
