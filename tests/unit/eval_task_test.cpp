// Task files and datasets: the built-in registry, error messages for bad task files and bad or
// missing data, and the harness's context/continuation tokenization (_encode_pair).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/eval/task.h"
#include "mor/io/tokenizer.h"

namespace mor::eval {
namespace {

const std::string kSource = MOR_SOURCE_DIR;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/mor-eval-task-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { core::remove_tree(path_); }
  const std::string& path() const { return path_; }
  void write(const std::string& rel, const std::string& text) const {
    const std::string p = path_ + "/" + rel;
    core::make_directories(p.substr(0, p.rfind('/')));
    std::ofstream(p) << text;
  }

 private:
  std::string path_;
};

TEST(EvalTasks, BuiltInRegistryHasThePaperSuite) {
  const TaskRegistry reg = TaskRegistry::load({kSource + "/configs/eval/tasks"});
  for (const char* t : {"lambada_openai", "hellaswag", "piqa", "winogrande", "arc_easy", "arc_challenge", "openbookqa",
                        "mmlu_abstract_algebra", "mmlu_world_religions"}) {
    EXPECT_TRUE(reg.has_task(t)) << t;
  }
  for (const char* g : {"mmlu", "mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"}) {
    EXPECT_TRUE(reg.has_group(g)) << g;
  }
  const auto mmlu = reg.leaf_tasks("mmlu");
  EXPECT_EQ(mmlu.size(), 57u);
  EXPECT_EQ(mmlu.front(), "mmlu_abstract_algebra");
  const TaskSpec& aa = reg.task("mmlu_abstract_algebra");
  EXPECT_EQ(aa.files.at("dev"), "mmlu/dev/abstract_algebra.jsonl");
  EXPECT_EQ(aa.sampler, "first_n");
  EXPECT_EQ(aa.num_fewshot, 5);
  ASSERT_TRUE(aa.description);
  EXPECT_EQ(aa.description->render(Value::object()),
            "The following are multiple choice questions (with answers) about abstract algebra.\n\n");
  EXPECT_EQ(reg.group("mmlu").version, "2");
  EXPECT_EQ(reg.task("lambada_openai").output_type, OutputType::kLoglikelihood);
  EXPECT_EQ(reg.task("hellaswag").metrics, (std::vector<std::string>{"acc", "acc_norm"}));
  const std::string msg = error_of([&] { reg.leaf_tasks("hellaswagg"); });
  EXPECT_NE(msg.find("unknown task 'hellaswagg'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hellaswag"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--include-path"), std::string::npos) << msg;
}

TEST(EvalTasks, IncludePathOverridesAndBadFilesNameFileAndKey) {
  TempDir dir;
  dir.write("tasks/mine.yaml",
            "task: mine\nversion: 2\ndataset:\n  files: {test: mine/test.jsonl}\ntest_split: test\n"
            "doc_to_text: 'Q: {{q}}'\ndoc_to_target: '{{a}}'\ndoc_to_choice: '{{opts}}'\n");
  const TaskRegistry reg = TaskRegistry::load({dir.path() + "/tasks", kSource + "/configs/eval/tasks"});
  ASSERT_TRUE(reg.has_task("mine"));
  EXPECT_EQ(reg.task("mine").version, "2");
  EXPECT_TRUE(reg.has_task("piqa"));

  dir.write("bad/typo.yaml", "task: typo\ndataset:\n  files: {test: x.jsonl}\ntest_split: test\n"
                             "doc_to_txt: '{{q}}'\ndoc_to_text: a\ndoc_to_target: b\ndoc_to_choice: c\n");
  std::string msg = error_of([&] { TaskRegistry::load({dir.path() + "/bad"}); });
  EXPECT_NE(msg.find("typo.yaml:5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("doc_to_txt"), std::string::npos) << msg;

  dir.write("bad2/split.yaml", "task: s\ndataset:\n  files: {test: x.jsonl}\ntest_split: validation\n"
                               "doc_to_text: a\ndoc_to_target: b\ndoc_to_choice: c\n");
  msg = error_of([&] { TaskRegistry::load({dir.path() + "/bad2"}); });
  EXPECT_NE(msg.find("split.yaml:4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'validation' has no entry in dataset.files"), std::string::npos) << msg;

  dir.write("bad3/tmpl.yaml", "task: t\ndataset:\n  files: {test: x.jsonl}\ntest_split: test\n"
                              "doc_to_text: '{{ q.strip( }}'\ndoc_to_target: b\ndoc_to_choice: c\n");
  msg = error_of([&] { TaskRegistry::load({dir.path() + "/bad3"}); });
  EXPECT_NE(msg.find("tmpl.yaml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("doc_to_text"), std::string::npos) << msg;
}

TEST(EvalTasks, MissingOrMalformedDataNamesTheFileAndHowToGetIt) {
  const TaskRegistry reg = TaskRegistry::load({kSource + "/configs/eval/tasks"});
  TempDir dir;
  std::string msg = error_of([&] { Task(reg.task("piqa"), dir.path(), 0); });
  EXPECT_NE(msg.find(dir.path() + "/piqa/validation.jsonl"), std::string::npos) << msg;
  EXPECT_NE(msg.find("split 'validation' of baber/piqa"), std::string::npos) << msg;
  EXPECT_NE(msg.find("goal, sol1, sol2, label"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tools/convert_eval_data.py piqa"), std::string::npos) << msg;

  dir.write("piqa/validation.jsonl",
            "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\", \"label\": 0}\n\n{\"goal\": \"g\", \"sol1\": \"a\"\n");
  msg = error_of([&] { Task(reg.task("piqa"), dir.path(), 0); });
  EXPECT_NE(msg.find("piqa/validation.jsonl:3: invalid JSON"), std::string::npos) << msg;

  dir.write("piqa/validation.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"label\": 0}\n");
  msg = error_of([&] { Task(reg.task("piqa"), dir.path(), 0); });
  EXPECT_NE(msg.find("piqa/validation.jsonl:1: missing field 'sol2'"), std::string::npos) << msg;

  // Few-shot documents are only needed (and read) when shots are asked for.
  dir.write("piqa/validation.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\", \"label\": 1}\n");
  const Task zero(reg.task("piqa"), dir.path(), 0);
  const auto docs = zero.build(0, 1234);
  ASSERT_EQ(docs.size(), 1u);
  ASSERT_EQ(docs[0].requests.size(), 2u);
  EXPECT_EQ(docs[0].requests[0].context, "Question: g\nAnswer:");
  EXPECT_EQ(docs[0].requests[1].continuation, " b");
  EXPECT_EQ(docs[0].target, 1);
  msg = error_of([&] { Task(reg.task("piqa"), dir.path(), 2); });
  EXPECT_NE(msg.find("piqa/train.jsonl"), std::string::npos) << msg;

  // More shots than few-shot documents: the harness's ValueError, as a clear message.
  dir.write("piqa/train.jsonl", "{\"goal\": \"t\", \"sol1\": \"a\", \"sol2\": \"b\", \"label\": 0}\n");
  const Task two(reg.task("piqa"), dir.path(), 2);
  msg = error_of([&] { two.build(2, 1234); });
  EXPECT_NE(msg.find("has only 1 documents"), std::string::npos) << msg;
}

TEST(EvalTasks, EncodePairMovesTrailingWhitespaceToTheContinuation) {
  const io::Tokenizer tok =
      io::Tokenizer::from_file(kSource + "/tests/fixtures/tokenizer/mor-trained/bytelevel.json");
  const auto [ctx, cont] = encode_pair(tok, "The answer is  \n", "forty two", 0);
  EXPECT_EQ(ctx, tok.encode("The answer is"));
  std::vector<int32_t> whole = ctx;
  whole.insert(whole.end(), cont.begin(), cont.end());
  EXPECT_EQ(whole, tok.encode("The answer is  \nforty two"));
  // Unicode whitespace counts too (Python's str.rstrip), e.g. a no-break space.
  const auto [ctx2, cont2] = encode_pair(tok, "price\xc2\xa0", "10", 0);
  EXPECT_EQ(ctx2, tok.encode("price"));
  // An empty context is the prefix token; the continuation is encoded alone.
  const auto [ctx3, cont3] = encode_pair(tok, "", " word", 5);
  EXPECT_EQ(ctx3, std::vector<int32_t>{5});
  EXPECT_EQ(cont3, tok.encode(" word"));
}

TEST(EvalTasks, EncodePairsOnManyThreadsEqualsEncodePairOneByOne) {
  const io::Tokenizer tok =
      io::Tokenizer::from_file(kSource + "/tests/fixtures/tokenizer/mor-trained/bytelevel.json");
  const TaskRegistry reg = TaskRegistry::load({kSource + "/configs/eval/tasks"});
  std::vector<Request> requests;
  for (const char* name : {"lambada_openai", "hellaswag", "winogrande"}) {  // LAMBADA has an empty context
    const Task task(reg.task(name), kSource + "/tests/fixtures/eval/data", 2);
    for (const auto& d : task.build(2, 1234)) requests.insert(requests.end(), d.requests.begin(), d.requests.end());
  }
  requests.push_back({"", "<|endoftext|> x"});  // starts with the prefix token itself
  std::vector<const Request*> ptrs;
  for (const auto& r : requests) ptrs.push_back(&r);
  const auto batched = encode_pairs(tok, ptrs, 0, 4);
  ASSERT_EQ(batched.size(), requests.size());
  bool saw_empty = false;
  for (size_t i = 0; i < requests.size(); ++i) {
    saw_empty = saw_empty || requests[i].context.empty();
    EXPECT_EQ(batched[i], encode_pair(tok, requests[i].context, requests[i].continuation, 0)) << "request " << i;
  }
  EXPECT_TRUE(saw_empty);
}

}  // namespace
}  // namespace mor::eval
