"""Hostile input: a corpus of broken configs and datasets, and what tuner says about each.

Every case writes a few files into a fresh folder, runs one ``tuner`` command in-process from
there, and expects exit code 2 with exactly one stderr line ``tuner: error: ...`` naming the
file, the line and the key where those exist. A few inputs that look odd but are fine (mixed
record formats, no valid file, a byte-order mark, a very long record) must work instead, and
three cases run the real command in a subprocess to prove "no traceback, exit 2" end to end.
"""

import gzip
import io
import json
import os
import subprocess
import sys

import pytest

from engine.cli import main

from .conftest import REPO

MODEL = "model: builtin:tiny-llama\n"
# a config that trains the demo model on the folder ./data (lines 1-4)
TRAIN = MODEL + "data: data\nnum_layers: -1\niters: 1\n"

HELLO = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def chat(*turns) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def case(name, files, argv, *fragments):
    """``files``: path -> text, bytes, or None for an empty folder."""
    return pytest.param(files, argv, fragments, id=name)


def config(name, text, *fragments, argv=()):
    """A config that ``tuner validate`` must refuse."""
    return case(name, {"run.yaml": text}, ["validate", "run.yaml", *argv], *fragments)


def training_data(name, filename, content, *fragments):
    """A data file (second line bad, where there is a line) that ``tuner train`` must refuse."""
    return case(name, {"run.yaml": TRAIN, f"data/{filename}": content}, ["train", "run.yaml"], *fragments)


