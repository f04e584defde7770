"""Training configs: YAML stages in, one validated and provenance-tracked ``TrainConfig`` per stage out.

Real mlx-lm ``lora`` YAML files load unchanged; on top of them we add a few keys of our own
(prompt-loss weight, run name, gradient clipping, ...). A chain of files is a chain of
*stages*: each stage inherits what the previous one resolved unless it sets the key itself,
so a second file only has to say what changes. Every key remembers where its value came from,
because "why is the learning rate 2e-4?" should have a one-glance answer in ``tuner validate``,
and every mistake is reported as one line naming file, line and key.
"""

import copy
import difflib
import functools
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import UserError

# --------------------------------------------------------------------------- errors and provenance


def _locate(file: str | None, line: int | None, key: str | None) -> str:
    """``file:line: key`` with the missing parts left out (a line without a file means nothing)."""
    place = file if file is None or line is None else f"{file}:{line}"
    return ": ".join(part for part in (place, key) if part)


class ConfigError(UserError):
    """A config mistake, pinned to the file, line and key where the user can fix it.

    ``str()`` is always one line, so the CLI and the TUI status bar can show it as is.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None, key: str | None = None):
        self.message = re.sub(r"\s*\n\s*", " ", str(message)).strip()
        self.file, self.line, self.key = file, line, key
        prefix = _locate(file, line, key)
        super().__init__(f"{prefix}: {self.message}" if prefix else self.message)


@dataclass(frozen=True)
class Source:
    """Where a value came from, so ``tuner validate`` can explain every number it shows.

    ``stage`` means inherited from an earlier file of the chain (``note`` says which stage);
    ``derived`` means computed from another key (``note`` says which, file/line say where that was set).
    """

    kind: Literal["default", "file", "stage", "override", "derived"]
    file: str | None = None
    line: int | None = None
    note: str | None = None

    def __str__(self) -> str:
        if self.kind == "default":
            return f"default ({self.note})" if self.note else "default"
        if self.kind == "override":
            return "--set"
        place = _locate(self.file, self.line, None)
        return place if self.kind == "file" else f"{self.note} ({place})"


# --------------------------------------------------------------------------- the schema


# Strict so that YAML's own types count: "abc" is not an int, 0 is not false; ints still fit floats.
# .inf and .nan are YAML floats too, but no setting here means anything with them.
_SCHEMA = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _all_or_positive(value: int) -> int:
    if value != -1 and value < 1:
        raise ValueError(f"expected -1 (all) or an integer >= 1, got {value}")
    return value


# mlx-lm's convention for layer and batch counts: -1 means "all".
AllOrCount = Annotated[int, AfterValidator(_all_or_positive)]


@functools.cache
def _schedule_names() -> tuple[str, ...]:
    """The schedules mlx-lm's ``build_schedule`` can make from YAML: functions of mlx.optimizers.schedulers.

    ``join_schedules`` is left out: it takes other schedules as arguments, which YAML cannot express.
    Imported lazily so that reading a config does not pay for importing mlx unless a schedule is set.
    """
    from mlx.optimizers import schedulers

    return tuple(
        sorted(
            name
            for name, obj in vars(schedulers).items()
            if inspect.isfunction(obj)
            and obj.__module__ == schedulers.__name__
            and not name.startswith("_")
            and name != "join_schedules"
        )
    )


class LoraParameters(BaseModel):
    model_config = _SCHEMA

    rank: int = Field(8, ge=1)
    scale: float = Field(20.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    keys: list[str] | None = None  # module paths to adapt, e.g. self_attn.q_proj; None = mlx-lm's choice


class LRSchedule(BaseModel):
    model_config = _SCHEMA

    name: str
    arguments: list[Any]  # passed to the schedule function; the first one is the peak learning rate
    warmup: int = Field(0, ge=0)
    warmup_init: float = 0.0

    @field_validator("name")
    @classmethod
    def _known_schedule(cls, name: str) -> str:
        names = _schedule_names()
        if name not in names:
            raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(names)}")
        return name


class HFDataset(BaseModel):
    """One ``hf_dataset`` entry; mlx-tuning-fork's ``name`` is accepted as a spelling of ``path``."""

    model_config = _SCHEMA

    path: str
    train_split: str = "train[:80%]"
    valid_split: str = "train[-10%:]"
    test_split: str | None = None
    prompt_feature: str | None = None
    completion_feature: str | None = None
    text_feature: str | None = None
    chat_feature: str | None = None
    config: dict[str, Any] = {}  # keyword arguments for datasets.load_dataset

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


