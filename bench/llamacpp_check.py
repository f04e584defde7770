"""An exported GGUF under real llama.cpp, against the same weights in MLX: tokenisation and greedy
tokens, prompt by prompt.

    npm install --prefix ~/.cache/tuner/llamacpp node-llama-cpp@3      # once: a prebuilt llama.cpp
    tuner export RUN --to gguf model.gguf
    tuner export RUN --to mlx --quant dequantize fused                 # the reference, same weights
    python bench/llamacpp_check.py model.gguf fused DATA.jsonl [--n 12] [--tokens 8]

The suite checks exports with the ``gguf`` package, tuner's own importer and a numpy model of
llama.cpp's layout; this runs llama.cpp itself (node-llama-cpp ships its binaries on npm, so
nothing is compiled). The reference is computed in float32. ``DATA.jsonl`` holds chat or
prompt/completion records; each record's prompt goes through the model's chat template, and the
answer llama.cpp gives is printed beside the record's own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

NODE_DIR = Path.home() / ".cache" / "tuner" / "llamacpp"
SCRIPT = """\
import {getLlama} from "node-llama-cpp";
const [modelPath, promptsFile, n] = process.argv.slice(2);
const fs = await import("node:fs");
const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath});
const out = [];
for (const text of JSON.parse(fs.readFileSync(promptsFile, "utf8"))) {
  const ctx = await model.createContext({contextSize: 2048});
  const tokens = model.tokenize(text, true);
  const generated = [];
  for await (const t of ctx.getSequence().evaluate(tokens, {temperature: 0})) {
    generated.push(t);
    if (generated.length >= Number(n)) break;
  }
  out.push({tokens: Array.from(tokens), generated});
  await ctx.dispose();
}
console.log(JSON.stringify(out));
"""


def prompts_and_answers(path: Path, n: int) -> list[tuple[list[dict], str | None]]:
    rows = []
    for line in path.read_text().splitlines()[:n]:
        row = json.loads(line)
        if "messages" in row:
            rows.append((row["messages"][:-1], row["messages"][-1]["content"]))
        else:
            rows.append(([{"role": "user", "content": row["prompt"]}], row.get("completion")))
    return rows


def run_llamacpp(gguf: Path, texts: list[str], tokens: int, node_dir: Path) -> list[dict]:
    if not (node_dir / "node_modules" / "node-llama-cpp").is_dir():
        raise SystemExit(f"no node-llama-cpp in {node_dir}: npm install --prefix {node_dir} node-llama-cpp@3")
    (node_dir / "check.mjs").write_text(SCRIPT)
    (node_dir / "prompts.json").write_text(json.dumps(texts))
    done = subprocess.run(["node", "check.mjs", str(gguf.resolve()), "prompts.json", str(tokens)],
                          cwd=node_dir, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"llama.cpp failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("reference", help="an mlx-lm model folder with the same weights")
    parser.add_argument("data", type=Path)
    parser.add_argument("--n", type=int, default=12, help="records to ask")
    parser.add_argument("--tokens", type=int, default=8, help="greedy tokens per prompt")
    parser.add_argument("--node-dir", type=Path, default=NODE_DIR)
    args = parser.parse_args(argv)

    import mlx.core as mx
    from mlx_lm.generate import stream_generate
    from mlx_lm.utils import load

    model, tokenizer = load(args.reference)
    model.set_dtype(mx.float32)
    rows = prompts_and_answers(args.data, args.n)
    texts = [tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
             for messages, _ in rows]
    cpp = run_llamacpp(args.gguf, texts, args.tokens, args.node_dir)
    same_ids = same_tokens = 0
    for text, (_, reference), theirs in zip(texts, rows, cpp):
        ids = tokenizer.encode(text, add_special_tokens=False)
        same_ids += ids == theirs["tokens"]
        ours = [r.token for r in stream_generate(model, tokenizer, ids, max_tokens=args.tokens)]
        n = len(theirs["generated"])  # llama.cpp stops before its end-of-turn token
        same_tokens += ours[:n] == theirs["generated"]
        print(f"llama.cpp: {tokenizer.decode(theirs['generated'])!r:30} mlx: {tokenizer.decode(ours[:n])!r:30} "
              f"reference: {reference!r}")
    print(f"tokenised the same: {same_ids}/{len(rows)}; greedy tokens the same: {same_tokens}/{len(rows)}")
    return 0 if same_ids == same_tokens == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
