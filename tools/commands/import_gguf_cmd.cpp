// `mor import gguf FILE --out DIR [--dtype float32|bfloat16|float16]`: a GGUF v2/v3 Llama-family
// model (F32, F16, BF16, Q8_0, Q4_0, Q4_1 tensors, dequantised tensor by tensor; the q/k RoPE
// permutation of llama.cpp's converter undone; the tokenizer rebuilt from the GGUF metadata)
// becomes a mor bundle. docs/formats/gguf.md.
#include <ATen/ops/from_blob.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/io/gguf_model.h"
#include "mor/model/bundle.h"
#include "mor/model/model.h"

namespace mor::tools {

CLI::App* import_command(CLI::App& app);  // export_cmd.cpp: the shared `import` group

namespace {

struct GgufImportFlags {
  std::string input;
  std::string out;
  std::string dtype = "float32";
};

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  fail("--dtype: expected float32, bfloat16 or float16, got \"", name, "\"");
}

void register_import_gguf_commands(CLI::App& app, Action& action) {
  auto f = std::make_shared<GgufImportFlags>();
  CLI::App* cmd = import_command(app)->add_subcommand(
      "gguf", "A GGUF Llama-family model (F32/F16/BF16/Q8_0/Q4_0/Q4_1) -> mor bundle, dequantised");
  cmd->add_option("file", f->input, "The .gguf file")->required();
  cmd->add_option("--out", f->out, "Output bundle directory")->required();
  cmd->add_option("--dtype", f->dtype, "Stored weight dtype: float32 (default), bfloat16 or float16");
  cmd->callback([f, &action] {
    action = [f] {
      const auto start = std::chrono::steady_clock::now();
      const at::ScalarType dtype = parse_dtype(f->dtype);
      const io::GgufModel gm = io::read_gguf_model(f->input);
      const model::MoRModel spec(gm.model, at::kFloat, at::kMeta);  // names and shapes only
      // The tokenizer travels as a file: write the rebuilt tokenizer.json next to the output.
      const std::string tok = f->out + ".tokenizer-" + std::to_string(::getpid()) + ".json";
      core::atomic_write(tok, gm.tokenizer_json);
      model::BundleOptions opts;
      opts.tokenizer_json = tok;
      if (gm.bos_id) opts.bos_token_id = *gm.bos_id;
      if (gm.eos_id) opts.eos_token_id = *gm.eos_id;
      opts.dtype = dtype;
      opts.source = "gguf " + f->input;
      try {
        model::write_bundle(f->out, gm.model, spec.parameters(), [&](const model::NamedParam& p) {
          std::vector<float> values = io::read_gguf_tensor(gm, p.name);
          return at::from_blob(values.data(), p.tensor.sizes(), at::kFloat).clone();
        }, opts);
      } catch (...) {
        core::remove_file(tok);
        throw;
      }
      core::remove_file(tok);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("imported %s to %s: %s, %lld parameters, %zu tensors (%s), %.1f s\n", f->input.c_str(),
                  f->out.c_str(), gm.model.name.c_str(), static_cast<long long>(spec.num_parameters()),
                  gm.tensors.size(), f->dtype.c_str(), secs);
      return 0;
    };
  });
}

}  // namespace

MOR_REGISTER_COMMANDS("import_gguf", register_import_gguf_commands);

}  // namespace mor::tools
