"""Answer-level evaluation: answer-token accuracy, multiple-choice accuracy, exact match, and
``best_metric``, each checked against an independent computation (the chat template rendered and
searched by hand, numpy, mlx-lm's model called directly)."""

import json
import math
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from engine import events as ev
from engine.config import load_stages
from engine.data.records import parse_record
from engine.data.tokenize import hf_tokenizer, tokenize_split
from engine.loss import EvalTotals, eval_sums
from engine.printer import eval_line
from engine.roles import ANSWER, COMPLETION, PAD, PROMPT
from engine.runs.metrics import read_events
from engine.training.answers import ChoiceSet, ExactCheck, choice_scores, detect_choices, normalise
from engine.training.chain import run_chain

from .conftest import REPO, write_config

CHOICES = ["A", "B", "C", "D"]
RAW = [
    {"prompt": "What is 2+2? A) 3 B) 4", "completion": " B"},  # a leading space is a different token
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "Hello there"}, {"role": "user", "content": "more"},
                  {"role": "assistant", "content": "Sure, ok."}]},
    {"instruction": "Name a colour", "input": "", "output": "red\n"},
    {"text": "plain words only"},
]


def content_mask(tokenizer, raw_record) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Independently: render with ``apply_chat_template``, find each assistant content by plain
    string search, and map character spans to tokens with the tokenizer's offsets."""
    tok = hf_tokenizer(tokenizer)
    record = parse_record(raw_record, "t:1")
    if record.messages is None:
        ids = tok(record.text)["input_ids"]
        return np.asarray(ids), np.zeros(len(ids) + 1, dtype=bool), []
    text = tok.apply_chat_template(list(record.messages), tokenize=False)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    mask, cursor, contents = np.zeros(len(enc["input_ids"]), dtype=bool), 0, []
    for message in record.messages:
        if message["role"] != "assistant":
            cursor = text.index(message["content"], cursor) + len(message["content"])
            continue
        start = text.index(message["content"], cursor)
        end = cursor = start + len(message["content"])
        contents.append(message["content"])
        for i, (a, b) in enumerate(enc["offset_mapping"]):
            mask[i] |= a < end and b > start
    return np.asarray(enc["input_ids"]), mask, contents


def test_the_answer_mask_is_the_assistants_content_without_the_template(demo_tokenizer):
    records = [parse_record(raw, f"t:{i}") for i, raw in enumerate(RAW)]
    examples = tokenize_split(demo_tokenizer, records, 512).examples
    tok = hf_tokenizer(demo_tokenizer)
    for raw, example in zip(RAW, examples):
        ids, mask, contents = content_mask(demo_tokenizer, raw)
        if not contents:  # plain text: all completion, no answer
            assert not example.answer.any() and example.answer_tokens == 0
            continue
        assert np.array_equal(example.ids, ids)
        assert np.array_equal(example.answer, mask)
        assert not (example.answer & (example.roles != COMPLETION)).any()
        assert tok.decode(example.ids[example.answer]) == "".join(contents)
        # the markup around each answer stays completion but is not answer
        markup = example.ids[(example.roles == COMPLETION) & ~example.answer]
        assert tok.convert_tokens_to_ids("<|im_end|>") in markup.tolist()
        assert "<|im_end|>" not in tok.decode(example.ids[example.answer])


def test_answer_sums_equal_a_numpy_recomputation():
    rng = np.random.default_rng(0)
    batch, length, vocab = 3, 12, 7
    ids = rng.integers(0, vocab, (batch, length)).astype(np.int32)
    roles = rng.choice([PAD, PROMPT, COMPLETION, ANSWER], (batch, length)).astype(np.int8)
    logits = rng.normal(size=(batch, length - 1, vocab)).astype(np.float32)
    logits[0, :, :] = 0
    logits[0, np.arange(length - 1), ids[0, 1:]] = 5  # row 0 predicts every token right

    class Fixed:
        def __call__(self, x):
            return mx.array(logits)

    totals = EvalTotals()
    totals.add(eval_sums(Fixed(), mx.array(ids), mx.array(roles)), batch)
    hits = logits.argmax(-1) == ids[:, 1:]
    answer = roles[:, 1:] == ANSWER
    completion = answer | (roles[:, 1:] == COMPLETION)
    assert totals.answer_tokens == answer.sum()
    assert totals.answer_accuracy == pytest.approx(hits[answer].mean())
    assert totals.completion_tokens == completion.sum()  # answers stay completion tokens
    assert totals.completion_accuracy == pytest.approx(hits[completion].mean())


