#include "mor/model/accounting.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "mor/core/error.h"
#include "mor/model/layout.h"

namespace mor::model {

using config::ExpertAux;
using config::KvMode;
using config::RouterArch;
using config::RouterKind;
using config::Sharing;

namespace {

constexpr int64_t kBf16Bytes = 2;

// Weights of one router with `outputs` outputs.
int64_t router_weights(const config::ModelConfig& model, int64_t outputs) {
  const int64_t d = model.hidden_size;
  if (model.router.arch == RouterArch::kLinear) return outputs * d;
  return 2 * d * d + outputs * 2 * d;
}

std::vector<double> active_fractions(const config::ModelConfig& model, int64_t n) {
  std::vector<double> out(static_cast<size_t>(n), 1.0);
  if (model.router.kind == RouterKind::kExpert) {
    out = config::resolved_capacities(model);
    MOR_CHECK(static_cast<int64_t>(out.size()) == n, "model.router.expert.capacities: expected ", n,
              " values (one per recursion), got ", out.size());
    for (double c : out)
      MOR_CHECK(c > 0.0 && c <= 1.0, "model.router.expert.capacities: values must be in (0, 1], got ",
                c);
  } else if (model.router.kind == RouterKind::kToken) {
    for (int64_t r = 0; r < n; ++r) out[static_cast<size_t>(r)] = static_cast<double>(n - r) / n;
  }
  return out;
}

std::string group_thousands(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  const int64_t len = static_cast<int64_t>(digits.size());
  for (int64_t i = 0; i < len; ++i) {
    if (i > 0 && (len - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[static_cast<size_t>(i)]);
  }
  return value < 0 ? "-" + out : out;
}

std::string fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, value);
  return buf;
}

// 167149440 -> "167.1M", 1610711040 -> "1.611B"; below 1,000,000: the exact grouped value.
std::string short_count(int64_t value) {
  if (value >= 1'000'000'000) return fixed(value / 1e9, 3) + "B";
  if (value >= 1'000'000) return fixed(value / 1e6, 1) + "M";
  return group_thousands(value);
}

// Rounded to an integer with thousands separators, one decimal when not a whole number.
std::string grouped(double value) {
  const double rounded = std::round(value);
  if (std::abs(value - rounded) < 0.05) return group_thousands(static_cast<int64_t>(rounded));
  const double tenths = std::round(value * 10.0);
  const int64_t whole = static_cast<int64_t>(tenths / 10.0);
  const int64_t frac = static_cast<int64_t>(std::abs(tenths - whole * 10.0));
  return group_thousands(whole) + "." + std::to_string(frac);
}

// FLOPs with an SI prefix and 4 significant digits: "353.9M", "1.973G".
std::string si(double value) {
  if (value == 0.0) return "0";
  static const char* kPrefixes[] = {"", "K", "M", "G", "T", "P"};
  int index = 0;
  double scaled = value;
  while (std::abs(scaled) >= 1000.0 && index < 5) {
    scaled /= 1000.0;
    ++index;
  }
  const int decimals = std::abs(scaled) >= 100.0 ? 1 : std::abs(scaled) >= 10.0 ? 2 : 3;
  return fixed(scaled, index == 0 ? 0 : decimals) + kPrefixes[index];
}

std::string layout_line(const config::ModelConfig& model, const Layout& layout) {
  const int64_t n = model.recursion.num_recursions;
  const int64_t sets = layout.num_param_sets;
  const std::string name = config::to_string(model.recursion.sharing);
  std::ostringstream os;
  switch (model.recursion.sharing) {
    case Sharing::kNone:
      os << name << ": " << layout.unrolled_depth() << " layers";
      break;
    case Sharing::kCycle:
      os << name << ": " << n << " x " << layout.block.size() << " layers (block of "
         << layout.block.size() << " layers run " << n << " times)";
      break;
    case Sharing::kMiddleCycle:
      os << name << ": 1 + " << n << " x " << layout.block.size() << " + 1 layers (block of "
         << layout.block.size() << " layers run " << n << " times)";
      break;
    case Sharing::kSequence:
      os << name << ": " << sets << " x " << n << " layers (each parameter set repeated " << n
         << " times in a row)";
      break;
    case Sharing::kMiddleSequence:
      os << name << ": 1 + " << sets - 2 << " x " << n << " + 1 layers (each shared parameter set "
         << "repeated " << n << " times in a row)";
      break;
  }
  os << "\n         L = " << layout.unrolled_depth() << " unrolled layers, " << sets
     << " parameter sets";
  return os.str();
}

std::string variant_line(const config::ModelConfig& model, bool has_block) {
  std::ostringstream os;
  const auto& router = model.router;
  switch (router.kind) {
    case RouterKind::kNone:
      os << (model.recursion.sharing == Sharing::kNone ? "vanilla" : "recursive, no router");
      break;
    case RouterKind::kExpert:
      os << "MoR expert-choice (router " << config::to_string(router.arch) << ", "
         << config::to_string(router.expert.func) << ", aux " << config::to_string(router.expert.aux)
         << ")";
      break;
    case RouterKind::kToken:
      os << "MoR token-choice (router " << config::to_string(router.arch) << ", "
         << config::to_string(router.token.func) << ", balancing "
         << config::to_string(router.token.balancing) << ")";
      break;
  }
  if (has_block) os << ", kv_mode " << config::to_string(model.kv_mode);
  return os.str();
}

std::string fraction_note(const config::ModelConfig& model, bool has_block) {
  if (!has_block) return "active fraction: every layer runs on all tokens";
  std::string note;
  switch (model.router.kind) {
    case RouterKind::kNone:
      note = "active fraction: no router, every token runs every recursion";
      break;
    case RouterKind::kExpert:
      note = std::string("active fraction: expert-choice capacity c_r (top-k share of all tokens at "
                         "recursion r), ") +
             (model.router.expert.capacities.empty() ? "default (N_r - r)/N_r" : "explicit");
      break;
    case RouterKind::kToken:
      note = "active fraction: token-choice, assuming a balanced router: (N_r - r)/N_r of the tokens "
             "reach recursion r";
      break;
  }
  if (model.kv_mode == KvMode::kShare)
    note += "\nkv_mode share: recursions >= 1 skip k/v and attend to the recursion-0 K/V of all "
            "earlier tokens\n  (c * 2 * H*D * T); K/V are cached at recursion 0 only";
  return note;
}

// Columns two spaces apart; align[i] 'l' or 'r' (missing: 'r'); no trailing blanks.
std::string render_table(const std::vector<std::vector<std::string>>& rows, const std::string& align,
                         const std::string& indent) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::ostringstream os;
  for (const auto& row : rows) {
    std::string line = indent;
    for (size_t i = 0; i < row.size(); ++i) {
      const std::string pad(width[i] - row[i].size(), ' ');
      if (i > 0) line += "  ";
      line += (i < align.size() && align[i] == 'l') ? row[i] + pad : pad + row[i];
    }
    line.erase(line.find_last_not_of(' ') + 1);
    os << line << "\n";
  }
  return os.str();
}

}  // namespace