class TrainConfig(BaseModel):
    """One fully resolved training stage. Defaults are mlx-lm's wherever mlx-lm has the key."""

    model_config = _SCHEMA

    # what to train on
    model: str
    data: str | None = None  # folder with train/valid/test.jsonl, one .jsonl/.json/.csv/.parquet, or an HF id
    hf_dataset: list[HFDataset] | None = None
    prompt_feature: str = "prompt"
    completion_feature: str = "completion"
    text_feature: str = "text"
    chat_feature: str = "messages"
    valid_fraction: float = Field(0.05, ge=0, le=0.5)  # held out of a single data file without a valid split
    mask_prompt: bool = False
    prompt_loss_weight: float | None = Field(None, ge=0, le=1)  # None: follow mask_prompt, see `plw`

    # how to adapt it
    fine_tune_type: Literal["lora", "dora", "full"] = "lora"
    num_layers: AllOrCount = 16
    lora_parameters: LoraParameters = Field(default_factory=LoraParameters)

    # how long and how fast
    iters: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(4, ge=1)
    grad_accumulation_steps: int = Field(1, ge=1)
    max_seq_length: int = Field(2048, ge=2)
    learning_rate: float = Field(1e-5, gt=0)
    lr_schedule: LRSchedule | None = None
    optimizer: Literal["adam", "adamw", "muon", "sgd", "adafactor"] = "adam"
    optimizer_config: dict[str, dict[str, Any]] = {}  # per-optimizer keyword arguments
    max_grad_norm: float | None = Field(None, gt=0)
    skip_nonfinite_batches: int = Field(0, ge=0)  # NaN/inf batches skipped before the run stops
    early_stopping_patience: int | None = Field(None, ge=1)  # evals without a better valid completion loss
    memory_limit_percent: float = Field(95.0, gt=0, le=100)  # system memory use that checkpoints and pauses/stops
    swap_growth_gb: float = Field(2.0, gt=0)  # swap growth during the run that does the same
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    grad_checkpoint: bool = False
    sparse_logits: bool = True
    fast_silu: bool = True
    fast_attention: bool = True
    fast_lora: bool = True
    shared_prefix: bool = True  # compute the prefix every training example shares once per batch part
    cpu_streams: int = Field(2, ge=1, le=64)  # CPU backend: the streams a batch's rows are split over; 1: none
    clear_cache_threshold: int = Field(0, ge=0)
    seed: int = 0

    # reporting, evaluation and saving
    steps_per_report: int = Field(10, ge=1)
    steps_per_eval: int = Field(200, ge=1)
    evals_per_epoch: int | None = Field(None, ge=1)
    val_batches: int = Field(25, ge=-1)  # -1: the whole split; 0: no validation
    samples_per_eval: int = Field(0, ge=0)
    sample_max_tokens: int = Field(48, ge=1)
    save_every: int = Field(100, ge=1)
    test: bool = False
    test_batches: AllOrCount = 500
    name: str | None = None
    runs_dir: str = "runs"
    adapter_path: str | None = None  # None: inside the run folder
    resume_adapter_file: str | None = None
    fuse: bool = False
    report_to: str | None = None
    project_name: str | None = None
    trust_remote_code: bool = False

    # accepted so mlx-lm files load unchanged; they mean nothing here
    train: bool = False  # we always train
    config: str | None = None
    training_mode: Literal["normal"] = "normal"  # appears in mlx-lm's example config

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

    Written as resolved_config.yaml, it loads back to the same config.
    """
    data = config.model_dump(mode="json")
    data["prompt_loss_weight"] = config.plw
    return data


# --------------------------------------------------------------------------- YAML with line numbers


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-5`` as a float, as mlx-lm does (YAML 1.1 wants ``1.0e-5``).

    A subclass, so the process-wide ``yaml.SafeLoader`` stays as other code expects it.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)

KeyPath = tuple[str | int, ...]


def _dotted(path: KeyPath) -> str:
    """("hf_dataset", 0, "path") -> "hf_dataset[0].path"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


_MAX_NODES = 100_000  # YAML aliases can expand a few lines into billions of values
_STR_TAG, _MERGE_TAG = "tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"


