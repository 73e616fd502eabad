#include "mor/model/attention.h"

#include <ATen/ATen.h>

#include "compact_attention/compact_attention.h"

namespace mor::model {

namespace {

class AtenAttention final : public AttentionBackend {
 public:
  std::string name() const override { return "aten"; }
  at::Tensor attend(const AttentionInputs& in) const override {
    return kernels::compact_attention_ref(in.q, in.k, in.v, in.q_pos, in.k_pos, in.q_valid, in.k_valid,
                                          in.q_doc, in.k_doc, in.plain_causal, in.scale);
  }
};

}  // namespace

std::shared_ptr<AttentionBackend> make_aten_attention() { return std::make_shared<AtenAttention>(); }

}  // namespace mor::model
