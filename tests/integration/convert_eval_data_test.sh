#!/usr/bin/env bash
# tools/convert_eval_data.py on small invented inputs in every supported format: the original
# releases (HellaSwag jsonl with int labels, PIQA jsonl + *-labels.lst, WinoGrande with qID, ARC and
# OpenBookQA with nested questions, LAMBADA jsonl, MMLU CSV directories) and Hugging Face exports
# (JSON Lines, a JSON array, parquet when PYTHON has pyarrow, cais/mmlu "all"). Outputs are compared
# byte for byte with the expected files written here; directories skip the files they cannot use;
# bad input (a missing field, a label out of range, a PIQA label count mismatch, an existing output
# without --force, an unknown format, parquet without pyarrow) is one line on stderr, exit code 1.
# Usage: convert_eval_data_test.sh SOURCE_DIR PYTHON
set -uo pipefail
src="$1"; py="${2:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=tests/integration/lib.sh
source "$src/tests/integration/lib.sh"
conv() { "$py" "$src/tools/convert_eval_data.py" "$@"; }
in="$tmp/in"; exp="$tmp/exp"

put() { mkdir -p "$(dirname "$1")"; cat >"$1"; }        # put FILE <<'EOF' ... EOF
same() { check "$1" 0 "" -- cmp "$2" "$3"; }            # same NAME EXPECTED ACTUAL (byte-exact)
kept() { cat "$tmp/kept"; }                              # the output of the last `keep`d check
keep() { cp "$tmp/out" "$tmp/kept"; }
files() { (cd "$1" && find . -type f | sort | tr '\n' ' '); }
if "$py" -c "import pyarrow.parquet" 2>/dev/null; then have_pyarrow=1; else have_pyarrow=0; fi
# to_parquet JSONL PARQUET [JSONL PARQUET ...]: the records of JSON Lines files as parquet tables
# (as the Hub stores them), in one Python process.
to_parquet() { "$py" -c '
import json, os, sys, pyarrow as pa, pyarrow.parquet as pq
for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    pq.write_table(pa.Table.from_pylist([json.loads(l) for l in open(src, encoding="utf-8")]), dst)' "$@"; }

# --- LAMBADA: the original lambada_test.jsonl (an escaped é comes out as UTF-8) -------------------
put "$in/lambada/lambada_test.jsonl" <<'EOF'
{"text": "the keeper of the lighthouse counted every ship until morning came"}

{"text": "she ordered a caf\u00e9 au lait and waited for the last word"}
EOF
put "$exp/lambada_openai/test.jsonl" <<'EOF'
{"text": "the keeper of the lighthouse counted every ship until morning came"}
{"text": "she ordered a café au lait and waited for the last word"}
EOF
check "lambada: original jsonl" 0 "wrote .*/lambada_openai/test.jsonl: 2 records" -- \
  conv lambada_openai "$in/lambada/lambada_test.jsonl" --out "$tmp/o1"
same "lambada: output" "$exp/lambada_openai/test.jsonl" "$tmp/o1/lambada_openai/test.jsonl"

# --- HellaSwag: the original release (int labels, its own field order), a directory with test -----
put "$in/hs/hellaswag_train.jsonl" <<'EOF'
{"ind": 1, "activity_label": "Washing a dog", "ctx_a": "A dog stands in a tub.", "ctx_b": "a woman", "ctx": "A dog stands in a tub. a woman", "split": "train", "split_type": "indomain", "label": 1, "endings": ["drives a bus.", "pours water over it.", "reads a map.", "paints the tub."], "source_id": "invented~0"}
EOF
put "$in/hs/hellaswag_val.jsonl" <<'EOF'
{"ind": 4, "activity_label": "Painting a fence", "ctx_a": "A man dips a brush into a bucket.", "ctx_b": "he", "ctx": "A man dips a brush into a bucket. he", "split": "val", "split_type": "indomain", "label": 2, "endings": ["eats the brush.", "flies away.", "paints the first board.", "sings loudly."], "source_id": "invented~1"}
{"ind": 9, "activity_label": "Baking bread", "ctx_a": "Flour is poured into a bowl.", "ctx_b": "", "ctx": "Flour is poured into a bowl. ", "split": "val", "split_type": "zeroshot", "label": 0, "endings": ["Water is added and stirred.", "The bowl is thrown.", "A cat reads a book.", "[header] Nothing happens."], "source_id": "invented~2"}
EOF
put "$in/hs/hellaswag_test.jsonl" <<'EOF'
{"ind": 11, "activity_label": "Rowing", "ctx_a": "Two people sit in a boat.", "ctx_b": "they", "ctx": "Two people sit in a boat. they", "split": "test", "split_type": "indomain", "endings": ["row.", "fly.", "melt.", "sing."], "source_id": "invented~3"}
EOF
put "$exp/hellaswag/train.jsonl" <<'EOF'
{"ind": 1, "activity_label": "Washing a dog", "ctx_a": "A dog stands in a tub.", "ctx_b": "a woman", "ctx": "A dog stands in a tub. a woman", "endings": ["drives a bus.", "pours water over it.", "reads a map.", "paints the tub."], "source_id": "invented~0", "split": "train", "split_type": "indomain", "label": "1"}
EOF
put "$exp/hellaswag/validation.jsonl" <<'EOF'
{"ind": 4, "activity_label": "Painting a fence", "ctx_a": "A man dips a brush into a bucket.", "ctx_b": "he", "ctx": "A man dips a brush into a bucket. he", "endings": ["eats the brush.", "flies away.", "paints the first board.", "sings loudly."], "source_id": "invented~1", "split": "val", "split_type": "indomain", "label": "2"}
{"ind": 9, "activity_label": "Baking bread", "ctx_a": "Flour is poured into a bowl.", "ctx_b": "", "ctx": "Flour is poured into a bowl. ", "endings": ["Water is added and stirred.", "The bowl is thrown.", "A cat reads a book.", "[header] Nothing happens."], "source_id": "invented~2", "split": "val", "split_type": "zeroshot", "label": "0"}
EOF
check "hellaswag: original directory (test split skipped)" 0 \
  "skipped .*hellaswag_test.jsonl: split 'test': hellaswag has no such split" -- conv hellaswag "$in/hs" --out "$tmp/o2"
keep; check "hellaswag: train and validation written" 0 "wrote .*/hellaswag/validation.jsonl: 2 records" -- kept
same "hellaswag: train output" "$exp/hellaswag/train.jsonl" "$tmp/o2/hellaswag/train.jsonl"
same "hellaswag: validation output" "$exp/hellaswag/validation.jsonl" "$tmp/o2/hellaswag/validation.jsonl"
check "hellaswag: no other files" 0 "^\./hellaswag/train.jsonl \./hellaswag/validation.jsonl $" -- files "$tmp/o2"
# A Hugging Face JSON Lines export (Dataset.to_json): already in the schema, split from the name.
cp "$exp/hellaswag/validation.jsonl" "$in/hs_hf_validation.jsonl"
check "hellaswag: HF JSON Lines export" 0 "wrote .*validation.jsonl: 2 records" -- \
  conv hellaswag "$in/hs_hf_validation.jsonl" --out "$tmp/o3"
same "hellaswag: HF export output" "$exp/hellaswag/validation.jsonl" "$tmp/o3/hellaswag/validation.jsonl"

# --- PIQA: the original jsonl + *-labels.lst (a directory; tests.jsonl skipped) ------------------
put "$in/piqa/train.jsonl" <<'EOF'
{"id": "p-1", "goal": "How do you keep bread fresh?", "sol1": "Store it in a sealed bag.", "sol2": "Store it in the rain."}
{"id": "p-2", "goal": "To open a stuck jar lid,", "sol1": "freeze the jar for a week.", "sol2": "run the lid under hot water."}
{"id": "p-3", "goal": "Dry wet shoes", "sol1": "stuff them with newspaper.", "sol2": "fill them with soup."}
EOF
printf '0\n1\n0\n' >"$in/piqa/train-labels.lst"
put "$in/piqa/dev.jsonl" <<'EOF'
{"id": "p-4", "goal": "Cool a hot drink quickly", "sol1": "add an ice cube.", "sol2": "add a candle."}
{"id": "p-5", "goal": "Mark a page in a book", "sol1": "tear the page out.", "sol2": "use a bookmark."}
EOF
printf '0\n1\n\n' >"$in/piqa/dev-labels.lst"
put "$in/piqa/tests.jsonl" <<'EOF'
{"id": "p-6", "goal": "Unlabelled", "sol1": "a", "sol2": "b"}
EOF
put "$exp/piqa/train.jsonl" <<'EOF'
{"goal": "How do you keep bread fresh?", "sol1": "Store it in a sealed bag.", "sol2": "Store it in the rain.", "label": 0}
{"goal": "To open a stuck jar lid,", "sol1": "freeze the jar for a week.", "sol2": "run the lid under hot water.", "label": 1}
{"goal": "Dry wet shoes", "sol1": "stuff them with newspaper.", "sol2": "fill them with soup.", "label": 0}
EOF
put "$exp/piqa/validation.jsonl" <<'EOF'
{"goal": "Cool a hot drink quickly", "sol1": "add an ice cube.", "sol2": "add a candle.", "label": 0}
{"goal": "Mark a page in a book", "sol1": "tear the page out.", "sol2": "use a bookmark.", "label": 1}
EOF
check "piqa: original directory with .lst labels" 0 "skipped .*tests.jsonl: split 'test'" -- conv piqa "$in/piqa" --out "$tmp/o4"
same "piqa: train output" "$exp/piqa/train.jsonl" "$tmp/o4/piqa/train.jsonl"
same "piqa: validation output (dev.jsonl)" "$exp/piqa/validation.jsonl" "$tmp/o4/piqa/validation.jsonl"
check "piqa: records file given alone finds its labels" 0 "wrote .*/piqa/train.jsonl: 3 records" -- \
  conv piqa "$in/piqa/train.jsonl" --out "$tmp/o5"
same "piqa: same output" "$exp/piqa/train.jsonl" "$tmp/o5/piqa/train.jsonl"
# A Hugging Face export as one JSON array (Dataset.to_json(lines=False)), string labels, --split.
put "$in/piqa_hf/piqa.json" <<'EOF'
[{"goal": "Cool a hot drink quickly", "sol1": "add an ice cube.", "sol2": "add a candle.", "label": "0"},
 {"goal": "Mark a page in a book", "sol1": "tear the page out.", "sol2": "use a bookmark.", "label": 1}]
EOF
check "piqa: JSON array with --split valid" 0 "wrote .*/piqa/validation.jsonl: 2 records" -- \
  conv piqa "$in/piqa_hf/piqa.json" --split valid --out "$tmp/o6"
same "piqa: JSON array output" "$exp/piqa/validation.jsonl" "$tmp/o6/piqa/validation.jsonl"

# --- WinoGrande: the original directory (train_xl kept, train_s / test / .lst skipped) ------------
put "$in/wg/train_xl.jsonl" <<'EOF'
{"qID": "q1-1", "sentence": "The trophy did not fit in the case because the _ was too big.", "option1": "trophy", "option2": "case", "answer": "1"}
{"qID": "q2-1", "sentence": "Ana lent Beth a pen because _ had two of them.", "option1": "Ana", "option2": "Beth", "answer": "1"}
EOF
put "$in/wg/train_s.jsonl" <<'EOF'
{"qID": "q1-1", "sentence": "The trophy did not fit in the case because the _ was too big.", "option1": "trophy", "option2": "case", "answer": "1"}
EOF
put "$in/wg/dev.jsonl" <<'EOF'
{"qID": "q3-1", "sentence": "The ice melted on the stove but not in the freezer, since the _ was hot.", "option1": "stove", "option2": "freezer", "answer": "1"}
{"qID": "q3-2", "sentence": "The ice melted on the stove but not in the freezer, since the _ was cold.", "option1": "stove", "option2": "freezer", "answer": "2"}
EOF
printf '1\n2\n' >"$in/wg/dev-labels.lst"
put "$in/wg/test.jsonl" <<'EOF'
{"qID": "q4-1", "sentence": "Unlabelled _ here.", "option1": "a", "option2": "b"}
EOF
put "$exp/winogrande/train.jsonl" <<'EOF'
{"sentence": "The trophy did not fit in the case because the _ was too big.", "option1": "trophy", "option2": "case", "answer": "1"}
{"sentence": "Ana lent Beth a pen because _ had two of them.", "option1": "Ana", "option2": "Beth", "answer": "1"}
EOF
put "$exp/winogrande/validation.jsonl" <<'EOF'
{"sentence": "The ice melted on the stove but not in the freezer, since the _ was hot.", "option1": "stove", "option2": "freezer", "answer": "1"}
{"sentence": "The ice melted on the stove but not in the freezer, since the _ was cold.", "option1": "stove", "option2": "freezer", "answer": "2"}
EOF
check "winogrande: original directory" 0 "skipped .*train_s.jsonl: another WinoGrande configuration" -- conv winogrande "$in/wg" --out "$tmp/o7"
keep; check "winogrande: test.jsonl skipped" 0 "skipped .*/test.jsonl: split 'test'" -- kept
same "winogrande: train output (train_xl only)" "$exp/winogrande/train.jsonl" "$tmp/o7/winogrande/train.jsonl"
same "winogrande: validation output" "$exp/winogrande/validation.jsonl" "$tmp/o7/winogrande/validation.jsonl"

# --- ARC: the original nested jsonl; arc_easy skips ARC-Challenge in the same tree ---------------
put "$in/arc/ARC-Easy/ARC-Easy-Train.jsonl" <<'EOF'
{"id": "E-1", "question": {"stem": "Which object gives off its own light?", "choices": [{"text": "the Moon", "label": "A"}, {"text": "a star", "label": "B"}, {"text": "a mirror", "label": "C"}, {"text": "a planet", "label": "D"}]}, "answerKey": "B"}
EOF
put "$in/arc/ARC-Easy/ARC-Easy-Dev.jsonl" <<'EOF'
{"id": "E-2", "question": {"stem": "What do plants take in from the air?", "choices": [{"text": "carbon dioxide", "label": "A"}, {"text": "sand", "label": "B"}, {"text": "salt", "label": "C"}, {"text": "iron", "label": "D"}]}, "answerKey": "A"}
EOF
put "$in/arc/ARC-Easy/ARC-Easy-Test.jsonl" <<'EOF'
{"id": "E-3", "question": {"stem": "Water freezes at what temperature in Celsius?", "choices": [{"text": "0", "label": "1"}, {"text": "50", "label": "2"}, {"text": "100", "label": "3"}]}, "answerKey": "1"}
{"id": "E-4", "question": {"stem": "Which is a mammal?", "choices": [{"text": "trout", "label": "A"}, {"text": "whale", "label": "B"}, {"text": "crow", "label": "C"}, {"text": "newt", "label": "D"}]}, "answerKey": "B"}
EOF
printf 'questionID,originalQuestionID\n' >"$in/arc/ARC-Easy/ARC-Easy-Test.csv"
put "$in/arc/ARC-Challenge/ARC-Challenge-Test.jsonl" <<'EOF'
{"id": "C-1", "question": {"stem": "Which change is chemical?", "choices": [{"text": "melting ice", "label": "A"}, {"text": "rusting iron", "label": "B"}, {"text": "cutting paper", "label": "C"}, {"text": "boiling water", "label": "D"}, {"text": "bending wire", "label": "E"}]}, "answerKey": "B"}
EOF
put "$exp/arc_easy/train.jsonl" <<'EOF'
{"id": "E-1", "question": "Which object gives off its own light?", "choices": {"text": ["the Moon", "a star", "a mirror", "a planet"], "label": ["A", "B", "C", "D"]}, "answerKey": "B"}
EOF
put "$exp/arc_easy/validation.jsonl" <<'EOF'
{"id": "E-2", "question": "What do plants take in from the air?", "choices": {"text": ["carbon dioxide", "sand", "salt", "iron"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"}
EOF
put "$exp/arc_easy/test.jsonl" <<'EOF'
{"id": "E-3", "question": "Water freezes at what temperature in Celsius?", "choices": {"text": ["0", "50", "100"], "label": ["1", "2", "3"]}, "answerKey": "1"}
{"id": "E-4", "question": "Which is a mammal?", "choices": {"text": ["trout", "whale", "crow", "newt"], "label": ["A", "B", "C", "D"]}, "answerKey": "B"}
EOF
put "$exp/arc_challenge/test.jsonl" <<'EOF'
{"id": "C-1", "question": "Which change is chemical?", "choices": {"text": ["melting ice", "rusting iron", "cutting paper", "boiling water", "bending wire"], "label": ["A", "B", "C", "D", "E"]}, "answerKey": "B"}
EOF
check "arc_easy: original tree (ARC-Challenge and CSV skipped)" 0 "skipped .*ARC-Challenge-Test.jsonl: ARC-Challenge data" -- \
  conv arc_easy "$in/arc" --out "$tmp/o8"
keep; check "arc_easy: CSV skipped" 0 "skipped .*ARC-Easy-Test.csv: CSV input is read only for mmlu" -- kept
for s in train validation test; do
  same "arc_easy: $s output" "$exp/arc_easy/$s.jsonl" "$tmp/o8/arc_easy/$s.jsonl"
done
check "arc_challenge: original tree" 0 "wrote .*/arc_challenge/test.jsonl: 1 records" -- conv arc_challenge "$in/arc" --out "$tmp/o8"
same "arc_challenge: test output" "$exp/arc_challenge/test.jsonl" "$tmp/o8/arc_challenge/test.jsonl"

# --- OpenBookQA: the original Main/ (Additional/ skipped) and an HF export with extra fields -----
put "$in/obqa/Main/test.jsonl" <<'EOF'
{"id": "7-1", "question": {"stem": "A magnet will stick to", "choices": [{"text": "a wooden spoon", "label": "A"}, {"text": "a steel nail", "label": "B"}, {"text": "a glass cup", "label": "C"}, {"text": "a paper bag", "label": "D"}]}, "answerKey": "B"}
{"id": "7-2", "question": {"stem": "Seeds are spread by", "choices": [{"text": "wind", "label": "A"}, {"text": "rocks", "label": "B"}, {"text": "clocks", "label": "C"}, {"text": "lamps", "label": "D"}]}, "answerKey": "A"}
EOF
put "$in/obqa/Additional/test_complete.jsonl" <<'EOF'
{"id": "7-1", "question": {"stem": "A magnet will stick to", "choices": []}, "fact1": "x", "answerKey": "B"}
EOF
put "$exp/openbookqa/test.jsonl" <<'EOF'
{"id": "7-1", "question_stem": "A magnet will stick to", "choices": {"text": ["a wooden spoon", "a steel nail", "a glass cup", "a paper bag"], "label": ["A", "B", "C", "D"]}, "answerKey": "B"}
{"id": "7-2", "question_stem": "Seeds are spread by", "choices": {"text": ["wind", "rocks", "clocks", "lamps"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"}
EOF
check "openbookqa: original tree" 0 "skipped .*test_complete.jsonl: the OpenBookQA 'additional'" -- conv openbookqa "$in/obqa" --out "$tmp/o9"
same "openbookqa: test output" "$exp/openbookqa/test.jsonl" "$tmp/o9/openbookqa/test.jsonl"
put "$in/obqa_hf/test-00000-of-00001.jsonl" <<'EOF'
{"answerKey": "B", "fact1": "steel is magnetic", "id": "7-1", "question_stem": "A magnet will stick to", "choices": {"text": ["a wooden spoon", "a steel nail", "a glass cup", "a paper bag"], "label": ["A", "B", "C", "D"]}}
{"id": "7-2", "question_stem": "Seeds are spread by", "choices": {"label": ["A", "B", "C", "D"], "text": ["wind", "rocks", "clocks", "lamps"]}, "answerKey": "A", "humanScore": 1.0}
EOF
check "openbookqa: HF export" 0 "wrote .*/openbookqa/test.jsonl: 2 records" -- conv openbookqa "$in/obqa_hf" --out "$tmp/o10"
same "openbookqa: HF export output" "$exp/openbookqa/test.jsonl" "$tmp/o10/openbookqa/test.jsonl"

# --- MMLU: the original CSV tree (val/ and auxiliary_train/ skipped), quoting, Unicode ------------
put "$in/mmlu/data/dev/abstract_algebra_dev.csv" <<'EOF'
"What is the order of the group Z_4?",1,2,4,8,C
Which of these is a field?,the integers,the rationals,"the naturals, with zero",no ring,B
EOF
put "$in/mmlu/data/dev/anatomy_dev.csv" <<'EOF'
"Which bone is in the ""upper"" arm?",femur,humerus,tibia,"fibula
(lower leg)",B
EOF
put "$in/mmlu/data/test/anatomy_test.csv" <<'EOF'
Where is the µ-receptor found?,brain,bone,hair,nail,A
EOF
put "$in/mmlu/data/val/anatomy_val.csv" <<'EOF'
Skipped?,a,b,c,d,A
EOF
put "$in/mmlu/data/auxiliary_train/mc_test.csv" <<'EOF'
Skipped too?,a,b,c,d,A
EOF
put "$exp/mmlu/dev/abstract_algebra.jsonl" <<'EOF'
{"question": "What is the order of the group Z_4?", "subject": "abstract_algebra", "choices": ["1", "2", "4", "8"], "answer": 2}
{"question": "Which of these is a field?", "subject": "abstract_algebra", "choices": ["the integers", "the rationals", "the naturals, with zero", "no ring"], "answer": 1}
EOF
put "$exp/mmlu/dev/anatomy.jsonl" <<'EOF'
{"question": "Which bone is in the \"upper\" arm?", "subject": "anatomy", "choices": ["femur", "humerus", "tibia", "fibula\n(lower leg)"], "answer": 1}
EOF
put "$exp/mmlu/test/anatomy.jsonl" <<'EOF'
{"question": "Where is the µ-receptor found?", "subject": "anatomy", "choices": ["brain", "bone", "hair", "nail"], "answer": 0}
EOF
check "mmlu: original CSV tree" 0 "wrote .*/mmlu/dev/abstract_algebra.jsonl: 2 records" -- conv mmlu "$in/mmlu/data" --out "$tmp/o11"
keep; check "mmlu: val/ and auxiliary_train/ skipped" 0 "skipped .*mc_test.csv: the MMLU auxiliary training data .*skipped .*anatomy_val.csv: split 'validation'" -- \
  bash -c "tr '\n' ' ' <'$tmp/kept'"
for f in dev/abstract_algebra dev/anatomy test/anatomy; do
  same "mmlu: $f output" "$exp/mmlu/$f.jsonl" "$tmp/o11/mmlu/$f.jsonl"
done
check "mmlu: no other files" 0 "^\./mmlu/dev/abstract_algebra.jsonl \./mmlu/dev/anatomy.jsonl \./mmlu/test/anatomy.jsonl $" -- files "$tmp/o11"
# cais/mmlu "all" exported with to_json: one file, a subject column; split into per-subject files.
put "$in/mmlu_all/all/dev.jsonl" <<'EOF'
{"question": "What is the order of the group Z_4?", "subject": "abstract_algebra", "choices": ["1", "2", "4", "8"], "answer": 2}
{"question": "Which bone is in the \"upper\" arm?", "subject": "anatomy", "choices": ["femur", "humerus", "tibia", "fibula\n(lower leg)"], "answer": 1}
{"question": "Which of these is a field?", "subject": "abstract_algebra", "choices": ["the integers", "the rationals", "the naturals, with zero", "no ring"], "answer": 1}
EOF
check "mmlu: HF 'all' config" 0 "wrote .*/mmlu/dev/anatomy.jsonl: 1 records" -- conv mmlu "$in/mmlu_all/all/dev.jsonl" --out "$tmp/o12"
for f in dev/abstract_algebra dev/anatomy; do
  same "mmlu: 'all' split into $f" "$exp/mmlu/$f.jsonl" "$tmp/o12/mmlu/$f.jsonl"
done

# A cais/mmlu-like tree: per-subject folders (an empty subject is taken from the folder name) and
# an "all" folder next to them, which is skipped.
put "$in/mmlu_repo/anatomy/test-00000-of-00001.jsonl" <<'EOF'
{"question": "Where is the \u00b5-receptor found?", "subject": "", "choices": ["brain", "bone", "hair", "nail"], "answer": 0}
EOF
mkdir -p "$in/mmlu_repo/all"; cp "$in/mmlu_repo/anatomy/test-00000-of-00001.jsonl" "$in/mmlu_repo/all/"
check "mmlu: per-subject folders ('all' skipped)" 0 "skipped .*all/test-00000-of-00001.jsonl: the cais/mmlu 'all' configuration" -- \
  conv mmlu "$in/mmlu_repo" --out "$tmp/o13"
same "mmlu: subject from the folder" "$exp/mmlu/test/anatomy.jsonl" "$tmp/o13/mmlu/test/anatomy.jsonl"

# --- Parquet (Hugging Face Hub files), when PYTHON has pyarrow -------------------------------------
if [ "$have_pyarrow" -eq 1 ]; then
  head -1 "$exp/arc_easy/test.jsonl" >"$tmp/shard0.jsonl"; tail -1 "$exp/arc_easy/test.jsonl" >"$tmp/shard1.jsonl"
  pq="$in/pq"
  to_parquet "$exp/hellaswag/validation.jsonl" "$pq/hellaswag/data/validation-00000-of-00001.parquet" \
    "$exp/winogrande/validation.jsonl" "$pq/winogrande/winogrande_xl/validation-00000-of-00001.parquet" \
    "$exp/winogrande/validation.jsonl" "$pq/winogrande/winogrande_s/validation-00000-of-00001.parquet" \
    "$tmp/shard0.jsonl" "$pq/arc/ARC-Easy/test/0000.parquet" "$tmp/shard1.jsonl" "$pq/arc/ARC-Easy/test/0001.parquet" \
    "$in/mmlu_all/all/dev.jsonl" "$pq/mmlu/all/dev-00000-of-00001.parquet"
  check "parquet: hellaswag" 0 "wrote .*/hellaswag/validation.jsonl: 2 records" -- conv hellaswag "$pq/hellaswag" --out "$tmp/p1"
  same "parquet: hellaswag output" "$exp/hellaswag/validation.jsonl" "$tmp/p1/hellaswag/validation.jsonl"
  check "parquet: winogrande (winogrande_s skipped)" 0 "skipped .*winogrande_s/validation-00000-of-00001.parquet" -- \
    conv winogrande "$pq/winogrande" --out "$tmp/p2"
  same "parquet: winogrande output" "$exp/winogrande/validation.jsonl" "$tmp/p2/winogrande/validation.jsonl"
  # Two shards of one split are concatenated in order; refs/convert/parquet names the split by folder.
  check "parquet: arc_easy, two shards" 0 "wrote .*/arc_easy/test.jsonl: 2 records" -- conv arc_easy "$pq/arc" --out "$tmp/p3"
  same "parquet: arc_easy output" "$exp/arc_easy/test.jsonl" "$tmp/p3/arc_easy/test.jsonl"
  check "parquet: mmlu 'all'" 0 "wrote .*/mmlu/dev/abstract_algebra.jsonl: 2 records" -- conv mmlu "$pq/mmlu" --out "$tmp/p4"
  for f in dev/abstract_algebra dev/anatomy; do
    same "parquet: mmlu $f output" "$exp/mmlu/$f.jsonl" "$tmp/p4/mmlu/$f.jsonl"
  done
  check "parquet: not a parquet file" 1 "bad.parquet: cannot read as parquet" -- \
    bash -c "echo nope >'$tmp/bad.parquet' && '$py' '$src/tools/convert_eval_data.py' piqa '$tmp/bad.parquet' --split train --out '$tmp/x'"
else
  echo "skip parquet cases: $py cannot import pyarrow"
fi
# Without pyarrow (a stand-in package that fails to import): a clear one-line message.
put "$tmp/nopyarrow/pyarrow/__init__.py" <<'EOF'
raise ImportError("No module named 'pyarrow'")
EOF
: >"$tmp/validation-00000-of-00001.parquet"
check "parquet without pyarrow" 1 "validation-00000-of-00001.parquet: reading parquet needs pyarrow" -- \
  env PYTHONPATH="$tmp/nopyarrow" "$py" "$src/tools/convert_eval_data.py" piqa "$tmp/validation-00000-of-00001.parquet" --out "$tmp/x"

# --- Bad input: one line on stderr naming the file, exit code 1, nothing written -------------------
mkdir -p "$in/hs_bad"
sed '2s/"endings": .*\], "source_id"/"source_id"/' "$in/hs/hellaswag_val.jsonl" >"$in/hs_bad/hellaswag_val.jsonl"
check "missing field" 1 "hs_bad/hellaswag_val.jsonl: line 2: endings: missing" -- \
  conv hellaswag "$in/hs_bad/hellaswag_val.jsonl" --out "$tmp/e1"
check "nothing written after an error" 0 "^absent$" -- bash -c "[ ! -e '$tmp/e1' ] && echo absent"
sed '1s/"label": 2/"label": 7/' "$in/hs/hellaswag_val.jsonl" >"$in/hs_bad/hellaswag_train.jsonl"
check "label out of range" 1 "hellaswag_train.jsonl: line 1: label: 7 is out of range \[0, 3\]" -- \
  conv hellaswag "$in/hs_bad/hellaswag_train.jsonl" --out "$tmp/e1"
mkdir -p "$in/piqa_bad"; cp "$in/piqa/train.jsonl" "$in/piqa_bad/"; printf '0\n1\n' >"$in/piqa_bad/train-labels.lst"
check "piqa: label count mismatch" 1 "piqa_bad/train-labels.lst: label: 2 labels for 3 records in .*train.jsonl" -- \
  conv piqa "$in/piqa_bad" --out "$tmp/e2"
printf '0\n2\n1\n' >"$in/piqa_bad/train-labels.lst"
check "piqa: bad label in .lst" 1 "train-labels.lst: line 2: label: '2' is not 0 or 1" -- conv piqa "$in/piqa_bad" --out "$tmp/e2"
rm "$in/piqa_bad/train-labels.lst"
check "piqa: no labels anywhere" 1 "piqa_bad/train.jsonl: line 1: label: missing" -- conv piqa "$in/piqa_bad" --out "$tmp/e2"
check "winogrande: unlabelled test file" 1 "wg/test.jsonl: split 'test': winogrande has no such split" -- \
  conv winogrande "$in/wg/test.jsonl" --out "$tmp/e3"
check "winogrande: test file given as validation" 1 "wg/test.jsonl: line 1: answer: missing" -- \
  conv winogrande "$in/wg/test.jsonl" --split validation --out "$tmp/e3"
put "$in/arc_bad/ARC-Easy-Test.jsonl" <<'EOF'
{"id": "E-9", "question": {"stem": "Pick one", "choices": [{"text": "x", "label": "A"}, {"text": "y", "label": "B"}]}, "answerKey": "C"}
EOF
check "arc: answerKey not among the labels" 1 "ARC-Easy-Test.jsonl: line 1: answerKey: 'C' is not one of the choice labels" -- \
  conv arc_easy "$in/arc_bad" --out "$tmp/e4"
put "$in/mmlu_bad/anatomy_test.csv" <<'EOF'
Fine?,a,b,c,d,A
Five columns?,a,b,c,D
EOF
check "mmlu: CSV row with 5 columns" 1 "anatomy_test.csv: line 2: 5 columns, expected 6" -- conv mmlu "$in/mmlu_bad" --out "$tmp/e5"
printf 'Which letter?,a,b,c,d,E\n' >"$in/mmlu_bad/anatomy_test.csv"
check "mmlu: answer letter out of range" 1 "anatomy_test.csv: line 1: answer: \"E\" is not A, B, C, D or 0-3" -- \
  conv mmlu "$in/mmlu_bad" --out "$tmp/e5"
printf 'Q?,a,b,c,d,A\n' >"$in/mmlu_bad/astrology_test.csv"; rm "$in/mmlu_bad/anatomy_test.csv"
check "mmlu: unknown subject" 1 "astrology_test.csv: line 1: subject: missing, and the file name names no MMLU subject" -- \
  conv mmlu "$in/mmlu_bad" --out "$tmp/e5"
printf '{"text": "fine"}\n{"text": "broken\n' >"$in/lambada_test_bad.jsonl"
check "invalid JSON" 1 "lambada_test_bad.jsonl: line 2: not valid JSON" -- conv lambada_openai "$in/lambada_test_bad.jsonl" --out "$tmp/e6"
echo hello >"$in/test.txt"
check "unknown file format" 1 "test.txt: unknown file format" -- conv lambada_openai "$in/test.txt" --out "$tmp/e6"
cp "$in/lambada/lambada_test.jsonl" "$in/lambada_all.jsonl"
check "split not in the file name" 1 "lambada_all.jsonl: cannot tell the split .*give --split" -- \
  conv lambada_openai "$in/lambada_all.jsonl" --out "$tmp/e6"
check "missing input" 1 "nowhere.jsonl: no such file or directory" -- conv piqa "$in/nowhere.jsonl" --out "$tmp/e6"
check "unknown task" 1 "invalid choice: 'squad'" -- conv squad "$in/lambada" --out "$tmp/e6"
check "unknown --split" 1 "--split: unknown split 'holdout'" -- conv piqa "$in/piqa" --split holdout --out "$tmp/e6"

# An existing output is replaced only with --force (and left alone without it).
check "existing output without --force" 1 "o1/lambada_openai/test.jsonl: exists \(give --force to replace it\)" -- \
  conv lambada_openai "$in/lambada_all.jsonl" --split test --out "$tmp/o1"
same "existing output untouched" "$exp/lambada_openai/test.jsonl" "$tmp/o1/lambada_openai/test.jsonl"
head -1 "$in/lambada/lambada_test.jsonl" >"$in/lambada_one.jsonl"
check "existing output with --force" 0 "wrote .*/lambada_openai/test.jsonl: 1 records" -- \
  conv lambada_openai "$in/lambada_one.jsonl" --split test --out "$tmp/o1" --force
same "--force replaced it" "$in/lambada_one.jsonl" "$tmp/o1/lambada_openai/test.jsonl"
check "no temporary files left" 0 "^\./lambada_openai/test.jsonl $" -- files "$tmp/o1"

echo "convert_eval_data_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
