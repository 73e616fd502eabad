// Tokenizer::Impl::build: validates a TokenizerSpec (from tokenizer.json or GGUF) and builds the
// encoding tables: vocabulary maps, byte symbols, the merge table, added-token ids assigned exactly
// as the `tokenizers` library assigns them, per-id decode bytes, and the compiled pre-tokenizer
// regexes. Every failure is a mor::Error naming the source and the path (JSON path or GGUF key).
#include <algorithm>
#include <atomic>
#include <stdexcept>

#include "mor/core/error.h"
#include "tokenizer_internal.h"

namespace mor::io {

using detail::PreStep;

namespace {
std::atomic<uint64_t> g_next_serial{1};  // Impl::serial, unique per built tokenizer
}  // namespace

// ---- Building ----------------------------------------------------------------------------------

std::unique_ptr<Tokenizer::Impl> Tokenizer::Impl::build(detail::TokenizerSpec spec) {
  auto impl = std::make_unique<Impl>();
  Impl& t = *impl;
  const std::string& src = spec.source;
  t.source = src;
  t.serial = g_next_serial.fetch_add(1);

  // Vocabulary.
  int32_t max_id = -1;
  t.vocab.reserve(spec.vocab.size());
  for (const auto& [token, id] : spec.vocab) {
    if (id < 0) fail(src, ": ", spec.vocab_path, ": token '", token, "' has negative id ", id);
    if (!t.vocab.emplace(token, id).second) fail(src, ": ", spec.vocab_path, ": token '", token, "' appears twice");
    max_id = std::max(max_id, id);
  }
  t.vocab_by_id.assign(spec.vocab.begin(), spec.vocab.end());
  std::sort(t.vocab_by_id.begin(), t.vocab_by_id.end(),
            [](const auto& a, const auto& b) { return a.second < b.second; });
  for (size_t i = 1; i < t.vocab_by_id.size(); ++i) {
    if (t.vocab_by_id[i].second == t.vocab_by_id[i - 1].second) {
      fail(src, ": ", spec.vocab_path, ": id ", t.vocab_by_id[i].second, " is used by both '",
           t.vocab_by_id[i - 1].first, "' and '", t.vocab_by_id[i].first, "'");
    }
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    detail::utf8_append(s, detail::byte_to_unicode()[b]);
    auto it = t.vocab.find(s);
    t.byte_ids[b] = it == t.vocab.end() ? -1 : it->second;
  }
  for (const auto& [token, id] : t.vocab_by_id) {
    if (auto bytes = detail::bytelevel_to_bytes(token)) t.vocab_bytes.emplace(std::move(*bytes), id);
  }

  // Merges.
  std::vector<detail::MergeTable::Entry> entries;
  entries.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [a, b] = spec.merges[rank];
    auto lookup = [&](const std::string& s, const char* what) {
      auto it = t.vocab.find(s);
      if (it == t.vocab.end()) {
        fail(src, ": ", spec.merges_path, "[", rank, "]: ", what, " '", s, "' is not in ", spec.vocab_path);
      }
      return it->second;
    };
    const int32_t ia = lookup(a, "part");
    const int32_t ib = lookup(b, "part");
    const int32_t im = lookup(a + b, "merged token");
    entries.push_back({detail::MergeTable::make_key(ia, ib), static_cast<int32_t>(rank), im});
  }
  t.merge_table.build(entries);
  t.merges = std::move(spec.merges);
  t.ignore_merges = spec.ignore_merges;
  t.fuse_unk = spec.fuse_unk;
  t.unk_token = spec.unk_token;
  if (t.unk_token) {
    auto it = t.vocab.find(*t.unk_token);
    if (it == t.vocab.end()) fail(src, ": model.unk_token: '", *t.unk_token, "' is not in ", spec.vocab_path);
    t.unk_id = it->second;
  }