Accounting account(const config::ModelConfig& model, int64_t context) {
  MOR_CHECK(context >= 1, "accounting context (sequence length) must be >= 1, got ", context);
  MOR_CHECK(model.hidden_size >= 1 && model.num_heads >= 1 && model.num_kv_heads >= 1 &&
                model.intermediate_size >= 1 && model.vocab_size >= 1 && model.resolved_head_dim() >= 1,
            "model: hidden_size, intermediate_size, num_heads, num_kv_heads, head_dim and vocab_size "
            "must be positive");
  const Layout layout = make_layout(model);
  const bool has_block = layout.num_recursions > 0;
  MOR_CHECK(has_block || model.router.kind == RouterKind::kNone, "model.router.kind: ",
            config::to_string(model.router.kind),
            " needs a recursive block (recursion.sharing cycle or middle_cycle), got sharing ",
            config::to_string(model.recursion.sharing));

  const int64_t d = model.hidden_size;
  const int64_t hd = model.num_heads * model.resolved_head_dim();
  const int64_t kvd = model.num_kv_heads * model.resolved_head_dim();
  const int64_t n = layout.num_recursions;
  const double t = static_cast<double>(context);

  Accounting acc;
  acc.num_param_sets = layout.num_param_sets;
  acc.unrolled_depth = layout.unrolled_depth();
  acc.context = context;

  const int64_t kv_proj = 2 * kvd * d;
  acc.matmul_params_per_layer = 2 * hd * d + kv_proj + 3 * model.intermediate_size * d;
  acc.params_per_layer = acc.matmul_params_per_layer + 2 * d;
  const int64_t norm_owners = model.recursion.share_norms ? layout.num_param_sets : acc.unrolled_depth;
  acc.non_embedding_params = layout.num_param_sets * acc.matmul_params_per_layer + norm_owners * 2 * d;
  acc.embedding_params = model.vocab_size * d;
  acc.lm_head_params = model.tie_embeddings ? 0 : model.vocab_size * d;
  acc.final_norm_params = d;

  int64_t router_each = 0;
  if (model.router.kind == RouterKind::kExpert) {
    router_each = router_weights(model, 1);
    acc.router_params = n * router_each;
    if (model.router.expert.aux == ExpertAux::kRouter) acc.aux_router_params = acc.router_params;
  } else if (model.router.kind == RouterKind::kToken) {
    acc.router_params = router_weights(model, n);
    acc.router_buffer_values = n;
  }
  acc.total_params = acc.non_embedding_params + acc.embedding_params + acc.lm_head_params +
                     acc.final_norm_params + acc.router_params + acc.aux_router_params;

  const double full_matmul = 2.0 * static_cast<double>(acc.matmul_params_per_layer);
  const double full_attention = 2.0 * static_cast<double>(hd) * t;
  const double kv_per_layer = 2.0 * static_cast<double>(kvd);

  auto fixed_stage = [&](int64_t layers) {
    StageCost s;
    s.layers = layers;
    s.matmul_flops = layers * full_matmul;
    s.attention_flops = layers * full_attention;
    s.kv_values_per_token = layers * kv_per_layer;
    return s;
  };
  acc.prelude = fixed_stage(static_cast<int64_t>(layout.prelude.size()));
  acc.coda = fixed_stage(static_cast<int64_t>(layout.coda.size()));

  if (has_block) {
    const std::vector<double> c = active_fractions(model, n);
    const auto b = static_cast<double>(layout.block.size());
    const bool share = model.kv_mode == KvMode::kShare;
    for (int64_t r = 0; r < n; ++r) {
      const double cr = c[static_cast<size_t>(r)];
      StageCost s;
      s.recursion = r;
      s.layers = static_cast<int64_t>(layout.block.size());
      s.active_fraction = cr;
      if (share && r >= 1) {
        s.matmul_flops = b * cr * (full_matmul - 2.0 * static_cast<double>(kv_proj));
        s.attention_flops = b * cr * c[0] * full_attention;
        s.kv_values_per_token = 0.0;
      } else {
        s.matmul_flops = b * cr * full_matmul;
        s.attention_flops = b * cr * cr * full_attention;
        s.kv_values_per_token = b * cr * kv_per_layer;
      }
      if (model.router.kind == RouterKind::kExpert) {
        const double candidates = r == 0 ? 1.0 : c[static_cast<size_t>(r - 1)];
        const int64_t routers = model.router.expert.aux == ExpertAux::kRouter ? 2 : 1;
        s.router_flops = candidates * 2.0 * static_cast<double>(routers * router_each);
      } else if (model.router.kind == RouterKind::kToken && r == 0) {
        s.router_flops = 2.0 * static_cast<double>(acc.router_params);
      }
      acc.depths.push_back(s);
    }
  }

  acc.forward_flops_per_token = acc.prelude.flops() + acc.coda.flops();
  acc.kv_values_per_token = acc.prelude.kv_values_per_token + acc.coda.kv_values_per_token;
  for (const StageCost& s : acc.depths) {
    acc.forward_flops_per_token += s.flops();
    acc.kv_values_per_token += s.kv_values_per_token;
  }
  acc.lm_head_flops_per_token = 2.0 * static_cast<double>(model.vocab_size * d);
  acc.train_flops_per_token = 3.0 * (acc.forward_flops_per_token + acc.lm_head_flops_per_token);
  acc.vanilla_forward_flops_per_token = acc.unrolled_depth * (full_matmul + full_attention);
  acc.vanilla_kv_values_per_token = acc.unrolled_depth * kv_per_layer;
  return acc;
}

