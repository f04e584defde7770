"""The config schema: every key, its type, range, default and the one line of help about it.

Each key's ``description`` is the only text that explains it: the config screen shows it beside
the editor, ``tuner validate --explain`` prints it under the value, and the README's table of
keys is generated from it (``python -m engine.config.reference``; a test keeps the two equal).
Defaults are mlx-lm's wherever mlx-lm has the key. A default that the YAML value alone cannot
say (one computed from another key, or a place inside the run folder) is told in ``shown``.
"""

import difflib
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.config.errors import ValueAt
from engine.config.signatures import OPTIMIZERS, SCHEDULES, check_value, positional_problem
from engine.config.yaml_lines import show

# Strict so that YAML's own types count: "abc" is not an int, 0 is not false; ints still fit floats.
# .inf and .nan are YAML floats too, but no setting here means anything with them.
_SCHEMA = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def shown(text: str) -> dict:
    """``json_schema_extra`` for a default that its YAML value does not explain."""
    return {"shown_default": text}


def _all_or_positive(value: int) -> int:
    if value != -1 and value < 1:
        raise ValueError(f"expected -1 (all) or an integer >= 1, got {value}")
    return value


SEED_MAX = 2**32 - 1  # numpy's np.random.seed takes no more (MLX takes 64 bits)

# mlx-lm's convention for layer and batch counts: -1 means "all".
AllOrCount = Annotated[int, AfterValidator(_all_or_positive)]


def _adapter_keys(keys: list[str] | None) -> list[str] | None:
    """An empty list would train nothing (mlx-lm adapts no layer and steps on no weights)."""
    if keys is not None and not keys:
        raise ValueError("an empty list adapts no layer; list module paths such as self_attn.q_proj, "
                         "or leave keys unset for mlx-lm's choice")
    for index, key in enumerate(keys or ()):
        if not key.strip():
            raise ValueAt((index,), "an empty module path; write one such as self_attn.q_proj")
    return keys


def _path_text(value: str | None) -> str | None:
    """A path key's value: not empty (that names no place), and only characters a file name can hold."""
    if value is None:
        return None
    if not value.strip():
        raise ValueError(f"{show(value)} is an empty path; write a path, or leave the key unset")
    if "\0" in value:
        raise ValueError("contains a NUL character, which no path can hold")
    try:
        value.encode()
    except UnicodeEncodeError as e:
        raise ValueError(f"contains a lone surrogate ({value[e.start]!r}), which no path can hold") from None
    return value


PathText = Annotated[str, AfterValidator(_path_text)]
MAX_NAME_BYTES = 200  # a run folder name, with room for "-2" or "-more" under the usual 255-byte limit


def _answer_choices(choices: list[str] | None) -> list[str] | None:
    """Two or more distinct answers to score, or [] for none (no detection either)."""
    if choices is not None and len(choices) == 1:
        raise ValueError("names one answer; give two or more, or [] to turn choice accuracy off")
    if choices is not None and len({c.strip().casefold() for c in choices}) < len(choices):
        raise ValueError("names an answer twice (case and surrounding spaces are ignored)")
    return choices


def _run_name(name: str | None) -> str | None:
    """A run folder's name: one folder inside runs_dir, so no separators and not . or .."""
    if name is None:
        return None
    _path_text(name)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"{show(name)} is a path; a run name is one folder name inside runs_dir "
                         "(set runs_dir to choose where runs go)")
    if hidden := [ch for ch in name if not ch.isprintable()]:
        raise ValueError(f"contains an invisible or control character ({hidden[0]!r}); a run name is shown in "
                         "listings and typed in commands, so write it with visible characters")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"{len(name.encode())} bytes long; a run name has at most {MAX_NAME_BYTES}")
    return name