def test_choices_are_detected_only_for_a_few_short_repeated_answers():
    def records(answers):
        return [parse_record({"prompt": f"q{i}", "completion": a}, f"v:{i}") for i, a in enumerate(answers)]

    assert detect_choices(records(["A", " B", "b", "C", "a", "C"])) == ("A", "B", "C")  # first spelling
    assert detect_choices(records(["one", "two", "three"])) is None  # each seen once: free-form
    assert detect_choices(records(["x" * 40] * 4 + ["y"] * 4)) is None  # too long to be a choice
    assert detect_choices(records(["same"] * 6)) is None


def test_exact_match_normalises_and_stops_once_it_cannot_match(demo_tokenizer):
    check = ExactCheck(demo_tokenizer, "  New   York ")
    assert normalise("  New \n York ") == "new york"
    assert not check.done("new") and not check.done("NEW  Yo")
    assert check.done("Newark")  # no later token can make it match
    assert check.done("new york<|im_end|>") and check.matches("new york<|im_end|>\n")
    assert not check.matches("new york city")


def letters_data(folder):
    """A four-way choice task the demo model learns in a few steps: the prompt names the letter."""
    folder.mkdir()
    for split, count in (("train", 48), ("valid", 16)):
        rows = [{"prompt": f"Item {i}: the answer is {CHOICES[i * 7 % 11 % 4]}. Which letter, A, B, C or D?",
                 "completion": CHOICES[i * 7 % 11 % 4]}
                for i in range(count)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def letters_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("letters")
    config = write_config(folder, data=str(letters_data(folder / "data")), iters=24, steps_per_eval=8,
                          val_batches=2, eval_generations=3, best_metric="choice_accuracy",
                          answer_choices=CHOICES, save_every=1000)
    seen = []
    result = run_chain(load_stages([config]), seen.append)[-1]
    return result, seen


def test_every_validation_reports_the_answer_measures(letters_run):
    result, seen = letters_run
    reports = [e for e in seen if isinstance(e, ev.EvalReport)]
    assert [r.step for r in reports] == [0, 8, 16, 24]
    for report in reports:
        assert report.answer_tokens == 16  # one letter each; the markup is not counted
        assert report.completion_tokens == 48  # letter, <|im_end|> and newline
        assert 0 <= report.answer_accuracy <= 1 and 0 <= report.choice_accuracy <= 1
        assert report.generations == 3 and report.exact_match == report.exact_matches / 3
        line = eval_line(report)
        assert f"answer acc {100 * report.answer_accuracy:.1f}%" in line
        assert f"choice acc {100 * report.choice_accuracy:.1f}%" in line and f"exact {report.exact_matches}/3" in line
    written = [e for e in read_events(result.run_dir) if isinstance(e, ev.EvalReport)]
    assert written == reports
    assert any("choice accuracy over A, B, C, D" in e.message for e in seen if isinstance(e, ev.Notice))


def test_an_old_eval_line_still_loads_and_prints_without_answer_measures():
    old = {"event": "eval", "step": 3, "split": "valid", "prompt_loss": 1.0, "completion_loss": 2.0, "full_loss": 1.5,
           "weighted_loss": 2.0, "completion_accuracy": 0.5, "completion_perplexity": 7.4, "prompt_tokens": 10,
           "completion_tokens": 4, "examples": 2, "seconds": 0.1, "time": 0.0}
    report = ev.event_from_dict(old)
    assert math.isnan(report.answer_accuracy) and report.answer_tokens == 0 and math.isnan(report.exact_match)
    line = eval_line(report)
    assert "answer acc" not in line and "choice acc" not in line and "exact" not in line
    again = ev.event_from_dict(json.loads(json.dumps(report.to_dict())))
    assert math.isnan(again.answer_accuracy) and again.to_dict() == report.to_dict()


def final_model(result, demo_model_dir):
    from mlx_lm import load

    model, tokenizer = load(str(demo_model_dir), adapter_path=str(result.adapter_dir))
    model.eval()
    return model, tokenizer


def test_answer_and_choice_accuracy_agree_with_mlx_lm_called_directly(letters_run, demo_model_dir):
    result, seen = letters_run
    last = [e for e in seen if isinstance(e, ev.EvalReport)][-1]
    model, tokenizer = final_model(result, demo_model_dir)
    tok = hf_tokenizer(tokenizer)
    rows = [json.loads(line) for line in (result.run_dir.parent.parent / "data" / "valid.jsonl").read_text().splitlines()]
    hits = right = 0
    for row in rows:
        messages = [{"role": "user", "content": row["prompt"]}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        scores = []
        for choice in CHOICES:
            ids = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": choice}])
            logp = np.array(nn_log_softmax(model(mx.array(ids)[None])[0]))
            n = len(tok.encode(choice, add_special_tokens=False))
            positions = range(len(prompt), len(prompt) + n)
            scores.append(sum(logp[p - 1, ids[p]] for p in positions))
            if choice == row["completion"]:
                hits += sum(int(logp[p - 1].argmax() == ids[p]) for p in positions)
        right += CHOICES[int(np.argmax(scores))] == row["completion"]
    assert last.answer_accuracy == pytest.approx(hits / len(rows), abs=1e-9)
    assert last.choice_accuracy == pytest.approx(right / len(rows), abs=1e-9)
    # the KV-cached scores themselves match the direct ones
    records = [parse_record(row, f"v:{i}") for i, row in enumerate(rows[:2])]
    scored = ChoiceSet(tokenizer, records, tuple(CHOICES), 256).items[0][0]
    direct = []
    for choice in CHOICES:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": rows[0]["prompt"]},
                                       {"role": "assistant", "content": choice}])
        logp = np.array(nn_log_softmax(model(mx.array(ids)[None])[0]))
        at = len(tokenizer.apply_chat_template([{"role": "user", "content": rows[0]["prompt"]}], add_generation_prompt=True))
        direct.append(logp[at - 1, ids[at]])
    assert choice_scores(model, scored) == pytest.approx(direct, abs=1e-4)