std::string format_model_info(const config::ModelConfig& model, int64_t context) {
  const Accounting acc = account(model, context);
  const Layout layout = make_layout(model);
  const bool has_block = !acc.depths.empty();
  const int64_t d = model.hidden_size;
  std::ostringstream os;

  if (!model.name.empty()) os << model.name << "\n";
  os << "variant  " << variant_line(model, has_block) << "\n";
  os << "layout   " << layout_line(model, layout) << "\n";
  os << "shapes   d " << group_thousands(d) << ", ff " << group_thousands(model.intermediate_size)
     << ", heads " << model.num_heads << ", kv heads " << model.num_kv_heads << ", head dim "
     << model.resolved_head_dim() << ", vocab " << group_thousands(model.vocab_size) << ", "
     << (model.tie_embeddings ? "tied" : "untied") << " embeddings, norms "
     << (model.recursion.share_norms ? "shared" : "per unrolled layer") << "\n\n";

  auto count_row = [](const std::string& label, int64_t value, const std::string& note) {
    std::string detail = note;
    if (detail.empty() && value >= 1'000'000) detail = "(" + short_count(value) + ")";
    return std::vector<std::string>{label, group_thousands(value), detail};
  };
  std::string router_shape;
  if (model.router.kind == RouterKind::kExpert) {
    const std::string one = model.router.arch == RouterArch::kLinear
                                ? "[1, " + std::to_string(d) + "]"
                                : "[" + std::to_string(2 * d) + ", " + std::to_string(d) + "] + [1, " +
                                      std::to_string(2 * d) + "]";
    router_shape = "(" + std::to_string(acc.depths.size()) + " x " + one + ")";
  } else if (model.router.kind == RouterKind::kToken) {
    const std::string nr = std::to_string(acc.depths.size());
    router_shape = model.router.arch == RouterArch::kLinear
                       ? "([" + nr + ", " + std::to_string(d) + "])"
                       : "([" + std::to_string(2 * d) + ", " + std::to_string(d) + "] + [" + nr +
                             ", " + std::to_string(2 * d) + "])";
  }
  std::vector<std::vector<std::string>> params = {
      count_row("per parameter set (matmul + 2 norms)", acc.params_per_layer, ""),
      count_row("non-embedding (decoder layers)", acc.non_embedding_params, ""),
      count_row("embedding", acc.embedding_params, ""),
      count_row("lm head", acc.lm_head_params, model.tie_embeddings ? "(tied to the embedding)" : ""),
      count_row("final norm", acc.final_norm_params, ""),
      count_row("routers", acc.router_params, router_shape),
  };
  if (model.router.kind == RouterKind::kExpert && model.router.expert.aux == ExpertAux::kRouter)
    params.push_back(count_row("auxiliary routers", acc.aux_router_params, router_shape));
  params.push_back(count_row("total", acc.total_params, ""));
  os << "parameters\n" << render_table(params, "lrl", "  ");
  if (acc.router_buffer_values > 0)
    os << "  (plus a loss-free balancing bias buffer of " << acc.router_buffer_values
       << " values, not a parameter)\n";

  os << "\nforward cost at context T = " << group_thousands(context)
     << ", lm head excluded (FLOPs = 2 x multiply-adds, per token of the sequence)\n";
  os << fraction_note(model, has_block) << "\n";
  os << "attention: causal, among the tokens active at a layer (c^2 * 2 * H*D * T)\n\n";

  std::vector<std::vector<std::string>> rows = {{"stage", "layers", "active", "matmul", "attention",
                                                 "router", "FLOPs/token", "KV values/token"}};
  auto stage_row = [](const std::string& label, const StageCost& s, bool show_fraction) {
    return std::vector<std::string>{label,
                                    std::to_string(s.layers),
                                    show_fraction ? fixed(s.active_fraction, 3) : "",
                                    si(s.matmul_flops),
                                    si(s.attention_flops),
                                    si(s.router_flops),
                                    si(s.flops()),
                                    grouped(s.kv_values_per_token)};
  };
  if (acc.prelude.layers > 0) rows.push_back(stage_row(has_block ? "prelude" : "all layers", acc.prelude, true));
  for (const StageCost& s : acc.depths)
    rows.push_back(stage_row("recursion " + std::to_string(s.recursion), s, true));
  if (acc.coda.layers > 0) rows.push_back(stage_row("coda", acc.coda, true));
  StageCost total;
  total.layers = acc.unrolled_depth;
  for (const StageCost* s : {&acc.prelude, &acc.coda}) {
    total.matmul_flops += s->matmul_flops;
    total.attention_flops += s->attention_flops;
    total.router_flops += s->router_flops;
  }
  for (const StageCost& s : acc.depths) {
    total.matmul_flops += s.matmul_flops;
    total.attention_flops += s.attention_flops;
    total.router_flops += s.router_flops;
  }
  total.kv_values_per_token = acc.kv_values_per_token;
  rows.push_back(stage_row("total", total, false));
  StageCost vanilla;
  vanilla.layers = acc.unrolled_depth;
  vanilla.matmul_flops = acc.unrolled_depth * 2.0 * static_cast<double>(acc.matmul_params_per_layer);
  vanilla.attention_flops = acc.vanilla_forward_flops_per_token - vanilla.matmul_flops;
  vanilla.kv_values_per_token = acc.vanilla_kv_values_per_token;
  rows.push_back(stage_row("vanilla", vanilla, true));
  os << render_table(rows, "l", "  ");

  const double flop_ratio = acc.forward_flops_per_token / acc.vanilla_forward_flops_per_token;
  const double kv_ratio = acc.kv_values_per_token / acc.vanilla_kv_values_per_token;
  const double kv_bytes = acc.kv_values_per_token * kBf16Bytes;
  std::vector<std::vector<std::string>> totals = {
      {"forward FLOPs/token", si(acc.forward_flops_per_token),
       "ratio vs vanilla " + fixed(flop_ratio, 4) + " (x" + fixed(1.0 / flop_ratio, 3) +
           " tokens at equal FLOPs)"},
      {"lm head FLOPs/token", si(acc.lm_head_flops_per_token), "(2 * V * d)"},
      {"training FLOPs/token", si(acc.train_flops_per_token), "(3 * (forward + lm head))"},
      {"KV values/token", grouped(acc.kv_values_per_token),
       "ratio vs vanilla " + fixed(kv_ratio, 4) + " (" + fixed(kv_bytes / 1024.0, 2) +
           " KiB/token in bf16)"},
  };
  os << "\ntotals\n" << render_table(totals, "lrl", "  ");
  return os.str();
}

}  // namespace mor::model