def corrupt_parquet() -> bytes:
    """A real Parquet file cut off in the middle, as an interrupted copy leaves it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["a"] * 50, "completion": ["b"] * 50}), buffer)
    data = buffer.getvalue()
    return data[: len(data) // 2]


HUGE = "lorem ipsum " * 440_000  # 5 MB in one record


CONFIGS = [
    # YAML that does not parse
    config("yaml-truncated-mid-mapping", MODEL + "lora_parameters: {rank: 8, scale: 2", "run.yaml:2", "invalid YAML"),
    config("yaml-truncated-mid-key", MODEL + "lora_parameters:\n  rank: 8\n  sca", "run.yaml:4", "invalid YAML"),
    config("yaml-tab-indent", MODEL + "lora_parameters:\n\trank: 8\n", "run.yaml:3", "invalid YAML"),
    config("yaml-bad-indent", MODEL + "  data: data\n", "run.yaml:2", "invalid YAML"),
    config("yaml-two-documents", MODEL + "---\n" + MODEL, "run.yaml:2", "another document"),
    config("yaml-python-tag", "model: !!python/object/apply:os.system ['true']\n", "run.yaml:1", "invalid YAML"),
    config("yaml-unhashable-key", MODEL + "? [a, b]\n: 1\n", "run.yaml:2", "invalid YAML"),
    config("yaml-deeply-nested", MODEL + "data: " + "[" * 5000, "run.yaml", "nested too deeply"),
    config("yaml-recursive-alias", MODEL + "lora_parameters: &a {keys: *a}\n",
           "run.yaml:2", "lora_parameters.keys", "contains itself"),
    # "billion laughs": nine lines that expand to 9**9 values
    config("yaml-alias-bomb", MODEL + "a: &a [x, x, x, x, x, x, x, x, x]\n"
           + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
           "run.yaml:", "more than 100,000 values"),
    # not a mapping of keys, or no readable text at all
    config("top-level-list", "- " + MODEL, "run.yaml:1", "expected a mapping", "list"),
    config("top-level-string", "just some words\n", "run.yaml:1", "expected a mapping", "str"),
    config("empty-config", "", "run.yaml", "model", "required key is missing"),
    config("comments-only-config", "# to do\n", "run.yaml", "model", "required key is missing"),
    config("binary-config", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", "run.yaml:1", "not UTF-8"),
    config("nul-bytes-config", MODEL + "data: da\x00ta\n", "run.yaml:2", "invalid YAML"),
    config("latin1-config", (MODEL + "name: caf\xe9\n").encode("latin-1"), "run.yaml:2", "UTF-8"),
    config("utf16-config", (MODEL + "iters: 5\n").encode("utf-16"), "run.yaml:1", "UTF-8"),
    # keys that do not exist
    config("unknown-key", MODEL + "learnig_rate: 0.001\n", "run.yaml:2", "learnig_rate", "did you mean 'learning_rate'"),
    config("nested-unknown-key", MODEL + "lora_parameters:\n  rnak: 8\n",
           "run.yaml:3", "lora_parameters.rnak", "did you mean 'rank'"),
    config("lora-alpha", MODEL + "lora_parameters:\n  rank: 8\n  alpha: 16\n", "run.yaml:4", "alpha", "scale: 2.0"),
    config("number-as-key", MODEL + "1: 2\n", "run.yaml:2", "a key must be a name, got '1'"),
    config("duplicate-key", MODEL + "batch_size: 4\nbatch_size: 8\n", "run.yaml:3", "batch_size", "first set on line 2"),
    config("nested-duplicate-key", MODEL + "lora_parameters:\n  rank: 4\n  rank: 8\n",
           "run.yaml:4", "lora_parameters.rank", "duplicate key"),
    # wrong types
    config("int-is-a-word", MODEL + "batch_size: lots\n", "run.yaml:2", "batch_size", "an integer", "'lots'"),
    config("int-is-a-float", MODEL + "iters: 2.5\n", "run.yaml:2", "iters", "an integer"),
    config("int-is-a-bool", MODEL + "iters: true\n", "run.yaml:2", "iters", "an integer"),
    config("float-is-a-word", MODEL + "learning_rate: fast\n", "run.yaml:2", "learning_rate", "a number"),
    config("float-is-quoted", MODEL + "learning_rate: '1e-4'\n", "run.yaml:2", "learning_rate", "a number"),
    config("bool-is-a-number", MODEL + "mask_prompt: 1\n", "run.yaml:2", "mask_prompt", "true or false"),
    config("list-is-a-string", MODEL + "lora_parameters:\n  keys: self_attn.q_proj\n",
           "run.yaml:3", "lora_parameters.keys", "a list"),
    config("dict-is-a-number", MODEL + "lora_parameters: 8\n", "run.yaml:2", "lora_parameters", "a mapping"),
    config("dict-is-a-list", MODEL + "optimizer_config: [adam]\n", "run.yaml:2", "optimizer_config", "a mapping"),
    config("string-is-a-list", MODEL + "data: [a, b]\n", "run.yaml:2", "data", "a string"),
    config("model-is-null", "model:\n", "run.yaml:1", "model", "a string"),
    config("unknown-choice", MODEL + "optimizer: adamm\n", "run.yaml:2", "optimizer", "one of"),
    # values out of range
    config("plw-above-1", MODEL + "prompt_loss_weight: 1.5\n", "run.yaml:2", "prompt_loss_weight", "<= 1"),
    config("dropout-1", MODEL + "lora_parameters:\n  dropout: 1.0\n", "run.yaml:3", "lora_parameters.dropout", "< 1"),
    config("batch-size-0", MODEL + "batch_size: 0\n", "run.yaml:2", "batch_size", ">= 1"),
    config("negative-iters", MODEL + "iters: -5\n", "run.yaml:2", "iters", ">= 1"),
    config("zero-epochs", MODEL + "epochs: 0\n", "run.yaml:2", "epochs", "> 0"),
    config("valid-fraction-0.9", MODEL + "valid_fraction: 0.9\n", "run.yaml:2", "valid_fraction", "<= 0.5"),
    config("num-layers-0", MODEL + "num_layers: 0\n", "run.yaml:2", "num_layers", "-1 (all)"),
    config("infinite-learning-rate", MODEL + "learning_rate: .inf\n", "run.yaml:2", "learning_rate", "finite"),
    config("nan-scale", MODEL + "lora_parameters:\n  scale: .nan\n", "run.yaml:3", "lora_parameters.scale", "finite"),
    config("iters-and-epochs", MODEL + "iters: 10\nepochs: 2\n", "run.yaml:3", "epochs", "not both"),
    # keys that do not go together
    config("early-stopping-without-validation", MODEL + "val_batches: 0\nearly_stopping_patience: 2\n",
           "run.yaml:3", "early_stopping_patience", "val_batches is 0"),
    # schedules and dataset lists
    config("unknown-schedule", MODEL + "lr_schedule:\n  name: cosine\n  arguments: [0.001, 100]\n",
           "run.yaml:3", "lr_schedule.name", "unknown schedule 'cosine'", "cosine_decay"),
    config("schedule-arguments-not-a-list", MODEL + "lr_schedule:\n  name: cosine_decay\n  arguments: 0.001\n",
           "run.yaml:4", "lr_schedule.arguments", "a list"),
    config("schedule-without-arguments", MODEL + "lr_schedule:\n  name: cosine_decay\n",
           "run.yaml:2", "lr_schedule.arguments", "required key is missing"),
    config("hf-dataset-without-path", MODEL + "hf_dataset:\n  - train_split: train\n",
           "run.yaml:3", "hf_dataset[0]", "needs path"),
    config("hf-dataset-is-a-string", MODEL + "hf_dataset: someone/data\n", "run.yaml:2", "hf_dataset", "a list"),
    # --set
    config("set-without-equals", MODEL, "--set", "expected key=value", "'iters'", argv=["--set", "iters"]),
    config("set-empty-key", MODEL, "--set", "expected key=value", argv=["--set", "=5"]),
    config("set-unknown-key", MODEL, "--set", "learnig_rate", "did you mean", argv=["--set", "learnig_rate=1e-4"]),
    config("set-bad-value", MODEL, "--set", "batch_size", "an integer", argv=["--set", "batch_size=lots"]),
    config("set-unreadable-value", MODEL, "--set", "iters", "cannot read value", argv=["--set", "iters=[1"]),
    config("set-inside-a-number", MODEL + "batch_size: 4\n", "--set", "batch_size.x", "inside a int",
           argv=["--set", "batch_size.x=1"]),
    config("set-iters-and-epochs", MODEL, "--set", "not both", argv=["--set", "iters=5", "--set", "epochs=1"]),
    # files and chains
    case("config-missing", {}, ["validate", "nope.yaml"], "nope.yaml", "not found"),
    case("config-is-a-folder", {"folder.yaml": None}, ["validate", "folder.yaml"], "folder.yaml", "cannot read"),
    case("second-stage-other-rank",
         {"a.yaml": MODEL + "lora_parameters:\n  rank: 8\n", "b.yaml": "# stage 2\nlora_parameters:\n  rank: 4\n"},
         ["validate", "a.yaml", "b.yaml"], "b.yaml:2", "lora_parameters", "rank 4 differs"),
]

MODELS = [
    case("model-is-a-file", {"run.yaml": TRAIN.replace("builtin:tiny-llama", "weights.bin"), "weights.bin": b"\0" * 64},
         ["train", "run.yaml"], "run.yaml:1", "model", "weights.bin"),
    case("model-folder-without-config", {"run.yaml": TRAIN.replace("builtin:tiny-llama", "mymodel"),
                                         "mymodel/README.md": "weights go here\n"},
         ["train", "run.yaml"], "run.yaml:1", "model", "config.json"),
    case("model-folder-missing", {"run.yaml": TRAIN.replace("builtin:tiny-llama", "./nope")},
         ["train", "run.yaml"], "run.yaml:1", "model", "no such model folder"),
    case("model-unknown-builtin", {"run.yaml": TRAIN.replace("tiny-llama", "huge-llama")},
         ["train", "run.yaml"], "run.yaml:1", "model", "builtin:huge-llama"),
    case("more-layers-than-the-model", {"run.yaml": TRAIN.replace("num_layers: -1", "num_layers: 16"),
                                        "data/train.jsonl": '{"prompt": "a b", "completion": "c"}\n' * 4},
         ["train", "run.yaml"], "run.yaml:3", "num_layers", "more than the model's 4 layers"),
    case("model-gguf-that-is-not-gguf", {"run.yaml": TRAIN.replace("builtin:tiny-llama", "fake.gguf"),
                                         "fake.gguf": "not a gguf at all\n"},
         ["train", "run.yaml"], "run.yaml:1", "model", "GGUF"),
    case("resume-adapter-file-missing", {"run.yaml": TRAIN + "resume_adapter_file: old/adapters.safetensors\n"},
         ["train", "run.yaml"], "run.yaml:5", "resume_adapter_file", "no such file"),
    case("resume-a-folder-that-is-not-a-run", {"notarun/notes.txt": "hi\n"},
         ["train", "--resume", "notarun"], "notarun", "not a run folder", "config.yaml"),
    case("resume-a-run-without-checkpoints", {"halfrun/config.yaml": TRAIN},
         ["train", "--resume", "halfrun"], "halfrun", "no checkpoint"),
]

DATA = [
    # where the data should be ("data/" is mlx-lm's default; without the slash it could be a hub id)
    case("data-folder-missing", {"run.yaml": TRAIN.replace("data: data", "data: data/")},
         ["train", "run.yaml"], "run.yaml:2", "data", "no such file or folder"),
    case("data-folder-without-train", {"run.yaml": TRAIN, "data/valid.jsonl": jsonl(HELLO)},
         ["train", "run.yaml"], "data", "no train file"),
    case("txt-data-file", {"run.yaml": TRAIN.replace("data: data", "data: notes.txt"), "notes.txt": "hello\n"},
         ["train", "run.yaml"], "notes.txt", "unsupported file type"),
    case("train-jsonl-is-a-folder", {"run.yaml": TRAIN, "data/train.jsonl/x": "{}\n"},
         ["train", "run.yaml"], "train.jsonl", "cannot read"),
    case("inspect-missing-file", {}, ["inspect", "gone.jsonl", "--model", "builtin:tiny-llama"],
         "gone.jsonl", "no such file or folder"),
    case("inspect-data-without-model", {"data/train.jsonl": jsonl(HELLO)}, ["inspect", "data"], "data", "--model"),
    # JSONL lines
    training_data("empty-train-jsonl", "train.jsonl", "", "run.yaml:2", "data", "training split is empty"),
    training_data("blank-lines-only", "train.jsonl", "\n  \n\t\n\n", "run.yaml:2", "data", "training split is empty"),
    training_data("line-not-json", "train.jsonl", jsonl(HELLO) + "{not json\n", "train.jsonl:2", "not valid JSON"),
    training_data("line-is-a-list", "train.jsonl", jsonl(HELLO, [1, 2]), "train.jsonl:2", "got list"),
    training_data("line-is-a-number", "train.jsonl", jsonl(HELLO, 42), "train.jsonl:2", "got int"),
    training_data("line-is-a-string", "train.jsonl", jsonl(HELLO, "hello"), "train.jsonl:2", "got str"),
    training_data("line-is-null", "train.jsonl", jsonl(HELLO, None), "train.jsonl:2", "got NoneType"),
    training_data("deeply-nested-line", "train.jsonl", jsonl(HELLO) + "[" * 200_000 + "\n",
                  "train.jsonl:2", "nested"),
    training_data("latin1-line", "train.jsonl", jsonl(HELLO).encode() + '{"text": "café"}\n'.encode("latin-1"),
                  "train.jsonl:2", "UTF-8"),
    training_data("binary-train-jsonl", "train.jsonl", bytes(range(256)) * 8, "train.jsonl:1"),
    training_data("huge-line-not-json", "train.jsonl", jsonl(HELLO) + '{"text": "' + HUGE,
                  "train.jsonl:2", "not valid JSON"),
    training_data("huge-line-no-assistant", "train.jsonl", jsonl(HELLO, chat(("user", HUGE))),
                  "train.jsonl:2", "no assistant message"),
    training_data("many-unknown-fields", "train.jsonl", jsonl(HELLO, {f"f{i}": i for i in range(10_000)}),
                  "train.jsonl:2", "unrecognised record", "f0, f1, ", "9990 more"),
    # chats
    training_data("chat-without-assistant", "train.jsonl", jsonl(HELLO, chat(("user", "hi"))),
                  "train.jsonl:2", "no assistant message"),
    training_data("chat-unknown-role", "train.jsonl", jsonl(HELLO, chat(("user", "hi"), ("bot", "hello"))),
                  "train.jsonl:2", "messages[1]", "unknown role 'bot'"),
    training_data("chat-role-is-a-list", "train.jsonl", jsonl(HELLO, chat((["user"], "hi"), ("assistant", "x"))),
                  "train.jsonl:2", "messages[0]", "role"),
    training_data("messages-not-a-list", "train.jsonl", jsonl(HELLO, {"messages": "hi there"}),
                  "train.jsonl:2", "'messages'", "list"),
    training_data("messages-empty", "train.jsonl", jsonl(HELLO, {"messages": []}), "train.jsonl:2", "'messages'"),
    training_data("message-not-an-object", "train.jsonl", jsonl(HELLO, {"messages": ["hi", "hello"]}),
                  "train.jsonl:2", "messages[0]", "'role'"),
    training_data("content-not-a-string", "train.jsonl", jsonl(HELLO, chat(("user", 7), ("assistant", "x"))),
                  "train.jsonl:2", "messages[0]", "'content' must be text"),
    training_data("content-part-not-text", "train.jsonl",
                  jsonl(HELLO, chat(("user", [{"type": "text", "text": 5}]), ("assistant", "x"))),
                  "train.jsonl:2", "messages[0]", "'content' must be text"),
    # prompt / completion and the rest
    training_data("null-completion", "train.jsonl", jsonl(HELLO, {"prompt": "p", "completion": None}),
                  "train.jsonl:2", "fields: prompt; null: completion"),
    training_data("prompt-is-a-number", "train.jsonl", jsonl(HELLO, {"prompt": 3, "completion": "c"}),
                  "train.jsonl:2", "'prompt' must be text"),
    training_data("unrecognised-record", "train.jsonl", jsonl(HELLO, {"question": "q", "answer": "a"}),
                  "train.jsonl:2", "unrecognised record", "answer, question"),
    # other file types
    training_data("json-truncated", "train.json", '[\n  {"text": "a"},\n  {"text": ', "train.json:3", "not valid JSON"),
    training_data("json-not-a-list", "train.json", '{"text": "a"}', "train.json", "list of records"),
    training_data("json-latin1", "train.json", '[{"text": "café"}]'.encode("latin-1"), "train.json", "UTF-8"),
    training_data("csv-missing-column", "train.csv", "prompt\nhello\n", "train.csv:2", "unrecognised record"),
    training_data("csv-short-row", "train.csv", "prompt,completion\nhi,there\nhello\n", "train.csv:3", "completion"),
    training_data("csv-latin1", "train.csv", "prompt,completion\nhi,café\n".encode("latin-1"), "train.csv:2", "UTF-8"),
    training_data("parquet-corrupt", "train.parquet", corrupt_parquet(), "train.parquet", "cannot read"),
    training_data("parquet-not-parquet", "train.parquet", "prompt,completion\nhi,there\n",
                  "train.parquet", "cannot read"),
]


def write_files(folder, files: dict) -> None:
    """path -> text or bytes; None makes a folder, ("link", target) a symbolic link, ("fifo",) a
    named pipe."""
    for name, content in files.items():
        path = folder / name
        if content is None:
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple) and content[0] == "link":
            os.symlink(content[1], path)
        elif isinstance(content, tuple) and content[0] == "fifo":
            os.mkfifo(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def error_line(stderr: str) -> str:
    """The one line of a user error; anything else on stderr (a traceback, chatter) fails."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("tuner: error: "), stderr
    assert len(lines[0]) < 1000, f"{len(lines[0])} characters"  # a 5 MB line is not echoed back
    return lines[0]


