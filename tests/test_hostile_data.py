"""Hostile data, model files and file systems (issue 22): what tuner says about each, and that
nothing hangs, eats the memory or loses a checkpoint.

Like ``tests/test_hostile_input.py``, each case writes a few files into a fresh folder and runs one
``tuner`` command in-process: a user's mistake or a refusing file system is exactly one stderr line
``tuner: error: ...`` naming the path, and exit code 2. The tests run as root, for whom ``chmod``
refuses nothing, so unwritable places are made the ways root meets them too: a regular file where a
folder should be (ENOTDIR), a 300-character name (ENAMETOOLONG), and a symbolic link to
``/dev/full``, on which every write fails with ENOSPC as on a full disk. A bug is one stderr line
too, with its traceback in a ``crash.log`` and exit code 70.
"""

import errno
import json
import signal
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from engine.cli import main
from engine.errors import EXIT_INTERNAL_ERROR, StorageError, first_line
from engine.files import atomic_save_safetensors, atomic_write_text

from .conftest import REPO, write_config
from .test_hostile_input import error_line, write_files

MODEL = "model: builtin:tiny-llama\n"
TRAIN = MODEL + "data: data\nnum_layers: -1\niters: 1\n"  # trains the demo model on ./data
HELLO = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
LONG_NAME = "n" * 300  # longer than any Linux file system allows in one name


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def chat_with(content) -> dict:
    return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]}


def case(name, files, argv, *fragments):
    return pytest.param(files, argv, fragments, id=name)


def data_case(name, files, *fragments):
    """Files for ./data (a dict) that ``tuner train run.yaml`` must refuse."""
    return case(name, {"run.yaml": TRAIN, **{f"data/{k}": v for k, v in files.items()}}, ["train", "run.yaml"],
                *fragments)


SURROGATE_LINE = '{"messages": [{"role": "user", "content": "a \\ud800 b"}, {"role": "assistant", "content": "x"}]}\n'