  // Added tokens: ids as the library assigns them (one by one, in file order).
  const auto model_size = static_cast<int32_t>(t.vocab.size());
  int32_t max_added = -1;
  std::vector<detail::AddedToken> raw, normalized;
  for (size_t i = 0; i < spec.added.size(); ++i) {
    detail::AddedTokenSpec a = spec.added[i];
    if (a.content.empty()) fail(src, ": ", spec.added_path, "[", i, "]: empty content");
    if (!detail::utf8_valid(a.content)) fail(src, ": ", spec.added_path, "[", i, "]: content is not valid UTF-8");
    if (t.added_ids.count(a.content)) fail(src, ": ", spec.added_path, "[", i, "]: '", a.content, "' appears twice");
    int32_t expected;
    if (auto it = t.vocab.find(a.content); it != t.vocab.end()) {
      expected = it->second;
    } else if (max_added < 0) {
      expected = model_size;
    } else {
      expected = (max_added >= model_size || model_size == 0) ? max_added + 1 : model_size;
    }
    if (a.id >= 0 && a.id != expected) {
      fail(src, ": ", spec.added_path, "[", i, "]: '", a.content, "' has id ", a.id,
           " but the tokenizers library assigns it id ", expected,
           " (the model vocabulary's id, else the next id after the vocabulary)");
    }
    a.id = expected;
    max_added = std::max(max_added, expected);
    max_id = std::max(max_id, expected);
    t.added_ids.emplace(a.content, a.id);
    (a.normalized ? normalized : raw)
        .push_back({a.content, a.id, a.single_word, a.lstrip, a.rstrip, a.normalized, a.special});
    t.added.push_back(std::move(a));
  }
  std::sort(t.added.begin(), t.added.end(), [](const auto& x, const auto& y) { return x.id < y.id; });
  t.match_raw.build(std::move(raw));
  t.match_normalized.build(std::move(normalized));

  // Per-id tables.
  const size_t size = static_cast<size_t>(max_id + 1);
  t.id_bytes.assign(size, {});
  t.id_strings.assign(size, {});
  t.id_kind.assign(size, kMissing);
  for (const auto& [token, id] : t.vocab_by_id) {
    t.id_strings[id] = token;
    // The ByteLevel decoder: a token with a character outside the alphabet decodes as its UTF-8.
    auto bytes = detail::bytelevel_to_bytes(token);
    t.id_bytes[id] = bytes ? std::move(*bytes) : token;
    t.id_kind[id] = kModel;
  }
  for (const auto& a : t.added) {
    t.id_strings[a.id] = a.content;
    t.id_bytes[a.id] = a.content;
    t.id_kind[a.id] = a.special ? kSpecial : kAdded;
  }

  // Pre-tokenizer: compile the regexes once.
  if (spec.pre_steps.empty() || spec.pre_steps.back().kind != PreStep::Kind::ByteLevel) {
    fail(src, ": pre_tokenizer: must be ByteLevel or a Sequence ending in ByteLevel");
  }
  for (size_t i = 0; i < spec.pre_steps.size(); ++i) {
    PreStep& step = spec.pre_steps[i];
    if (step.kind == PreStep::Kind::ByteLevel && i + 1 != spec.pre_steps.size()) {
      fail(src, ": pre_tokenizer: ByteLevel must be the last pre-tokenizer of the Sequence");
    }
    try {
      if (step.kind == PreStep::Kind::Split) {
        step.regex = std::make_shared<detail::Regex>(step.pattern, !step.pattern_is_regex);
      } else if (step.kind == PreStep::Kind::Digits) {
        step.regex = std::make_shared<detail::Regex>("\\p{N}", false);
      } else if (step.use_regex) {
        step.regex = std::make_shared<detail::Regex>(detail::kGpt2SplitPattern, false);
      }
    } catch (const std::invalid_argument& e) {
      fail(src, ": pre_tokenizer", spec.pre_is_sequence ? ".pretokenizers[" + std::to_string(i) + "]" : "",
           ".pattern: cannot compile '", step.pattern, "': ", e.what());
    }
  }
  t.pre_steps = std::move(spec.pre_steps);
  t.pre_is_sequence = spec.pre_is_sequence;
  t.post_processor_json = std::move(spec.post_processor_json);
  return impl;
}

}  // namespace mor::io