def nn_log_softmax(logits):
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def test_exact_match_agrees_with_mlx_lm_generate(letters_run, demo_model_dir):
    from mlx_lm import generate

    result, seen = letters_run
    last = [e for e in seen if isinstance(e, ev.EvalReport)][-1]
    model, tokenizer = final_model(result, demo_model_dir)
    rows = [json.loads(line) for line in (result.run_dir.parent.parent / "data" / "valid.jsonl").read_text().splitlines()]
    matches = 0
    for row in rows[:3]:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}], add_generation_prompt=True)
        text = generate(model, tokenizer, prompt, max_tokens=8)
        matches += normalise(text.split("<|im_end|>")[0]) == normalise(row["completion"])
    assert last.exact_matches == matches


def test_the_best_checkpoint_follows_best_metric(letters_run):
    result, seen = letters_run
    reports = [e for e in seen if isinstance(e, ev.EvalReport)]
    best = max(reports, key=lambda r: (r.choice_accuracy, -r.step))  # the first of the highest
    saved = json.loads((result.run_dir / "checkpoints" / "best.json").read_text())
    assert saved["step"] == best.step and saved["metric"] == "choice_accuracy" and saved["value"] == pytest.approx(best.choice_accuracy)
    lowest_loss = min(reports, key=lambda r: r.completion_loss)
    assert lowest_loss.step != best.step  # so the completion loss did not pick it


@pytest.mark.parametrize(("keys", "fragment"), [
    ({"best_metric": "exact_match"}, "exact_match needs eval_generations"),
    ({"best_metric": "choice_accuracy"}, "choice_accuracy needs answer_choices"),
    ({"best_metric": "answer_accuracy", "val_batches": 0}, "val_batches is 0"),
])
def test_a_best_metric_that_is_not_measured_is_refused_in_one_line(tmp_path, keys, fragment):
    config = write_config(tmp_path, **keys)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "validate", str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(config) in lines[0] and "best_metric" in lines[0] and fragment in lines[0]