def _record_lines(root: yaml.Node, lines: dict[KeyPath, int], file: str) -> None:
    """Note the 1-based line of every key (and list item) in the document.

    PyYAML silently keeps the last of two equal keys, which hides edits; we refuse them instead.
    Aliases are followed, so we also refuse a value that contains itself and aliases that expand
    to more than ``_MAX_NODES`` values (a "billion laughs"), before anything walks the data.
    """
    visits = 0

    def walk(node: yaml.Node, path: KeyPath, parents: tuple[yaml.Node, ...]) -> None:
        nonlocal visits
        visits += 1
        line = node.start_mark.line + 1
        if visits > _MAX_NODES:
            raise ConfigError(f"more than {_MAX_NODES:,} values (YAML aliases that expand too far?)", file, line)
        if any(node is parent for parent in parents):
            raise ConfigError("a value contains itself (a recursive YAML alias)", file, line, _dotted(path) or None)
        parents = (*parents, node)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key_path = (*path, key_node.value)
                key_line = key_node.start_mark.line + 1
                if key_node.tag not in (_STR_TAG, _MERGE_TAG):  # 1:, true:, null: are keys only to YAML
                    message = f"a key must be a name, got {key_node.value!r}"
                    raise ConfigError(message, file, key_line, _dotted(path) or None)
                if key_path in lines:
                    message = f"duplicate key (first set on line {lines[key_path]})"
                    raise ConfigError(message, file, key_line, _dotted(key_path))
                lines[key_path] = key_line
                walk(value_node, key_path, parents)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                walk(item, (*path, index), parents)

    walk(root, (), ())


def _read_yaml(path: Path, label: str, text: str | None = None) -> tuple[dict, dict[KeyPath, int]]:
    """The file's top-level mapping and the line of each key path in it.

    ``text``, when given, stands in for the file's content (an editor's unsaved buffer).
    """
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("config file not found", label) from None
        except UnicodeDecodeError as e:
            line = e.object.count(b"\n", 0, e.start) + 1
            message = f"not UTF-8 text (byte 0x{e.object[e.start]:02x}); save it as UTF-8"
            raise ConfigError(message, label, line) from None
        except OSError as e:
            raise ConfigError(f"cannot read config file ({e})", label) from None
    loader = None
    lines: dict[KeyPath, int] = {}
    try:
        loader = _Loader(text)  # refuses control characters such as NUL right away
        node = loader.get_single_node()
        if node is not None:
            _record_lines(node, lines, label)  # before constructing: merge keys (<<) rewrite the node tree
        data = {} if node is None else loader.construct_document(node)
    except yaml.reader.ReaderError as e:
        problem = str(e).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}", label, text.count("\n", 0, e.position) + 1) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"invalid YAML: {problem}", label, mark.line + 1 if mark else None) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", label) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of keys to values, got a {type(data).__name__}", label, 1)
    return data, lines


def _inline(value: Any) -> str:
    """A value the way it would be written in YAML, on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**9).strip()
    return text.removesuffix("\n...")


def _show(value: Any) -> str:
    """A user's value inside an error message: strings quoted so that '' and ' 5' are visible."""
    return repr(value) if isinstance(value, str) else _inline(value)


# --------------------------------------------------------------------------- pydantic errors -> one line


_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "greater_than": "a value > {gt}",
    "greater_than_equal": "a value >= {ge}",
    "less_than": "a value < {lt}",
    "less_than_equal": "a value <= {le}",
    "literal_error": "one of {expected}",
}


def _describe(error: dict) -> str:
    """Pydantic's error in our words: what was expected, and what the user gave."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "missing":
        return "required key is missing"
    if kind not in _EXPECTED:
        return f"{error['msg']}, got {_show(error['input'])}"
    ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()}
    return f"expected {_EXPECTED[kind].format(**ctx)}, got {_show(error['input'])}"


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation such as ``list[HFDataset] | None``."""
    if isinstance(annotation, type) and not get_args(annotation) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_submodel, get_args(annotation))), None)


def _known_keys(parent: KeyPath) -> list[str]:
    """The keys allowed in the mapping at ``parent``, for did-you-mean suggestions."""
    model: type[BaseModel] = TrainConfig
    for part in parent:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            model = _submodel(field.annotation) or model
    return list(model.model_fields)


