// Prompt construction against lm-evaluation-harness itself: tests/fixtures/eval/requests/ holds
// every (context, continuation) request that lm_eval 0.4.13 built for the hand-written fixture
// documents (tools/lm_eval_requests.py, few-shot seed 1234, 0 and 3 shots; MMLU 0 and 5), and our
// tasks must build exactly the same strings, byte for byte, in the same order -- which also proves
// few-shot sampling (CPython's random.Random(1234).sample, first_n for MMLU).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <regex>
#include <set>

#include "mor/core/file.h"
#include "mor/eval/pystr.h"
#include "mor/eval/task.h"

namespace mor::eval {
namespace {

const std::string kFixtures = std::string(MOR_SOURCE_DIR) + "/tests/fixtures/eval";

TaskRegistry registry() {
  return TaskRegistry::load({kFixtures + "/tasks", std::string(MOR_SOURCE_DIR) + "/configs/eval/tasks"});
}

struct Golden {
  std::string file, task;
  int64_t shots = 0;
};

std::vector<Golden> goldens() {
  std::vector<Golden> out;
  const std::regex name(R"(^(.+)\.(\d+)shot\.jsonl$)");
  for (const auto& f : core::list_directory(kFixtures + "/requests")) {
    std::smatch m;
    if (std::regex_match(f, m, name)) out.push_back({f, m[1].str(), std::stoll(m[2].str())});
  }
  std::sort(out.begin(), out.end(), [](const Golden& a, const Golden& b) { return a.file < b.file; });
  return out;
}

TEST(EvalRequests, EveryTaskHasHarnessGoldensAtZeroAndFewShots) {
  std::set<std::string> tasks;
  for (const auto& g : goldens()) tasks.insert(g.task + "/" + std::to_string(g.shots > 0));
  for (const char* t : {"lambada_openai", "hellaswag", "piqa", "winogrande", "arc_easy", "arc_challenge", "openbookqa",
                        "mmlu_abstract_algebra", "mmlu_marketing", "mmlu_sociology", "mmlu_philosophy"}) {
    EXPECT_TRUE(tasks.count(std::string(t) + "/0")) << t << " has no 0-shot golden";
    EXPECT_TRUE(tasks.count(std::string(t) + "/1")) << t << " has no few-shot golden";
  }
}

class HarnessRequests : public ::testing::TestWithParam<Golden> {};

TEST_P(HarnessRequests, AreBuiltByteForByte) {
  const Golden& g = GetParam();
  const TaskRegistry reg = registry();
  const Task task(reg.task(g.task), kFixtures + "/data", g.shots);
  const auto docs = task.build(g.shots, 1234);
  std::vector<std::tuple<int64_t, int64_t, const Request*>> ours;
  for (const auto& d : docs) {
    for (size_t i = 0; i < d.requests.size(); ++i) ours.emplace_back(d.doc_id, static_cast<int64_t>(i), &d.requests[i]);
  }
  std::ifstream in(kFixtures + "/requests/" + g.file);
  std::string line;
  size_t k = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const Value want = Value::parse(line);
    ASSERT_LT(k, ours.size()) << g.file << ": the harness built more requests than we did";
    const auto& [doc, idx, req] = ours[k];
    EXPECT_EQ(doc, want["doc_id"].get<int64_t>()) << g.file << " request " << k;
    EXPECT_EQ(idx, want["idx"].get<int64_t>()) << g.file << " request " << k;
    EXPECT_EQ(req->context, want["context"].get<std::string>())
        << g.file << " doc " << doc << " choice " << idx << "\n ours:    " << py::repr(req->context)
        << "\n harness: " << py::repr(want["context"].get<std::string>());
    EXPECT_EQ(req->continuation, want["continuation"].get<std::string>())
        << g.file << " doc " << doc << " choice " << idx << "\n ours:    " << py::repr(req->continuation)
        << "\n harness: " << py::repr(want["continuation"].get<std::string>());
    ++k;
  }
  EXPECT_EQ(k, ours.size()) << g.file << ": we built more requests than the harness";
  EXPECT_GT(k, 0u);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HarnessRequests, ::testing::ValuesIn(goldens()),
                         [](const ::testing::TestParamInfo<Golden>& info) {
                           std::string n = info.param.task + "_" + std::to_string(info.param.shots) + "shot";
                           for (auto& c : n) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return n;
                         });

}  // namespace
}  // namespace mor::eval