def test_early_stopping_counts_evaluations_without_a_better_answer_accuracy(tmp_path):
    config = write_config(tmp_path, data=str(letters_data(tmp_path / "data")), iters=64, steps_per_eval=8,
                          val_batches=2, best_metric="answer_accuracy", early_stopping_patience=1, save_every=1000)
    seen = []
    result = run_chain(load_stages([config]), seen.append)[-1]
    reports = [e for e in seen if isinstance(e, ev.EvalReport)]
    best = max(reports, key=lambda r: (r.answer_accuracy, -r.step))
    assert result.status == "early_stopped" and result.step == reports[-1].step < 64
    assert reports[-1].answer_accuracy <= best.answer_accuracy  # one evaluation without a better one
    finished = seen[-1]
    assert f"no better validation answer accuracy in 1 evaluations; best {best.answer_accuracy:.4f} " \
           f"at step {best.step}" in finished.message


def test_a_template_that_trims_the_answer_still_finds_it():
    from engine.data.tokenize import answer_spans

    record = parse_record({"prompt": "Capital of France?", "completion": "  Paris \n"}, "t:1")
    full = "<user>Capital of France?</user><bot>Paris</bot>"
    start = full.index("Paris")
    assert answer_spans(full, record, [(start, len(full))]) == [(start, start + len("Paris"))]
    assert answer_spans(full, record, [(0, start)]) == []  # not inside its turn: no answer


@pytest.mark.parametrize(("choices", "fragment"), [(["A"], "names one answer"), (["A", " a"], "names an answer twice")])
def test_answer_choices_that_cannot_be_scored_are_refused(tmp_path, choices, fragment):
    config = write_config(tmp_path, answer_choices=choices)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "validate", str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "answer_choices" in lines[0] and fragment in lines[0]


def test_empty_answer_choices_turn_detection_off(tmp_path):
    config = write_config(tmp_path, data=str(letters_data(tmp_path / "data")), iters=1, steps_per_eval=1,
                          val_batches=1, answer_choices=[])
    seen = []
    run_chain(load_stages([config]), seen.append)
    reports = [e for e in seen if isinstance(e, ev.EvalReport)]
    assert reports and all(math.isnan(r.choice_accuracy) and r.answer_tokens > 0 for r in reports)
    assert not any("choice accuracy" in e.message for e in seen if isinstance(e, ev.Notice))


def test_choices_are_detected_from_the_validation_answers(tmp_path):
    config = write_config(tmp_path, data=str(letters_data(tmp_path / "data")), iters=1, steps_per_eval=1,
                          val_batches=2)
    seen = []
    run_chain(load_stages([config]), seen.append)
    notes = [e.message for e in seen if isinstance(e, ev.Notice) and "choice accuracy" in e.message]
    assert notes == ["choice accuracy over A, B, C, D (detected from the validation completions; answer_choices "
                     "names them): 16 validation example(s) scored by log-probability"]
    assert all(0 <= r.choice_accuracy <= 1 for r in seen if isinstance(r, ev.EvalReport))


def test_best_json_names_the_metric_it_holds(tmp_path):
    """best.json said "completion_loss" whatever best_metric measured; it names it now, and an old
    file (completion loss only) still reads."""
    from engine.runs.checkpoints import BEST, Checkpoints

    checkpoints = Checkpoints(tmp_path)
    checkpoints.root.mkdir(parents=True, exist_ok=True)
    checkpoints.mark_best((0.75, 0), None, "choice_accuracy")
    saved = json.loads((checkpoints.root / BEST).read_text())
    assert saved["metric"] == "choice_accuracy" and saved["value"] == 0.75 and "completion_loss" not in saved
    best = checkpoints.best()
    assert (best.metric, best.value, best.step) == ("choice_accuracy", 0.75, 0)
    (checkpoints.root / BEST).write_text(json.dumps({"step": 0, "completion_loss": 1.25, "checkpoint": None}))
    best = checkpoints.best()
    assert (best.metric, best.value) == ("completion_loss", 1.25)