def _alpha_hint(alpha: Any, lora: Any) -> str:
    """PEFT users write lora_alpha; mlx-lm multiplies by ``scale`` = alpha / rank instead."""
    rank = lora.get("rank", LoraParameters.model_fields["rank"].default) if isinstance(lora, dict) else None
    hint = "mlx-lm uses 'scale', not 'alpha' (scale = alpha / rank"
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (alpha, rank))
    if numbers and rank > 0:
        hint += f"; for alpha={alpha}, rank={rank} write scale: {round(alpha / rank, 4)}"
    return hint + ")"


def _find_line(lines: dict[KeyPath, tuple[str, int | None]], path: KeyPath) -> tuple[str, int | None] | None:
    """Where the key at ``path`` (or failing that, its nearest parent) was written.

    List indices are also tried without, since a single ``hf_dataset`` mapping becomes a list.
    """
    for end in range(len(path), 0, -1):
        prefix = path[:end]
        for candidate in (prefix, tuple(p for p in prefix if not isinstance(p, int))):
            if candidate in lines:
                return lines[candidate]
    return None


def _config_error(exc: ValidationError, values: dict, lines: dict, label: str) -> ConfigError:
    """The first problem in file order, as a ConfigError at the line of its key."""
    found = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        file, line = _find_line(lines, loc) or (label, None)
        if error["type"] == "extra_forbidden" and loc[-2:] == ("lora_parameters", "alpha"):
            message = _alpha_hint(error["input"], values.get("lora_parameters"))
        elif error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _known_keys(loc[:-1]), n=1)
            message = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
        else:
            message = _describe(error)
        found.append(ConfigError(message, file, line, _dotted(loc) or None))
    return min(found, key=lambda e: (e.line is None, e.line or 0))


# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    """One file of a chain, resolved: its config and where each of its values came from."""

    index: int  # 0-based position in the chain
    path: Path  # the YAML file, as given
    config: TrainConfig
    sources: dict[str, Source]  # top-level key -> Source, for every field (defaults too)
    explicit: frozenset[str]  # top-level keys this stage's own file (or --set) set

    def _origin(self, key: str) -> tuple[str, int | None]:
        source = self.sources.get(re.split(r"[.\[]", key, maxsplit=1)[0])
        if source is None or source.file is None:
            return str(self.path), None
        return source.file, source.line

    def where(self, key: str) -> str:
        """``file:line: key`` for problems found later, e.g. a data folder that does not exist."""
        return _locate(*self._origin(key), key)

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError located where ``key`` was set (the stage file when it is a default)."""
        return ConfigError(message, *self._origin(key), key)


_PATH_KEYS = ("model", "data", "resume_adapter_file")
_OTHER_LENGTH = {"iters": "epochs", "epochs": "iters"}


def _resolve_paths(data: dict, folder: Path) -> None:
    """Make relative paths that exist next to the config absolute, so configs work from any cwd.

    Anything else (an HF id, a cwd-relative path, ``builtin:...``) is left as written.
    """
    for key in _PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value and not value.startswith("builtin:") and not Path(value).is_absolute():
            candidate = folder / value
            if candidate.exists():
                data[key] = str(candidate.resolve())


def _parse_override(text: str) -> tuple[KeyPath, Any]:
    """``lora_parameters.rank=16`` -> (("lora_parameters", "rank"), 16); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"expected key=value, got {text!r}", "--set")
    path = tuple(key.split("."))
    if not all(path):
        raise ConfigError("empty part in a dotted key", "--set", key=key)
    try:
        value = yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read value {raw!r}: {getattr(e, 'problem', None) or e}", "--set", key=key) from None
    return path, value


