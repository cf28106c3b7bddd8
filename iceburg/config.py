"""Configuration: model types, `TrainingConfig`, and validation that reports every problem at once.

Precedence is defaults < YAML file (`--config`) < CLI flags. Unknown YAML keys are rejected with
the list of valid ones (torchtune `config/_validate.py` style). Each field's help text lives in its
metadata and is reused by the CLI.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

EMBEDDED_BASE = "iceburg-tiny"


class ModelType(enum.Enum):
    """The five iceburg model types (values as in the original design)."""

    BASE = "iceburg-base"
    SURVEYOR = "iceburg-surveyor"
    DISSIDENT = "iceburg-dissident"
    SYNTHESIST = "iceburg-synthesist"
    ORACLE = "iceburg-oracle"

    @property
    def short(self) -> str:
        return self.value.removeprefix("iceburg-")

    @property
    def agent(self) -> str | None:
        """Agent name used by the truth filter's rubrics (None for the general base model)."""
        return None if self is ModelType.BASE else self.short

    @classmethod
    def parse(cls, value: "str | ModelType") -> "ModelType":
        if isinstance(value, ModelType):
            return value
        v = str(value).strip().lower()
        for m in cls:
            if v in (m.value, m.short, m.name.lower()):
                return m
        raise ValueError(f"unknown model type {value!r}; choose one of: {', '.join(m.short for m in cls)}")


# Original design's per-type table: recommended base (named the way users run it) and LoRA r/alpha.
RECOMMENDED = {
    ModelType.BASE: {"base_model": "mistral:7b", "lora_r": 32, "lora_alpha": 64},
    ModelType.SURVEYOR: {"base_model": "llama3.2:3b", "lora_r": 16, "lora_alpha": 32},
    ModelType.DISSIDENT: {"base_model": "llama3.2:3b", "lora_r": 16, "lora_alpha": 32},
    ModelType.SYNTHESIST: {"base_model": "mistral:7b", "lora_r": 32, "lora_alpha": 64},
    ModelType.ORACLE: {"base_model": "qwen2.5:7b", "lora_r": 64, "lora_alpha": 128},
}

# System prompt of each model type: used when a record has no system message of its own is NOT
# assumed (records are trained as written); it is the SYSTEM line of the Ollama Modelfile.
SYSTEM_PROMPTS = {
    ModelType.BASE: "You are ICEBURG, a truth-seeking research assistant. You separate evidence from "
    "speculation, say how confident you are, and correct yourself when the evidence demands it.",
    ModelType.SURVEYOR: "You are ICEBURG Surveyor, a research agent that gathers and organises "
    "information. Cite your sources, distinguish established findings from open questions, and "
    "calibrate every claim to the strength of its evidence.",
    ModelType.DISSIDENT: "You are ICEBURG Dissident, an agent that challenges assumptions. Find "
    "contradictions, weak evidence and hidden premises, and offer counter-arguments and alternative "
    "hypotheses.",
    ModelType.SYNTHESIST: "You are ICEBURG Synthesist, an agent that connects findings across "
    "domains. Integrate the evidence into a coherent picture and name the connections you draw.",
    ModelType.ORACLE: "You are ICEBURG Oracle, an agent that validates conclusions. State the "
    "underlying principles, the verdict the evidence supports, and your confidence in it.",
}