@pytest.mark.parametrize("files, argv, fragments", CONFIGS + MODELS + DATA)
def test_bad_input_is_one_line_and_exit_2(files, argv, fragments, in_tmp, capsys):
    write_files(in_tmp, files)
    code = main(argv)
    line = error_line(capsys.readouterr().err)
    assert code == 2
    for fragment in fragments:
        assert fragment in line, line


def test_hostile_corpus_is_big_enough():
    assert len(CONFIGS + MODELS + DATA) >= 40


# --------------------------------------------------------------------------- odd but fine


def test_mixed_formats_in_one_file_work(in_tmp, capsys):
    records = [HELLO, {"prompt": "p", "completion": "c"}, {"instruction": "i", "output": "o"}, {"text": "t"}] * 5
    write_files(in_tmp, {"run.yaml": TRAIN + "valid_fraction: 0\n", "data/train.jsonl": jsonl(*records)})
    assert main(["inspect", "run.yaml", "--json", "--no-cache"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["splits"]["train"]["formats"] == {"chat": 5, "completion": 5, "alpaca": 5, "text": 5}


def test_missing_valid_file_holds_out_training_records(in_tmp, capsys):
    write_files(in_tmp, {"run.yaml": TRAIN, "data/train.jsonl": jsonl(*[HELLO] * 40)})
    assert main(["inspect", "run.yaml", "--json", "--no-cache"]) == 0
    splits = json.loads(capsys.readouterr().out)["splits"]
    assert (splits["train"]["count"], splits["valid"]["count"]) == (38, 2)


def test_inspect_lists_unreadable_lines_and_counts_the_rest(in_tmp, capsys):
    lines = jsonl(HELLO).encode() + b'{"text": "caf\xe9"}\n[1, 2]\n' + jsonl(HELLO).encode()
    write_files(in_tmp, {"run.yaml": TRAIN + "valid_fraction: 0\n", "data/train.jsonl": lines})
    assert main(["inspect", "run.yaml", "--json", "--no-cache"]) == 0
    train = json.loads(capsys.readouterr().out)["splits"]["train"]
    assert train["count"] == 2
    assert [error.split("train.jsonl:")[1][:2] for error in train["parse_errors"]] == ["2:", "3:"]


def test_byte_order_marks_are_not_data(in_tmp, capsys):
    """Files saved by Windows tools start with a BOM; it must not break line 1 or the CSV header."""
    write_files(in_tmp, {
        "run.yaml": "\ufeff" + TRAIN + "valid_fraction: 0\n",
        "data/train.jsonl": "\ufeff" + jsonl(HELLO, HELLO),
        "data/valid.csv": "\ufeffprompt,completion\nhi,there\n",
    })
    assert main(["inspect", "run.yaml", "--json", "--no-cache"]) == 0
    splits = json.loads(capsys.readouterr().out)["splits"]
    assert splits["train"]["count"] == 2 and splits["valid"]["formats"]["completion"] == 1


def test_very_long_records_are_counted_and_truncated(in_tmp, capsys):
    """A megabyte in one JSONL line, and a CSV field past the csv module's 128 KiB default limit."""
    write_files(in_tmp, {
        "run.yaml": TRAIN + "max_seq_length: 64\n",
        "data/train.jsonl": jsonl(HELLO, {"prompt": HUGE[:1_000_000], "completion": "short"}),
        "data/valid.csv": f"prompt,completion\n{HUGE[:200_000]},short\n",
    })
    assert main(["inspect", "run.yaml", "--json", "--no-cache"]) == 0
    splits = json.loads(capsys.readouterr().out)["splits"]
    assert (splits["train"]["count"], splits["train"]["truncated"]) == (2, 1)
    assert (splits["valid"]["count"], splits["valid"]["truncated"]) == (1, 1)


# --------------------------------------------------------------------------- end to end


def tuner(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


@pytest.mark.parametrize("files, argv, fragments", [
    case("gzipped-config", {"run.yaml": gzip.compress(TRAIN.encode())},
         ["validate", "run.yaml"], "run.yaml:1", "UTF-8"),
    case("latin1-line", {"run.yaml": TRAIN, "data/train.jsonl": b'{"text": "caf\xe9"}\n'},
         ["train", "run.yaml"], "train.jsonl:1", "UTF-8"),
    # no hub access here: offline mode makes the failure immediate, and the line still names the key
    case("hub-id-offline", {"run.yaml": TRAIN.replace("data: data", "data: someone/no-such-dataset")},
         ["train", "run.yaml"], "run.yaml:2", "data", "someone/no-such-dataset", "Hugging Face"),
])
def test_end_to_end_no_traceback(files, argv, fragments, tmp_path):
    write_files(tmp_path, files)
    result = tuner(*argv, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    for fragment in fragments:
        assert fragment in line, line