class _Chain:
    """The running merge of a chain: values, who set each top-level key, where each key path was written."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.origins: dict[str, Source] = {}
        self.lines: dict[KeyPath, tuple[str, int | None]] = {}

    def inherit(self, stage_number: int) -> None:
        """What the previous file set is from now on inherited from stage ``stage_number`` (1-based)."""
        self.origins = {
            key: Source("stage", s.file, s.line, f"stage {stage_number}") if s.kind == "file" else s
            for key, s in self.origins.items()
        }

    def _replace(self, key: str, value: Any, source: Source) -> None:
        other = _OTHER_LENGTH.get(key)
        if other and value is not None:  # a stage that sets its length in one unit drops the other
            self.values.pop(other, None)
            self.origins.pop(other, None)
        self.values[key] = value
        self.origins[key] = source
        self.lines = {path: where for path, where in self.lines.items() if path[0] != key}

    def set_from_file(self, data: dict, file_lines: dict[KeyPath, int], label: str) -> None:
        for key, value in data.items():
            self._replace(key, value, Source("file", label, file_lines.get((key,))))
        self.lines.update((path, (label, line)) for path, line in file_lines.items())

    def set_override(self, path: KeyPath, value: Any) -> None:
        top, *inner = path
        if not inner:
            self._replace(top, value, Source("override", "--set"))
        else:
            if not isinstance(self.values.get(top), dict):
                if self.values.get(top) is not None:
                    raise ConfigError(f"cannot set a key inside a {type(self.values[top]).__name__}", "--set", key=_dotted(path))
                self.values[top] = {}
            target = self.values[top] = copy.deepcopy(self.values[top])
            for part in inner[:-1]:
                if not isinstance(target.get(part), dict):
                    target[part] = {}
                target = target[part]
            target[inner[-1]] = value
            self.origins[top] = Source("override", "--set")
        self.lines = {p: w for p, w in self.lines.items() if p[: len(path)] != path}
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], ("--set", None))
        self.lines[path] = ("--set", None)


def _sources(config: TrainConfig, origins: dict[str, Source]) -> dict[str, Source]:
    """Provenance of every field; an unset prompt-loss weight points at the mask_prompt it follows."""
    sources = {key: origins.get(key, Source("default")) for key in TrainConfig.model_fields}
    if config.prompt_loss_weight is None:
        mask = sources["mask_prompt"]
        if mask.kind == "default":
            sources["prompt_loss_weight"] = Source("default", note=f"mask_prompt: {_inline(config.mask_prompt)}")
        else:
            sources["prompt_loss_weight"] = Source("derived", mask.file, mask.line, "from mask_prompt")
    return sources


def load_stages(
    paths: Sequence[str | Path], overrides: Sequence[str] = (), texts: Mapping[str, str] | None = None
) -> list[Stage]:
    """Load a chain of config files; each stage inherits the previous stage's keys unless it sets them.

    ``texts`` maps a path (as given) to content to use instead of the file's, so an editor can
    validate what it holds before it is saved.

    Inheritance is per top-level key: a stage that writes ``lora_parameters`` replaces the whole
    mapping. The ``--set`` overrides (``key=value`` or ``a.b=value``, values read as YAML) apply to
    EVERY stage, after that stage's file.
    """
    if not paths:
        raise ConfigError("no config file given")
    parsed = [_parse_override(text) for text in overrides]
    set_keys = {path[0] for path, _ in parsed}
    if {"iters", "epochs"} <= set_keys:
        raise ConfigError("set iters or epochs, not both", "--set", key="epochs")
    chain = _Chain()
    stages = []
    for index, given in enumerate(paths):
        path, label = Path(given), str(given)
        data, file_lines = _read_yaml(path, label, (texts or {}).get(label))
        if data.get("iters") is not None and data.get("epochs") is not None:
            later = max(("iters", "epochs"), key=lambda key: file_lines[(key,)])
            raise ConfigError("set iters or epochs, not both", label, file_lines[(later,)], later)
        _resolve_paths(data, path.parent)
        chain.inherit(index)
        chain.set_from_file(data, file_lines, label)
        for key_path, value in parsed:
            chain.set_override(key_path, value)
        if "model" not in chain.values:
            raise ConfigError("required key is missing", label, key="model")
        try:
            config = TrainConfig.model_validate(chain.values)
        except ValidationError as e:
            raise _config_error(e, chain.values, chain.lines, label) from None
        explicit = frozenset(key for key in data if isinstance(key, str)) | set_keys
        stages.append(Stage(index, path, config, _sources(config, chain.origins), explicit))
    return stages


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Stage:
    """A single config file as a one-stage chain."""
    return load_stages([path], overrides)[0]


def resolved_rows(stage: Stage) -> list[tuple[str, str, str]]:
    """(key, value as one-line YAML, source) for every key, in schema order."""
    return [
        (key, _inline(value), str(stage.sources[key])) for key, value in config_to_dict(stage.config).items()
    ]


def format_resolved(stage: Stage) -> str:
    """``tuner validate``'s table: one ``key  value  source`` line per key, values as YAML."""
    rows = resolved_rows(stage)
    key_width = max(len(key) for key, _, _ in rows)
    value_width = min(max(len(value) for _, value, _ in rows), 40)  # a long path may push its source right
    return "\n".join(f"{key:<{key_width}}  {value:<{value_width}}  {source}" for key, value, source in rows)
