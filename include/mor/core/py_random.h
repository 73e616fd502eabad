// An exact reproduction of CPython's `random.Random` (Mersenne Twister MT19937) for integer seeds,
// so that evaluation can draw the very few-shot examples lm-evaluation-harness draws with
// `rnd = random.Random(1234); rnd.sample(docs, k)` (and shuffle / choice / randint / random()).
//
// Semantics are CPython 3.11's (Debian 12's /usr/bin/python3 and the project venv):
//   - seed(int): the absolute value, split into little-endian 32-bit words (at least one word, so
//     0 -> [0]), fed to MT19937's init_by_array (Modules/_randommodule.c random_seed).
//   - random(): (a * 2**26 + b) / 2**53 with a = next() >> 5, b = next() >> 6.
//   - getrandbits(k): k <= 32: next() >> (32 - k); larger k: words little-endian, the last one
//     shifted right to keep only the remaining bits. getrandbits(0) == 0.
//   - _randbelow(n) = _randbelow_with_getrandbits: k = n.bit_length(); draw getrandbits(k) until < n.
//   - randrange(start, stop) = start + _randbelow(stop - start); randint(a, b) = randrange(a, b + 1).
//   - shuffle: for i in reversed(range(1, len)): j = _randbelow(i + 1); swap(x[i], x[j]).
//   - sample(population, k): setsize = 21, plus 4 ** ceil(log(3k, 4)) when k > 5; n <= setsize
//     takes the pool algorithm, otherwise set-based rejection. sample() stopped accepting sets in
//     3.11 (and grew `counts` in 3.9), but for a sequence the selected indices are unchanged since
//     3.2, so sample(n, k) here equals `sample(range(n), k)` == the indices `sample(seq, k)` picks.
// Python raises on empty ranges / k > n; here those throw std::invalid_argument.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace mor::core {

class PyRandom {
 public:
  static constexpr int kN = 624;
  // The words of getstate()[1]: 624 state words followed by the index (Python's `mti`).
  using State = std::array<uint32_t, kN + 1>;

  // random.Random(seed) for any int seed that fits int64 (negative seeds use |seed|).
  explicit PyRandom(int64_t seed);
  // random.Random(s) for s = sum(words[i] << (32 * i)) (the little-endian words of |s|), for
  // seeds beyond 64 bits. Trailing zero words are ignored, as Python never produces them.
  explicit PyRandom(std::vector<uint32_t> words);

  void seed(int64_t seed);
  void seed(std::vector<uint32_t> words);

  uint32_t next_u32();                  // genrand_uint32
  double random();                      // [0, 1), 53 bits
  uint64_t getrandbits(int k);          // 0 <= k <= 64
  uint64_t randbelow(uint64_t n);       // [0, n); n > 0
  int64_t randrange(int64_t stop);      // [0, stop)
  int64_t randrange(int64_t start, int64_t stop);
  int64_t randint(int64_t a, int64_t b);  // [a, b]
  size_t choice(size_t n) { return static_cast<size_t>(randbelow(n)); }  // index for seq[...]

  // The indices `sample(range(population), k)` returns, in selection order.
  std::vector<size_t> sample(size_t population, size_t k);
  // The elements `sample(seq, k)` returns.
  template <typename T>
  std::vector<T> sample(const std::vector<T>& seq, size_t k) {
    std::vector<T> out;
    out.reserve(k);
    for (size_t i : sample(seq.size(), k)) out.push_back(seq[i]);
    return out;
  }

  // In place, as `shuffle(x)`.
  template <typename T>
  void shuffle(std::vector<T>& x) {
    for (size_t i = x.size(); i-- > 1;) {
      const size_t j = static_cast<size_t>(randbelow(i + 1));
      using std::swap;
      swap(x[i], x[j]);
    }
  }

  State state() const;
  void set_state(const State& s);  // throws std::invalid_argument if the index is > 624

 private:
  std::array<uint32_t, kN> mt_{};
  int mti_ = kN;
};

}  // namespace mor::core