BAD = [
    # 9: lone surrogates, wherever they are in a row
    data_case("lone-surrogate-in-content", {"train.jsonl": jsonl(HELLO) + SURROGATE_LINE},
              "train.jsonl:2", "\\ud800", "surrogate"),
    data_case("lone-low-surrogate-in-prompt",
              {"train.jsonl": jsonl(HELLO) + '{"prompt": "\\udfff", "completion": "c"}\n'}, "train.jsonl:2", "\\udfff"),
    data_case("lone-surrogate-in-a-key", {"train.jsonl": jsonl(HELLO) + '{"text": "t", "\\ud83d": 1}\n'},
              "train.jsonl:2", "surrogate"),
    data_case("lone-surrogate-in-tools",
              {"train.jsonl": '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],'
                              ' "tools": [{"name": "\\ud800"}]}\n'}, "train.jsonl:1", "surrogate"),
    data_case("lone-surrogate-in-json-file",
              {"train.json": '[{"text": "fine"}, {"text": "half \\udc00 a pair"}]'}, "train.json#1", "surrogate"),
    # 10: FIFOs and devices, as data and as config files
    data_case("train-jsonl-is-a-fifo", {"train.jsonl": ("fifo",)}, "train.jsonl", "named pipe", "regular files"),
    data_case("train-jsonl-links-to-dev-zero", {"train.jsonl": ("link", "/dev/zero")}, "train.jsonl", "character device"),
    data_case("valid-jsonl-links-to-dev-urandom", {"train.jsonl": jsonl(HELLO), "valid.jsonl": ("link", "/dev/urandom")},
              "valid.jsonl", "character device"),
    case("data-file-is-a-fifo", {"run.yaml": TRAIN.replace("data: data", "data: pipe.jsonl"), "pipe.jsonl": ("fifo",)},
         ["train", "run.yaml"], "pipe.jsonl", "named pipe"),
    case("config-is-a-fifo", {"f.yaml": ("fifo",)}, ["validate", "f.yaml"], "f.yaml", "named pipe"),
    case("config-links-to-dev-zero", {"z.yaml": ("link", "/dev/zero")}, ["train", "z.yaml"], "z.yaml", "character device"),
    case("inspected-config-is-a-fifo", {"f.yaml": ("fifo",)}, ["inspect", "f.yaml"], "f.yaml", "named pipe"),
    case("config-dangling-link", {"run.yaml": ("link", "moved.yaml")}, ["validate", "run.yaml"], "run.yaml",
         "moved.yaml", "does not exist"),
    case("config-link-loop", {"run.yaml": ("link", "run.yaml")}, ["train", "run.yaml"], "run.yaml", "loop"),
    case("second-config-is-a-fifo", {"a.yaml": MODEL, "b.yaml": ("fifo",)}, ["validate", "a.yaml", "b.yaml"],
         "b.yaml", "named pipe"),
    # 11: content as a list of anything but text parts; two files for one split
    data_case("content-is-a-list-of-strings", {"train.jsonl": jsonl(HELLO, chat_with(["hello", "world"]))},
              "train.jsonl:2", "messages[0]", "part 0 is str"),
    data_case("content-has-an-image-part",
              {"train.jsonl": jsonl(chat_with([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": "x"}]))},
              "train.jsonl:1", "part 1 is of type 'image_url'"),
    data_case("content-is-an-empty-list", {"train.jsonl": jsonl(chat_with([]))}, "train.jsonl:1", "empty list"),
    data_case("content-part-text-is-a-number", {"train.jsonl": jsonl(chat_with([{"type": "text", "text": 5}]))},
              "train.jsonl:1", "part 0 is dict"),
    data_case("train-jsonl-and-train-csv", {"train.jsonl": jsonl(HELLO), "train.csv": "prompt,completion\na,b\n"},
              "train.jsonl", "train.csv", "train split"),
    data_case("valid-and-validation", {"train.jsonl": jsonl(HELLO), "valid.jsonl": jsonl(HELLO),
                                       "validation.jsonl": jsonl(HELLO)}, "valid.jsonl", "validation.jsonl"),
    data_case("three-test-files", {"train.jsonl": jsonl(HELLO), "test.jsonl": jsonl(HELLO), "test.json": "[]",
                                   "test.parquet": b"x"}, "test.jsonl", "test.json", "test.parquet"),
    # 12: broken links say what they are, not "no train file"
    data_case("train-jsonl-dangling-link", {"train.jsonl": ("link", "gone.jsonl")}, "train.jsonl", "gone.jsonl",
              "does not exist"),
    data_case("train-jsonl-link-loop", {"train.jsonl": ("link", "train.jsonl")}, "train.jsonl", "loop"),
    case("data-folder-dangling-link", {"run.yaml": TRAIN, "data": ("link", "nowhere")}, ["train", "run.yaml"],
         "run.yaml:2", "data", "nowhere", "does not exist"),
    case("inspected-data-dangling-link", {"d.jsonl": ("link", "old.jsonl")},
         ["inspect", "d.jsonl", "--model", "builtin:tiny-llama"], "d.jsonl", "old.jsonl", "does not exist"),
    # 13: a folder that is no model
    case("model-folder-without-anything", {"empty/notes.txt": "x"}, ["inspect", "data", "--model", "empty"],
         "empty", "no config.json", "no tokenizer"),
    case("model-folder-without-tokenizer", {"m/config.json": "{}", "data/train.jsonl": jsonl(HELLO)},
         ["inspect", "data", "--model", "m"], "m is not a model folder", "no tokenizer"),
    case("model-folder-without-config-for-training", {"run.yaml": TRAIN.replace("builtin:tiny-llama", "m"),
                                                      "m/tokenizer.json": "{}", "data/train.jsonl": jsonl(HELLO)},
         ["train", "run.yaml"], "run.yaml:1", "model", "no config.json"),
    # 2: the file system refuses the run folder
    case("runs-dir-under-a-file", {"run.yaml": TRAIN + "runs_dir: blocker/runs\n", "blocker": "a file\n",
                                   "data/train.jsonl": jsonl(HELLO, HELLO)}, ["train", "run.yaml"], "blocker"),
]


@pytest.mark.parametrize("files, argv, fragments", BAD)
def test_bad_data_and_files_are_one_line_and_exit_2(files, argv, fragments, in_tmp, capsys):
    write_files(in_tmp, files)
    started = time.monotonic()
    code = main(argv)
    line = error_line(capsys.readouterr().err)
    assert code == 2, line
    for fragment in fragments:
        assert fragment in line, line
    assert time.monotonic() - started < 60  # nothing blocked on a pipe or read a device for ever


def test_the_corpus_covers_every_class():
    assert len(BAD) >= 24


# --------------------------------------------------------------------------- fine after all


def test_text_parts_are_joined_and_surrogate_pairs_are_characters(in_tmp, capsys):
    """OpenAI-style text parts train as their joined text; an escaped emoji (a whole pair) is fine."""
    from engine.data.rows import read_records
    from engine.data.records import Features

    parts = chat_with([{"type": "text", "text": "hello "}, {"text": "world"}])
    emoji = '{"prompt": "smile \\ud83d\\ude00", "completion": "ok"}\n'
    write_files(in_tmp, {"run.yaml": TRAIN + "valid_fraction: 0\n", "data/train.jsonl": jsonl(parts) + emoji})
    records = read_records(in_tmp / "data" / "train.jsonl", Features())
    assert records[0].messages[0]["content"] == "hello world"
    assert records[1].messages[0]["content"] == "smile \U0001F600"
    assert main(["inspect", "run.yaml", "--json", "--no-cache"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["train"]["count"] == 2


def test_inspect_lists_a_surrogate_line_and_counts_the_rest(in_tmp, capsys):
    write_files(in_tmp, {"run.yaml": TRAIN + "valid_fraction: 0\n",
                         "data/train.jsonl": jsonl(HELLO) + SURROGATE_LINE + jsonl(HELLO)})
    assert main(["inspect", "run.yaml", "--json", "--no-cache"]) == 0
    train = json.loads(capsys.readouterr().out)["splits"]["train"]
    assert train["count"] == 2
    assert len(train["parse_errors"]) == 1 and "train.jsonl:2" in train["parse_errors"][0]


def test_a_library_message_ending_in_a_colon_keeps_what_follows():
    error = ValueError("Couldn't instantiate the backend tokenizer from one of: \n(1) a file, \n(2) a class")
    assert first_line(error) == "Couldn't instantiate the backend tokenizer from one of: (1) a file, (2) a class"
    assert first_line(ValueError("one\ntwo")) == "one"
    assert first_line(ValueError("x:\n" + "y" * 1000)).endswith("…")


# --------------------------------------------------------------------------- the file system refuses


def test_a_write_under_a_regular_file_names_the_path(tmp_path):
    (tmp_path / "blocker").write_text("a file\n")
    target = tmp_path / "blocker" / "run" / "config.yaml"
    with pytest.raises(StorageError) as error:
        atomic_write_text(target, "x")
    message = str(error.value)
    assert "blocker" in message and "is a file, not a folder" in message and "\n" not in message


def test_a_name_too_long_names_the_path(tmp_path):
    with pytest.raises(StorageError) as error:
        atomic_write_text(tmp_path / LONG_NAME, "x")
    assert "too long" in str(error.value) and str(tmp_path) in str(error.value)


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    """The temporary file is a link to /dev/full: the write fails with ENOSPC, as on a full disk."""
    target = tmp_path / "state.json"
    target.write_text("old\n")
    os.symlink("/dev/full", tmp_path / f".state.{os.getpid()}.tmp.json")
    with pytest.raises(StorageError) as error:
        atomic_write_text(target, "new\n")
    assert str(target) in str(error.value) and "disk is full" in str(error.value)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_full_disk_under_mlx_is_named_too(tmp_path):
    """MLX's own write error ("[write] Unable to write ...") carries no errno; it becomes the same line."""
    import mlx.core as mx

    target = tmp_path / "adapters.safetensors"
    os.symlink("/dev/full", tmp_path / f".adapters.{os.getpid()}.tmp.safetensors")
    with pytest.raises(StorageError) as error:
        atomic_save_safetensors(target, {"w": mx.zeros((1000,))})
    assert str(target) in str(error.value) and "disk is full" in str(error.value)
    assert not target.exists() and not any(tmp_path.iterdir())


@pytest.mark.parametrize("code, advice", [
    (errno.EROFS, "read-only"), (errno.EACCES, "permission denied"), (errno.EDQUOT, "quota"),
    (errno.EISDIR, "a folder is where a file should be"), (errno.EEXIST, "already exists"), (errno.EIO, "input/output"),
], ids=["EROFS", "EACCES", "EDQUOT", "EISDIR", "EEXIST", "EIO"])
def test_every_refusal_of_a_write_is_one_line_saying_what_to_do(code, advice, tmp_path, monkeypatch):
    """The rename that puts a file in place is refused (os-level fakes: root can write anywhere)."""
    target = tmp_path / "best.json"
    target.write_text("old\n")

    def refuse(source, destination):
        raise OSError(code, os.strerror(code), str(destination))

    monkeypatch.setattr("engine.files.os.replace", refuse)
    with pytest.raises(StorageError) as error:
        atomic_write_text(target, "new\n")
    message = str(error.value)
    assert message.startswith(f"{target}: cannot write: ") and advice in message and "\n" not in message
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["best.json"]


def fill_disk_at(monkeypatch, fragment: str) -> None:
    """From now on, MLX saves to a path holding ``fragment`` go to /dev/full (ENOSPC)."""
    import mlx.core as mx

    real = mx.save_safetensors

    def save(path, arrays, metadata=None):
        if fragment in path:
            os.symlink("/dev/full", path)
        return real(path, arrays, metadata=metadata)

    monkeypatch.setattr(mx, "save_safetensors", save)


def test_a_disk_full_mid_run_is_one_line_and_resume_works_after(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, iters=6, save_every=2, steps_per_eval=100, steps_per_report=2, val_batches=1)
    fill_disk_at(monkeypatch, "step-0000004")
    assert main(["train", str(config), "--quiet"]) == 2
    line = error_line(capsys.readouterr().err)
    run_dir = next((tmp_path / "runs").iterdir())
    assert "step-0000004" in line and "disk is full" in line and f"tuner train --resume {run_dir}" in line
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step-0000002"
    assert not [p for p in checkpoints.rglob(".*tmp*")]  # no temporary file left behind
    monkeypatch.undo()  # space freed
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert (checkpoints / "latest").read_text().strip() == "step-0000006"


def test_the_cache_under_a_file_names_it_and_tuner_cache(in_tmp, monkeypatch, capsys):
    (in_tmp / "blocker").write_text("a file\n")
    monkeypatch.setenv("TUNER_CACHE", str(in_tmp / "blocker" / "cache"))
    write_files(in_tmp, {"data/train.jsonl": jsonl(HELLO)})
    assert main(["inspect", "data", "--model", "builtin:tiny-llama", "--no-cache"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "blocker" in line and "TUNER_CACHE" in line


def test_a_cache_name_too_long_names_it(in_tmp, monkeypatch, capsys):
    monkeypatch.setenv("TUNER_CACHE", str(in_tmp / LONG_NAME))
    write_files(in_tmp, {"data/train.jsonl": jsonl(HELLO)})
    assert main(["inspect", "data", "--model", "builtin:tiny-llama", "--no-cache"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "too long" in line and "TUNER_CACHE" in line


def test_a_home_that_is_a_file_names_it_and_tuner_cache(in_tmp, monkeypatch, capsys):
    (in_tmp / "home").write_text("not a folder\n")
    monkeypatch.delenv("TUNER_CACHE")
    monkeypatch.setenv("HOME", str(in_tmp / "home"))
    write_files(in_tmp, {"data/train.jsonl": jsonl(HELLO)})
    assert main(["inspect", "data", "--model", "builtin:tiny-llama", "--no-cache"]) == 2
    line = error_line(capsys.readouterr().err)
    assert str(in_tmp / "home") in line and "TUNER_CACHE" in line


# --------------------------------------------------------------------------- the boundary


def test_a_bug_before_any_run_folder_is_one_line_exit_70_and_a_log_in_the_cache(in_tmp, monkeypatch, capsys):
    from engine.files import cache_root

    def broken(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr("engine.cli.cmd_validate", broken)
    assert main(["validate", "x.yaml"]) == EXIT_INTERNAL_ERROR
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert "internal error: ZeroDivisionError: division by zero" in stderr
    log = cache_root() / "crash.log"
    assert str(log) in stderr
    assert "Traceback" in log.read_text() and "second line" in log.read_text()


def test_a_bug_during_training_logs_to_the_run_folder(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, iters=4, steps_per_eval=2, val_batches=1)

    def broken(self, step):
        raise KeyError("surprise")

    monkeypatch.setattr("engine.training.evaluator.Evaluator.validate", broken)
    assert main(["train", str(config), "--quiet"]) == EXIT_INTERNAL_ERROR
    captured = capsys.readouterr()
    run_dir = next((tmp_path / "runs").iterdir())
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1
    assert str(run_dir / "crash.log") in captured.err
    assert "KeyError: 'surprise'" in (run_dir / "crash.log").read_text()
    assert "failed at step 0: KeyError" in captured.out  # the run's own record says so too


def test_the_boundary_holds_in_a_real_process(tmp_path):
    """A bug in a real ``tuner`` process: one stderr line, exit 70, no traceback."""
    code = ("import sys, engine.cli as cli\n"
            "def broken(args): raise RuntimeError('kaboom')\n"
            "cli.cmd_validate = broken\n"
            "sys.exit(cli.main(['validate', 'x.yaml']))\n")
    env = {**os.environ, "TUNER_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == EXIT_INTERNAL_ERROR, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"tuner: internal error: RuntimeError: kaboom (the details are in {tmp_path / 'cache' / 'crash.log'}; "
        "please report it)"]


def test_a_failed_event_prints_one_line():
    from engine import events as ev
    from engine.printer import failed_line

    assert failed_line(ev.RunFailed(step=3, error="ValueError: first\n  second\n")) == "failed at step 3: ValueError: first"


# --------------------------------------------------------------------------- generation limits


def test_samples_are_bounded_by_max_seq_length_with_a_notice(tmp_path, monkeypatch, capsys):
    asked = []

    def fake_stream(model, tokenizer, prompt, max_tokens):
        asked.append(max_tokens)
        for _ in range(min(max_tokens, 100)):
            yield SimpleNamespace(text="x")

    monkeypatch.setattr("engine.training.evaluator.stream_generate", fake_stream)
    config = write_config(tmp_path, iters=2, steps_per_eval=2, val_batches=1, samples_per_eval=1,
                          sample_max_tokens=1_000_000_000, max_seq_length=64)
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    assert asked and set(asked) == {64}
    assert out.count("samples stop at 64 tokens") == 1


# --------------------------------------------------------------------------- GGUF headers (16)


def _set(kind: str, key: str, value):
    """A GGUFWriter method stand-in that writes ``key`` as ``value`` with ``add_<kind>``."""
    return lambda writer, *_: getattr(writer, f"add_{kind}")(key, value)


GGUF_CASES = [
    ("head-count-zero", "add_head_count", _set("uint32", "llama.attention.head_count", 0),
     "llama.attention.head_count is 0"),
    ("block-count-a-string", "add_block_count", _set("string", "llama.block_count", "2"), "llama.block_count is '2'"),
    ("block-count-four-billion", "add_block_count", _set("uint32", "llama.block_count", 4_000_000_000),
     "llama.block_count is 4000000000"),
    ("block-count-more-than-the-tensors", "add_block_count", _set("uint32", "llama.block_count", 100_000),
     "100,000", "too few"),
    ("block-count-negative", "add_block_count", _set("int32", "llama.block_count", -2), "llama.block_count is -2"),
    ("context-length-a-bool", "add_context_length", _set("bool", "llama.context_length", True),
     "llama.context_length is True"),
    ("kv-heads-not-a-divisor", "add_head_count_kv", _set("uint32", "llama.attention.head_count_kv", 3),
     "not a multiple"),
    ("kv-heads-above-heads", "add_head_count_kv", _set("uint32", "llama.attention.head_count_kv", 64),
     "llama.attention.head_count_kv is 64"),
    ("rms-eps-nan", "add_layer_norm_rms_eps", _set("float32", "llama.attention.layer_norm_rms_epsilon", float("nan")),
     "layer_norm_rms_epsilon", "above 0"),
    ("rope-base-negative", "add_rope_freq_base", _set("float32", "llama.rope.freq_base", -1.0), "llama.rope.freq_base"),
    ("embedding-length-not-the-tensors", "add_embedding_length", _set("uint32", "llama.embedding_length", 32),
     "token_embd.weight has shape"),
    ("eos-id-past-the-vocabulary", "add_eos_token_id", _set("uint32", "tokenizer.ggml.eos_token_id", 10**6),
     "tokenizer.ggml.eos_token_id"),
    ("tokens-not-text", "add_token_list", _set("array", "tokenizer.ggml.tokens", list(range(300))),
     "tokenizer.ggml.tokens"),
    ("merges-not-pairs", "add_token_merges", _set("array", "tokenizer.ggml.merges", ["he"]), "tokenizer.ggml.merges"),
    ("more-token-types-than-tokens", "add_token_types", _set("array", "tokenizer.ggml.token_type", [1] * 5000),
     "tokenizer.ggml.token_type"),
]


@pytest.mark.parametrize("method, replacement, fragments",
                         [pytest.param(m, r, f, id=name) for name, m, r, *f in GGUF_CASES])
def test_bad_gguf_metadata_is_one_line_before_anything_is_allocated(method, replacement, fragments, in_tmp,
                                                                   monkeypatch, capsys):
    import gguf

    from .test_gguf import write_tiny_gguf

    with monkeypatch.context() as patch:
        patch.setattr(gguf.GGUFWriter, method, replacement)
        path = write_tiny_gguf(in_tmp / "bad.gguf")
    started = time.monotonic()
    assert main(["import-gguf", "bad.gguf", "out"]) == 2
    line = error_line(capsys.readouterr().err)
    assert str(path.name) in line
    for fragment in fragments:
        assert fragment in line, line
    assert time.monotonic() - started < 30 and not (in_tmp / "out").exists()


def _header(*kv: bytes, tensors: int = 0) -> bytes:
    import struct

    return b"GGUF" + struct.pack("<IQQ", 3, tensors, len(kv)) + b"".join(kv)


def _key(name: str) -> bytes:
    import struct

    return struct.pack("<Q", len(name)) + name.encode()


@pytest.mark.parametrize("data, fragment", [
    pytest.param(_header(b"\xff" * 8 + b"x"), "cut short", id="key-length-past-the-end"),
    pytest.param(_header(_key("a") + (9).to_bytes(4, "little") + (8).to_bytes(4, "little") + (2**62).to_bytes(8, "little")),
                 "cut short", id="array-of-2-to-the-62-strings"),
    pytest.param(_header(_key("a") + (9).to_bytes(4, "little") + ((9).to_bytes(4, "little") + (1).to_bytes(8, "little")) * 200_000),
                 "nested too deeply", id="arrays-nested-200000-deep"),
    pytest.param(_header(_key("a") + (99).to_bytes(4, "little")), "unknown metadata value type", id="unknown-type"),
])
def test_broken_gguf_headers_are_one_line(data, fragment, in_tmp, capsys):
    (in_tmp / "bad.gguf").write_bytes(data)
    assert main(["import-gguf", "bad.gguf", "out"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "bad.gguf" in line and fragment in line, line


def test_sigterm_during_an_endless_sample_stops_the_run_within_seconds(tmp_path, monkeypatch, capsys):
    """SIGTERM while a sample generates for ever: the evaluator sees the stop between tokens, and the
    run stops, saves and exits 130. The trainer hands the evaluator the run's Control; the shim below
    does the same here, for a trainer that does not (yet) pass ``stopping`` itself."""
    import signal

    import engine.launch.train_command
    import engine.training.trainer as trainer
    from engine.runs.control import Control
    from engine.training.evaluator import Evaluator

    controls = []

    def control_factory(*args, **kwargs):
        controls.append(Control(*args, **kwargs))
        return controls[-1]

    def evaluator_factory(*args, **kwargs):
        kwargs.setdefault("stopping", lambda: controls[-1].stopping)
        return Evaluator(*args, **kwargs)

    signalled, closed = [], []

    def endless(model, tokenizer, prompt, max_tokens):
        try:
            while True:
                if not signalled:
                    signalled.append(time.monotonic())
                    os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)
                yield SimpleNamespace(text="x")
        finally:
            closed.append(time.monotonic())

    monkeypatch.setattr(engine.launch.train_command, "Control", control_factory)
    monkeypatch.setattr(trainer, "Evaluator", evaluator_factory)
    monkeypatch.setattr("engine.training.evaluator.stream_generate", endless)
    config = write_config(tmp_path, iters=20, steps_per_eval=2, val_batches=1, samples_per_eval=1,
                          sample_max_tokens=1_000_000_000, max_seq_length=1_000_000)
    assert main(["train", str(config), "--quiet"]) == 130
    assert signalled and closed and closed[0] - signalled[0] < 2  # the generation ended within 2 s
    run_dir = next((tmp_path / "runs").iterdir())
    assert (run_dir / "checkpoints" / "latest").exists()  # stopped the way a stop between steps does


def test_sigterm_during_a_long_validation_stops_between_batches(tmp_path, monkeypatch):
    """A validation of many slow batches: after SIGTERM at most one more batch is scored, the cut-short
    pass reports nothing, and the run stops and exits 130 (same shim as the test above)."""
    import signal

    import engine.launch.train_command
    import engine.training.evaluator as evaluator_module
    import engine.training.trainer as trainer
    from engine.runs.control import Control

    controls, batches = [], []

    def control_factory(*args, **kwargs):
        controls.append(Control(*args, **kwargs))
        return controls[-1]

    def evaluator_factory(*args, **kwargs):
        kwargs.setdefault("stopping", lambda: controls[-1].stopping)
        return evaluator_module.Evaluator(*args, **kwargs)

    real_collate = evaluator_module.collate

    def slow_collate(*args, **kwargs):
        batches.append(time.monotonic())
        if len(batches) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        return real_collate(*args, **kwargs)

    monkeypatch.setattr(engine.launch.train_command, "Control", control_factory)
    monkeypatch.setattr(trainer, "Evaluator", evaluator_factory)
    monkeypatch.setattr(evaluator_module, "collate", slow_collate)
    config = write_config(tmp_path, iters=20, steps_per_eval=2, val_batches=-1, batch_size=1)
    assert main(["train", str(config)]) == 130
    assert len(batches) <= 3
    events = [json.loads(line) for line in next((tmp_path / "runs").iterdir()).joinpath("metrics.jsonl").open()]
    kinds = [e.get("event") for e in events]
    assert "run_started" in kinds and "eval" not in kinds


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_loading_ends_the_command_at_once(tmp_path, monkeypatch, capsys, signum):
    """Before a stage starts there is nothing to save: a stop request used to wait for loading and
    tokenising to finish (minutes on a large dataset), then train step 0 and save it."""
    import engine.training.trainer as trainer

    def slow_prepare(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(30)  # tokenising a large dataset
        raise AssertionError("the signal did not interrupt loading")

    monkeypatch.setattr(trainer, "prepare_stage", slow_prepare)
    config = write_config(tmp_path)
    started = time.monotonic()
    assert main(["train", str(config)]) == 130
    assert time.monotonic() - started < 5
    assert capsys.readouterr().err.strip().splitlines()[-1] == "tuner: interrupted; before training started"
    assert not (tmp_path / "runs").exists()