def _optimizer_config(config: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each optimizer's keyword arguments, checked against its signature (:mod:`engine.config.signatures`)."""
    for optimizer, arguments in config.items():
        if optimizer not in OPTIMIZERS:
            raise ValueAt((optimizer,), "unknown optimizer" + _did_you_mean(optimizer, OPTIMIZERS)
                          + f"; expected one of {', '.join(OPTIMIZERS)}")
        params = {name: kind for name, kind, _ in OPTIMIZERS[optimizer]}
        for name, value in arguments.items():
            if name == "learning_rate":
                raise ValueAt((optimizer, name), "set the top-level learning_rate (or lr_schedule) instead")
            if name not in params:
                raise ValueAt((optimizer, name), f"{optimizer} has no such argument" + _did_you_mean(name, params)
                              + f"; it takes {', '.join(params)}")
            if (problem := check_value(params[name], value)) is not None:
                raise ValueAt((optimizer, name), f"{problem}, got {show(value)}")
        if optimizer == "sgd" and arguments.get("nesterov") and (
            arguments.get("momentum", 0) <= 0 or arguments.get("dampening", 0) != 0
        ):
            raise ValueAt((optimizer, "nesterov"), "Nesterov momentum needs momentum > 0 and dampening 0")
    return config


def _did_you_mean(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class LoraParameters(BaseModel):
    model_config = _SCHEMA

    rank: int = Field(8, ge=1, description="Adapter size: the inner dimension of each low-rank update.")
    scale: float = Field(20.0, gt=0, description="mlx-lm's multiplier of the update, NOT PEFT's alpha: scale = alpha / rank.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input (below 1).")
    keys: Annotated[list[str] | None, AfterValidator(_adapter_keys)] = Field(
        None, description="Module paths to adapt, e.g. self_attn.q_proj; unset: mlx-lm's choice for the model."
    )


class LRSchedule(BaseModel):
    model_config = _SCHEMA

    name: str = Field(description="An mlx.optimizers.schedulers function, e.g. cosine_decay.")
    arguments: list[Any] = Field(description="Its arguments, in order; the first is the peak learning rate.")
    warmup: int = Field(0, ge=0, description="Optimizer updates of linear warmup before the schedule.")
    warmup_init: float = Field(0.0, ge=0, description="Learning rate the warmup starts from.")

    @field_validator("name")
    @classmethod
    def _known_schedule(cls, name: str) -> str:
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(sorted(SCHEDULES))}")
        return name

    @model_validator(mode="after")
    def _arguments_fit(self) -> "LRSchedule":
        """The arguments as ``mlx.optimizers.schedulers.<name>(*arguments)`` takes them."""
        if (problem := positional_problem(self.name, self.arguments)) is not None:
            index, message = problem
            raise ValueAt(("arguments",) if index is None else ("arguments", index), message)
        return self


class HFDataset(BaseModel):
    """One ``hf_dataset`` entry; mlx-tuning-fork's ``name`` is accepted as a spelling of ``path``."""

    model_config = _SCHEMA

    path: str = Field(description="The Hugging Face dataset id (name is accepted as another spelling).")
    train_split: str = Field("train[:80%]", description="The split expression to train on.")
    valid_split: str = Field("train[-10%:]", description="The split expression to validate on.")
    test_split: str | None = Field(None, description="The split expression to test on; unset: none.")
    prompt_feature: str | None = Field(None, description="This dataset's prompt column; unset: the config's.")
    completion_feature: str | None = Field(None, description="This dataset's completion column; unset: the config's.")
    text_feature: str | None = Field(None, description="This dataset's text column; unset: the config's.")
    chat_feature: str | None = Field(None, description="This dataset's chat column; unset: the config's.")
    system_feature: str | None = Field(None, description="This dataset's system-prompt column; unset: the config's.")
    config: dict[str, Any] = Field({}, description="Keyword arguments for datasets.load_dataset.")

    @model_validator(mode="before")
    @classmethod
    def _name_means_path(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # pydantic reports the wrong type
        if "name" in data and "path" in data:
            raise ValueError("set path or name, not both")
        if "name" not in data and "path" not in data:
            raise ValueError("needs path (or name): the Hugging Face dataset id")
        return {("path" if key == "name" else key): value for key, value in data.items()}


COMPATIBILITY = "Accepted for mlx-lm compatibility"
ON_CPU = "On the CPU backend"
SAME_VALUES = "same values to float32 rounding"


class TrainConfig(BaseModel):
    """One fully resolved training stage.

    Longer than a class should be because it is the list of every key a config may set.
    """

    model_config = _SCHEMA

    # what to train on
    model: PathText = Field(description="Base model: a local mlx-lm folder, a Hugging Face id, a .gguf file (imported once "
                       "into the cache), builtin:tiny-llama (the offline demo model) or builtin:smollm2-135m.")
    data: PathText | None = Field(None, description="A folder with train/valid/test .jsonl, .json, .csv or .parquet files, "
                             "one such file (a validation share is held out of it), or a Hugging Face dataset id.")
    hf_dataset: list[HFDataset] | None = Field(None, description="Hugging Face datasets to mix (mlx-lm, "
                                               "mlx-tuning-fork): a list of entries with the keys below.")
    prompt_feature: str = Field("prompt", description="Column holding the prompt of prompt/completion records.")
    completion_feature: str = Field("completion", description="Column holding the completion of prompt/completion records.")
    text_feature: str = Field("text", description="Column holding plain text (every token is trained).")
    chat_feature: str = Field("messages", description="Column holding a chat: a list of {role, content} messages.")
    system_feature: str = Field("system", description="Column holding a record's system prompt (any format but "
                                "text), put first in its chat.")
    valid_fraction: float = Field(0.05, ge=0, le=0.5, description="Share held out for validation when the data has "
                                  "no valid split.")
    mask_prompt: bool = Field(False, description="mlx-lm's switch: true means prompt_loss_weight 0, false means 1. "
                              "An explicit prompt_loss_weight wins.")
    prompt_loss_weight: float | None = Field(
        None, ge=0, le=1, json_schema_extra=shown("from mask_prompt"),
        description="PLW, from 0 to 1: the weight of prompt tokens in the loss (completion tokens weigh 1). 0 masks "
        "the prompt; 0.01-0.1 helped short-completion data in published experiments.",
    )

    # how to adapt it
    fine_tune_type: Literal["lora", "dora", "full"] = Field("lora", description="lora (low-rank adapters), dora "
                                                            "(weight-decomposed LoRA) or full (train the top blocks' weights).")
    num_layers: AllOrCount = Field(16, description="How many transformer blocks, counted from the top, are trained; "
                                   "-1 for all.")
    lora_parameters: LoraParameters = Field(
        default_factory=LoraParameters, description="The adapters' shape: rank, scale, dropout, keys (below). "
        "scale is mlx-lm's multiplier, NOT alpha: scale = alpha / rank.",
    )

    # how long and how fast
    iters: int | None = Field(None, ge=1, json_schema_extra=shown("1000 (without epochs)"),
                              description="Training length in steps; one step is one batch.")
    epochs: float | None = Field(None, gt=0, description="Training length in passes over the training set, rounded "
                                 "up to whole steps (the last partial batch of an epoch is trained).")
    batch_size: int = Field(4, ge=1, description="Examples per step, grouped by similar token length.")
    grad_accumulation_steps: int = Field(1, ge=1, description="Steps per optimizer update; schedules count updates, "
                                         "not steps.")
    max_seq_length: int = Field(2048, ge=2, description="Tokens kept per example; longer ones are truncated and "
                                "counted, and examples left with no completion token are dropped and listed.")
    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate (used as is when there is no lr_schedule).")
    lr_schedule: LRSchedule | None = Field(None, description="A learning-rate schedule in optimizer updates: the keys "
                                           "below.")
    optimizer: Literal["adam", "adamw", "muon", "sgd", "adafactor"] = Field(
        "adam", description="adam, adamw, muon, sgd or adafactor.")
    optimizer_config: Annotated[dict[str, dict[str, Any]], AfterValidator(_optimizer_config)] = Field({}, description="Keyword arguments per optimizer, e.g. "
                                                        "{adamw: {weight_decay: 0.01}}.")
    max_grad_norm: float | None = Field(None, gt=0, description="Clip the gradient's global norm to this value "
                                        "before each update.")
    skip_nonfinite_batches: int = Field(0, ge=0, description="A NaN/inf loss or gradient stops the run as diverged "
                                        "(weights untouched); allow this many skipped batches first.")
    early_stopping_patience: int | None = Field(None, ge=1, description="Stop after this many evaluations without a "
                                                "better best_metric (validation completion loss by default); "
                                                "needs validation.")
    memory_limit_percent: float = Field(95.0, gt=0, le=100, description="System memory use (%, checked about once a "
                                        "second) at which the run checkpoints, then pauses (app) or stops (headless).")
    swap_growth_gb: float = Field(2.0, gt=0, description="Swap growth (GB) during the run that checkpoints, then "
                                  "pauses or stops it, before the machine stalls.")
    compute_dtype: Literal["auto", "model", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: float32 on the CPU (the only fast dtype there; quantized layers are dequantized), "
        "the model as stored on a GPU (Metal or CUDA); model: the stored dtype and quantization on any device (a "
        "4-bit model trains as QLoRA); or float32, bfloat16, float16.")
    compute_plan: Literal["auto", "gpu"] = Field(
        "auto", description="auto: the CPU levers (fast_silu, fast_attention, fast_lora, cpu_streams) apply on the "
        "CPU backend only; gpu: off on every device, so the CPU computes what Metal and CUDA do (with compute_dtype: "
        "model, to check the GPU path on a machine without one).")
    grad_checkpoint: bool = Field(False, description="Recompute activations in the backward pass: less memory, about "
                                  "a third slower. Not exact with LoRA dropout: the recomputation draws new "
                                  "dropout masks.")
    sparse_logits: bool = Field(True, description="Compute output logits only where the loss has weight (at PLW 0: "
                                "completion tokens), a vocabulary chunk at a time, and, at PLW 0, the last block's "
                                "queries and MLP only there when that is at most half the positions: same loss, less "
                                "time and memory. false: every position, as mlx-lm.")
    fast_silu: bool = Field(True, description=f"{ON_CPU}, the MLP's SiLU from a polynomial exponential (MLX's CPU exp "
                            f"is scalar on x86): {SAME_VALUES}, several times faster. No effect on a GPU (Metal, CUDA) or with compute_plan: gpu.")
    fast_attention: bool = Field(True, description=f"{ON_CPU}, attention's softmax from a polynomial exponential "
                                 f"(MLX's CPU exp is scalar on x86): {SAME_VALUES}. No effect on a GPU (Metal, CUDA) or with compute_plan: gpu.")
    fast_lora: bool = Field(True, description=f"{ON_CPU}, float32 LoRA layers without dropout add their low-rank "
                            "update inside the matmul (mx.addmm) and compute their gradient in fewer passes: "
                            f"{SAME_VALUES}, same adapter files. No effect on a GPU (Metal, CUDA) or with compute_plan: gpu.")
    shared_prefix: bool = Field(True, description="Compute the tokens that open every training example (a chat "
                                "template's system message, a repeated instruction) once per batch instead of once "
                                "per example, where the model has the Llama form (plain causal attention, no sliding "
                                "windows): same loss and gradients to float32 rounding. Needs sparse_logits; not with "
                                "dropout, grad_checkpoint or several ranks.")
    cpu_streams: int = Field(2, ge=1, le=64, description=f"{ON_CPU} with OpenBLAS, split each batch's rows over this "
                             "many MLX streams, the BLAS threads shared out among them, so MLX's one-thread "
                             "element-wise work runs on every core: same loss and gradients to float32 rounding. 1: "
                             "no split. Batches whose rows do not split evenly, and data-parallel runs, run whole.")
    clear_cache_threshold: int = Field(0, ge=0, description=f"{COMPATIBILITY}; has no effect.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seeds data order, dropout and LoRA initialisation.")

    # reporting, evaluation and saving
    steps_per_report: int = Field(10, ge=1, description="Steps between training reports.")
    steps_per_eval: int = Field(200, ge=1, description="Steps between validations (evals_per_epoch wins when set).")
    evals_per_epoch: int | None = Field(None, ge=1, description="Validations per epoch: every (steps per epoch // "
                                        "this) steps, at least 1, with epochs or iters; wins over steps_per_eval.")
    val_batches: int = Field(25, ge=-1, description="Validation batches per evaluation; -1 for the whole split, 0 for "
                             "no validation at all.")
    samples_per_eval: int = Field(0, ge=0, description="Validation prompts to answer greedily at each evaluation.")
    sample_max_tokens: int = Field(48, ge=1, description="Longest generated sample, in tokens.")
    answer_choices: Annotated[list[str] | None, AfterValidator(_answer_choices)] = Field(
        None, description="The answers a completion is one of (e.g. [A, B, C, D]): each evaluation scores them by "
        "log-probability (choice accuracy); unset: detected from the validation completions; [] for none.")
    eval_generations: int = Field(0, ge=0, description="Validation examples answered greedily at each evaluation "
                                  "for exact match (whitespace and case normalised); 0 for none.")
    best_metric: Literal["completion_loss", "answer_accuracy", "choice_accuracy", "exact_match"] = Field(
        "completion_loss", description="What picks the best checkpoint and counts for early stopping: validation "
        "completion_loss (lower is better) or an answer metric (higher is better).")
    save_every: int = Field(100, ge=1, description="Steps between checkpoints.")
    test: bool = Field(False, description="Evaluate on the test split after training.")
    test_batches: AllOrCount = Field(500, description="Test batches; -1 for the whole split.")
    name: Annotated[str | None, AfterValidator(_run_name)] = Field(None, json_schema_extra=shown("config name and time"),
                             description="Run folder name under runs_dir.")
    runs_dir: PathText = Field("runs", description="Folder holding one folder per run.")
    adapter_path: PathText | None = Field(None, json_schema_extra=shown("run folder's adapters/"),
                                     description="Where adapters are written.")
    resume_adapter_file: PathText | None = Field(None, description="Start from these weights (later stages start from "
                                            "the previous stage's adapters).")
    fuse: bool = Field(False, description="After training, also write the base model with the adapters fused in.")
    report_to: str | None = Field(None, description=f"{COMPATIBILITY}; tuner writes metrics.jsonl instead.")
    project_name: str | None = Field(None, description=f"{COMPATIBILITY}.")
    trust_remote_code: bool = Field(False, description="Allow a model's own Python code from the Hugging Face hub.")
    train: bool = Field(True, description="false: no training; evaluate the model (with the adapters of "
                        "resume_adapter_file, else adapter_path, if set) on the valid and test splits and "
                        "report, as mlx-lm's --test without --train. Only a chain's last stage.")

    # accepted so mlx-lm files load unchanged; they mean nothing here
    config: str | None = Field(None, description=f"{COMPATIBILITY}.")
    training_mode: Literal["normal"] = Field("normal", description=f"{COMPATIBILITY} (only normal).")

    @field_validator("hf_dataset", mode="before")
    @classmethod
    def _one_dataset_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="before")
    @classmethod
    def _iters_or_epochs(cls, data: Any) -> Any:
        """Training length is iters or epochs; with neither, mlx-lm's 1000 iterations."""
        if not isinstance(data, dict):
            return data
        if data.get("iters") is not None and data.get("epochs") is not None:
            raise ValueError("set iters or epochs, not both")
        if data.get("iters") is None and data.get("epochs") is None:
            return {**data, "iters": 1000}
        return data

    @property
    def plw(self) -> float:
        """The prompt-loss weight actually used: explicit if set, else 0 with mask_prompt and 1 without."""
        if self.prompt_loss_weight is not None:
            return self.prompt_loss_weight
        return 0.0 if self.mask_prompt else 1.0


def config_to_dict(config: TrainConfig) -> dict:
    """Plain JSON-able dict of the resolved config, with the prompt-loss weight resolved.

    Written as the run folder's config.yaml, it loads back to the same config.
    """
    data = config.model_dump(mode="json")
    data["prompt_loss_weight"] = config.plw
    return data


def submodel(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation such as ``list[HFDataset] | None``."""
    if isinstance(annotation, type) and not get_args(annotation) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(submodel, get_args(annotation))), None)


def model_at(path) -> type[BaseModel] | None:
    """The model of the mapping at key ``path`` (list indices skipped), e.g. ``("lora_parameters",)``
    -> LoraParameters; None where the path leaves the schema."""
    model: type[BaseModel] | None = TrainConfig
    for part in path:
        if not isinstance(part, str):
            continue
        field = model.model_fields.get(part)
        model = submodel(field.annotation) if field is not None else None
        if model is None:
            return None
    return model