CURRICULUM_STRATEGIES = ("weighted", "novel_first", "progressive")


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainingConfig:
    """Everything one training run needs. Validate with `validate()` (called by the fine-tuner)."""

    base_model: str = _f(EMBEDDED_BASE, "base model: a local HF folder, a .gguf file, an Ollama tag "
                         "(llama3.2:3b), a Hugging Face id, or 'iceburg-tiny' (embedded default)")
    model_type: ModelType = _f(ModelType.BASE, "base, surveyor, dissident, synthesist or oracle")
    data_path: list[str] = _f([], "JSONL file(s) or folder(s) of transcripts; empty = bundled sample "
                              "data for the model type")
    output_dir: str = _f("runs", "folder under which the run folder is created")
    output_name: str | None = _f(None, "run folder name (default: <model type>-<timestamp>)")
    resume: bool = _f(False, "resume an interrupted run in output_dir/output_name from its last checkpoint")

    epochs: int = _f(3, "passes over the training data")
    max_steps: int | None = _f(None, "stop after this many optimizer steps (overrides epochs)")
    learning_rate: float | None = _f(None, "peak learning rate (None = 2e-4, the original design's LoRA "
                                     "rate for 4096-wide 7B models, scaled by sqrt(4096 / hidden size) and "
                                     "clipped to [5e-5, 1e-3])")
    warmup_ratio: float = _f(0.05, "fraction of steps for linear warm-up")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    batch_size: int | None = _f(None, "micro-batch size in packed rows (None = chosen by the planner)")
    gradient_accumulation_steps: int | None = _f(None, "micro-batches per optimizer step (None = planner)")
    max_seq_length: int = _f(1024, "tokens per packed row; longer transcripts are truncated")
    packing: bool = _f(True, "pack several transcripts into one row (no attention across them)")
    eval_fraction: float = _f(0.1, "share of records held out for evaluation")
    eval_steps: int | None = _f(None, "evaluate every N optimizer steps (None = once per epoch)")
    save_steps: int | None = _f(None, "checkpoint every N optimizer steps for resuming (None = per epoch)")
    seed: int = _f(42, "seed for the split, shuffling, LoRA init and dropout")
    num_threads: int | None = _f(None, "torch CPU threads (None = torch default)")
    device: str | None = _f(None, "force a device: cpu, cuda, mps (None = detected)")

    lora_r: int | None = _f(None, "LoRA rank (None = per model type, scaled by model size)")
    lora_alpha: int | None = _f(None, "LoRA alpha (None = 2 x r, as in the original table)")
    lora_dropout: float = _f(0.05, "LoRA dropout")
    lora_target_modules: list[str] = _f([], "module names to adapt (empty = every linear "
                                        "projection found in the model)")
    use_qlora: bool | None = _f(None, "4-bit QLoRA (CUDA only; None = when full precision does not fit)")
    gradient_checkpointing: bool | None = _f(None, "trade compute for memory (None = planner)")
    precision: str | None = _f(None, "fp32, bf16 or fp16 (None = best the device supports)")

    min_quality_score: float = _f(0.7, "truth filter: minimum quality to keep a record")
    use_truth_filter: bool = _f(True, "run the truth filter (quality, duplicates, rubrics)")
    truth_patterns: str | None = _f(None, "file of verified/contradicted patterns for the truth filter "
                                    "(docs/truth_filter.md)")
    use_emergence_weighting: bool = _f(True, "score novelty and train with the curriculum")
    semantic_dedup: float | None = _f(None, "emergence: drop records whose embedding cosine similarity "
                                      "to a kept neighbour is at least this (e.g. 0.95); None = off")
    curriculum_strategy: str = _f("weighted", "weighted, novel_first or progressive")
    strict: bool = _f(False, "treat any invalid input line as an error instead of rejecting it")
    trust_remote_code: bool = _f(False, "allow model code from the base model's repository (off: "
                                 "only architectures transformers ships)")

    export_formats: list[str] = _f(["huggingface"], "exports after training: huggingface, gguf, "
                                   "ollama, onnx")
    onnx_int8: bool = _f(False, "also write an int8 (dynamic quantization) ONNX model")
    quantization: list[str] = _f(["q8_0"], "GGUF file types to write (f32, f16, bf16, q8_0, q4_0, "
                                 "q4_k_m, q5_k_m, q6_k)")

    compare_prompts: int = _f(0, "after training, answer this many held-out prompts greedily with the base "
                              "and the tuned model (printed, RUN/eval.json, report.html); 0 = skip")
    compare_max_new_tokens: int = _f(256, "token budget of each answer for --compare")
    report_to: list[str] = _f([], "extra metric sinks besides metrics.jsonl: tensorboard (RUN/tensorboard/)")

    def __post_init__(self) -> None:
        if isinstance(self.model_type, str):
            try:
                self.model_type = ModelType.parse(self.model_type)
            except ValueError:
                pass  # reported by validate()
        if isinstance(self.data_path, (str, Path)):
            self.data_path = [str(self.data_path)]
        self.data_path = [str(p) for p in self.data_path]

    # -- validation -----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        p: list[str] = []
        if not isinstance(self.model_type, ModelType):
            p.append(f"model_type (--model-type): unknown value {self.model_type!r}; choose one of "
                     + ", ".join(m.short for m in ModelType))
        ints = {"epochs": 1, "max_seq_length": 16, "seed": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or v < lo:
                p.append(f"{name} (--{name.replace('_', '-')}): must be an integer >= {lo}, got {v!r}")
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "eval_steps",
                     "save_steps", "lora_r", "lora_alpha", "num_threads"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                p.append(f"{name} (--{name.replace('_', '-')}): must be a positive integer, got {v!r}")
        if self.learning_rate is not None and not (isinstance(self.learning_rate, (int, float))
                                                   and 0 < self.learning_rate < 1):
            p.append(f"learning_rate (--learning-rate): must be in (0, 1), got {self.learning_rate!r}")
        for name in ("warmup_ratio", "lora_dropout", "min_quality_score"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):
                p.append(f"{name} (--{name.replace('_', '-')}): must be in [0, 1], got {v!r}")
        if not (isinstance(self.eval_fraction, (int, float)) and 0 <= self.eval_fraction < 0.9):
            p.append(f"eval_fraction (--eval-fraction): must be in [0, 0.9), got {self.eval_fraction!r}")
        if self.semantic_dedup is not None and not (isinstance(self.semantic_dedup, (int, float))
                                                    and 0 < self.semantic_dedup <= 1):
            p.append(f"semantic_dedup (--semantic-dedup): must be in (0, 1], got {self.semantic_dedup!r}")
        if self.curriculum_strategy not in CURRICULUM_STRATEGIES:
            p.append(f"curriculum_strategy (--curriculum): unknown {self.curriculum_strategy!r}; "
                     f"choose one of {', '.join(CURRICULUM_STRATEGIES)}")
        if self.precision not in (None, "fp32", "bf16", "fp16"):
            p.append(f"precision (--precision): unknown {self.precision!r}; choose fp32, bf16 or fp16")
        if self.device not in (None, "cpu", "cuda", "mps"):
            p.append(f"device (--device): unknown {self.device!r}; choose cpu, cuda or mps")
        known_formats = ("huggingface", "gguf", "ollama", "onnx")
        for f_ in self.export_formats:
            if f_ not in known_formats:
                p.append(f"export_formats (--formats): unknown format {f_!r}; choose from "
                         + ", ".join(known_formats))
        if not isinstance(self.compare_prompts, int) or self.compare_prompts < 0:
            p.append(f"compare_prompts (--compare): must be an integer >= 0, got {self.compare_prompts!r}")
        if not isinstance(self.compare_max_new_tokens, int) or self.compare_max_new_tokens < 1:
            p.append("compare_max_new_tokens (--compare-max-new-tokens): must be a positive integer, got "
                     f"{self.compare_max_new_tokens!r}")
        for sink in self.report_to:
            if sink != "tensorboard":
                p.append(f"report_to (--report-to): unknown {sink!r}; choose tensorboard")
        if self.output_name is not None and not _safe_name(self.output_name):
            p.append(f"output_name (--output-name): {self.output_name!r} is not a safe folder name; "
                     "use letters, digits, '.', '_' and '-' only")
        if self.truth_patterns is not None and not Path(self.truth_patterns).is_file():
            p.append(f"truth_patterns (--truth-patterns): {self.truth_patterns} is not a file")
        for d in self.data_path:
            if not Path(d).exists():
                p.append(f"data_path (--data-path): {d} does not exist; pass a JSONL file or a folder "
                         "of .jsonl files")
        return p

    def validate(self) -> "TrainingConfig":
        probs = self.problems()
        if probs:
            raise ConfigError(probs)
        return self

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f_ in dataclasses.fields(self):
            v = getattr(self, f_.name)
            out[f_.name] = v.value if isinstance(v, ModelType) else v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainingConfig":
        names = {f_.name for f_ in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError([f"{source}: unknown key {k!r}; valid keys: {', '.join(sorted(names))}"
                               for k in unknown])
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainingConfig":
        import yaml

        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ConfigError([f"{path}: expected a mapping of config keys at the top level"])
        return cls.from_dict(data, source=str(path))

    def resolved_learning_rate(self, hidden_size: int | None) -> float:
        """Explicit rate, else 2e-4 width-scaled: LoRA rates that work for 7B models (hidden 4096)
        barely move narrow models; the square-root width rule follows the muP-style observation that
        the stable rate grows as width shrinks (Yang et al., 2022), clipped to a safe range."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        if not hidden_size:
            return 2e-4
        return float(min(1e-3, max(5e-5, 2e-4 * (4096 / hidden_size) ** 0.5)))

    def resolved_lora(self, param_count: int | None = None) -> tuple[int, int]:
        """LoRA (r, alpha): explicit values win, else the per-type table of the original design."""
        rec = RECOMMENDED[self.model_type]
        r = self.lora_r or rec["lora_r"]
        alpha = self.lora_alpha or (2 * r if self.lora_r else rec["lora_alpha"])
        return r, alpha


def _safe_name(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name)) and ".." not in name


def config_help() -> dict[str, str]:
    return {f_.name: f_.metadata.get("help", "") for f_ in dataclasses.fields(TrainingConfig)}
