#!/usr/bin/env bash
# End-to-end checks of the `mor` executable: paper parameter counts, user errors as one line with
# the file/key at fault and a non-zero exit code, and `config show` round-tripping.
# Usage: cli_test.sh MOR_BINARY SOURCE_DIR
set -uo pipefail
mor="$1"; src="$2"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check "paper count MoR-360M N_r=2" 0 "167,149,440" -- "$mor" model info "$src/configs/model/mor-360m-ec-r2.yaml"
check "paper count MoR-360M N_r=3" 0 "117,987,840" -- "$mor" model info "$src/configs/model/mor-360m-ec-r3.yaml"
check "paper count vanilla 360M" 0 "314,634,240" -- "$mor" model info "$src/configs/model/smollm-360m.yaml"
check "demo model instantiates and matches the accounting" 0 "parameters 217792, accounting 217792: match" -- "$mor" model info "$src/configs/demo.yaml" --instantiate

printf 'model:\n  hidden_size: 64\n  hiden_size: 3\n' >"$tmp/typo.yaml"
check "unknown key names file:line and suggests" 1 "typo.yaml:3.*model.hiden_size.*did you mean 'model.hidden_size'" -- "$mor" model info "$tmp/typo.yaml"
check "missing config file" 1 "cannot open config file .*nope.yaml" -- "$mor" config show "$tmp/nope.yaml"
check "bad --set value names the override" 1 "--set.*model.hidden_size" -- "$mor" config show "$src/configs/demo.yaml" --set model.hidden_size=abc
printf 'model:\n  num_layers: 32\n  recursion: {sharing: middle_cycle, num_recursions: 4}\n' >"$tmp/split.yaml"
check "layer count that does not split is an error, not a silent drop" 1 "split.yaml:2.*model.num_layers.*30 or 34" -- "$mor" model info "$tmp/split.yaml"
check "model info without a config" 1 "give a config file" -- "$mor" model info
check "unknown subcommand is a usage error" 2 "usage error" -- "$mor" frobnicate

tok="$src/tests/fixtures/tokenizer/mor-trained/bytelevel.json"
check "tokenizer encode" 0 "^[0-9]+( [0-9]+)+$" -- "$mor" tokenizer encode "$tok" --text "Hello, world 123"
ids="$("$mor" tokenizer encode "$tok" --text "Hello, world 123" 2>/dev/null)"
# shellcheck disable=SC2086
check "tokenizer decode inverts encode" 0 "^Hello, world 123$" -- "$mor" tokenizer decode "$tok" $ids
check "missing tokenizer file" 1 "nope.json.*cannot open tokenizer file" -- "$mor" tokenizer encode "$tmp/nope.json" --text x
printf '{"model": {"type": "WordPiece"}}' >"$tmp/wordpiece.json"
check "unsupported tokenizer model names the JSON path" 1 "wordpiece.json: model.type: unsupported" -- "$mor" tokenizer encode "$tmp/wordpiece.json" --text x

"$mor" config show "$src/configs/demo.yaml" >"$tmp/a.yaml" 2>&1
check "config show output loads back identically" 0 "" -- "$mor" config show "$tmp/a.yaml"
if ! cmp -s "$tmp/a.yaml" "$tmp/out"; then echo "FAIL config show round trip differs"; diff "$tmp/a.yaml" "$tmp/out" | head; failed=$((failed+1)); fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
