// CPython 3.11 random.Random (mor/core/py_random.h): MT19937 as in Modules/_randommodule.c and the
// sampling helpers as in Lib/random.py, reimplemented.
#include "mor/core/py_random.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <unordered_set>

namespace mor::core {

namespace {

constexpr int kM = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfU;
constexpr uint32_t kUpperMask = 0x80000000U;
constexpr uint32_t kLowerMask = 0x7fffffffU;

std::vector<uint32_t> words_of(int64_t seed) {
  // |seed| as uint64 (well defined for INT64_MIN too), then little-endian 32-bit words.
  const uint64_t mag = seed < 0 ? 0 - static_cast<uint64_t>(seed) : static_cast<uint64_t>(seed);
  std::vector<uint32_t> words{static_cast<uint32_t>(mag)};
  if ((mag >> 32) != 0) words.push_back(static_cast<uint32_t>(mag >> 32));
  return words;
}

int bit_length(uint64_t n) {
  int k = 0;
  while (n != 0) {
    ++k;
    n >>= 1;
  }
  return k;
}

}  // namespace

PyRandom::PyRandom(int64_t seed) { this->seed(seed); }
PyRandom::PyRandom(std::vector<uint32_t> words) { seed(std::move(words)); }

void PyRandom::seed(int64_t seed) { this->seed(words_of(seed)); }

void PyRandom::seed(std::vector<uint32_t> key) {
  // random_seed: keyused = max(1, words needed for |n|); zero-length keys become [0].
  while (key.size() > 1 && key.back() == 0) key.pop_back();
  if (key.empty()) key.push_back(0);
  // init_genrand(19650218)
  mt_[0] = 19650218U;
  for (int i = 1; i < kN; ++i) {
    mt_[i] = 1812433253U * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + static_cast<uint32_t>(i);
  }
  // init_by_array
  const size_t len = key.size();
  size_t i = 1;
  size_t j = 0;
  for (size_t k = (static_cast<size_t>(kN) > len ? kN : len); k != 0; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525U)) + key[j] +
             static_cast<uint32_t>(j);
    ++i;
    ++j;
    if (i >= static_cast<size_t>(kN)) {
      mt_[0] = mt_[kN - 1];
      i = 1;
    }
    if (j >= len) j = 0;
  }
  for (size_t k = kN - 1; k != 0; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941U)) - static_cast<uint32_t>(i);
    ++i;
    if (i >= static_cast<size_t>(kN)) {
      mt_[0] = mt_[kN - 1];
      i = 1;
    }
  }
  mt_[0] = 0x80000000U;
  mti_ = kN;
}

uint32_t PyRandom::next_u32() {
  if (mti_ >= kN) {
    int kk = 0;
    for (; kk < kN - kM; ++kk) {
      const uint32_t y = (mt_[kk] & kUpperMask) | (mt_[kk + 1] & kLowerMask);
      mt_[kk] = mt_[kk + kM] ^ (y >> 1) ^ ((y & 1U) != 0 ? kMatrixA : 0U);
    }
    for (; kk < kN - 1; ++kk) {
      const uint32_t y = (mt_[kk] & kUpperMask) | (mt_[kk + 1] & kLowerMask);
      mt_[kk] = mt_[kk + (kM - kN)] ^ (y >> 1) ^ ((y & 1U) != 0 ? kMatrixA : 0U);
    }
    const uint32_t y = (mt_[kN - 1] & kUpperMask) | (mt_[0] & kLowerMask);
    mt_[kN - 1] = mt_[kM - 1] ^ (y >> 1) ^ ((y & 1U) != 0 ? kMatrixA : 0U);
    mti_ = 0;
  }
  uint32_t y = mt_[mti_++];
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680U;
  y ^= (y << 15) & 0xefc60000U;
  y ^= (y >> 18);
  return y;
}

double PyRandom::random() {
  const uint32_t a = next_u32() >> 5;
  const uint32_t b = next_u32() >> 6;
  return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

uint64_t PyRandom::getrandbits(int k) {
  if (k < 0 || k > 64) throw std::invalid_argument("PyRandom::getrandbits: k must be in [0, 64]");
  if (k == 0) return 0;
  if (k <= 32) return next_u32() >> (32 - k);
  const uint64_t low = next_u32();
  const uint64_t high = next_u32() >> (64 - k);  // the second word keeps its top k - 32 bits
  return low | (high << 32);
}

uint64_t PyRandom::randbelow(uint64_t n) {
  if (n == 0) throw std::invalid_argument("PyRandom::randbelow: empty range");
  const int k = bit_length(n);
  uint64_t r = getrandbits(k);
  while (r >= n) r = getrandbits(k);
  return r;
}

int64_t PyRandom::randrange(int64_t stop) { return randrange(0, stop); }

int64_t PyRandom::randrange(int64_t start, int64_t stop) {
  if (stop <= start) {
    throw std::invalid_argument("PyRandom::randrange: empty range (" + std::to_string(start) +
                                ", " + std::to_string(stop) + ")");
  }
  const uint64_t width = static_cast<uint64_t>(stop) - static_cast<uint64_t>(start);
  return static_cast<int64_t>(static_cast<uint64_t>(start) + randbelow(width));
}

int64_t PyRandom::randint(int64_t a, int64_t b) {
  if (b < a) throw std::invalid_argument("PyRandom::randint: b < a");
  const uint64_t width = static_cast<uint64_t>(b) - static_cast<uint64_t>(a) + 1;
  if (width == 0) throw std::invalid_argument("PyRandom::randint: range wider than 2**64");
  return static_cast<int64_t>(static_cast<uint64_t>(a) + randbelow(width));
}

std::vector<size_t> PyRandom::sample(size_t n, size_t k) {
  if (k > n) throw std::invalid_argument("PyRandom::sample: sample larger than population");
  std::vector<size_t> result(k);
  size_t setsize = 21;  // size of a small set minus size of an empty list
  if (k > 5) {
    // 4 ** ceil(math.log(k * 3, 4)); math.log(x, base) is log(x) / log(base) in doubles.
    const double e = std::ceil(std::log(static_cast<double>(k) * 3.0) / std::log(4.0));
    if (e >= 31) {
      setsize = std::numeric_limits<size_t>::max();
    } else {
      setsize += size_t{1} << (2 * static_cast<int>(e));
    }
  }
  if (n <= setsize) {
    std::vector<size_t> pool(n);
    for (size_t i = 0; i < n; ++i) pool[i] = i;
    for (size_t i = 0; i < k; ++i) {
      const size_t j = static_cast<size_t>(randbelow(n - i));
      result[i] = pool[j];
      pool[j] = pool[n - i - 1];  // move a non-selected item into the vacancy
    }
  } else {
    std::unordered_set<size_t> selected;
    selected.reserve(k);
    for (size_t i = 0; i < k; ++i) {
      size_t j = static_cast<size_t>(randbelow(n));
      while (selected.count(j) != 0) j = static_cast<size_t>(randbelow(n));
      selected.insert(j);
      result[i] = j;
    }
  }
  return result;
}

PyRandom::State PyRandom::state() const {
  State s{};
  for (int i = 0; i < kN; ++i) s[i] = mt_[i];
  s[kN] = static_cast<uint32_t>(mti_);
  return s;
}

void PyRandom::set_state(const State& s) {
  if (s[kN] > static_cast<uint32_t>(kN)) throw std::invalid_argument("PyRandom::set_state: bad index");
  for (int i = 0; i < kN; ++i) mt_[i] = s[i];
  mti_ = static_cast<int>(s[kN]);
}

}  // namespace mor::core
