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
# The --formats names, in run order. Each exporter declares the rest of itself (order, options,
# headline figure, status from its proof) in its module's SPEC (iceburg/export/base.py ExporterSpec);
# config sits below export in the layer contract, so only the names live here, and
# tests/export/test_exporters.py checks they equal the exporters' own.
EXPORT_FORMATS = ("huggingface", "gguf", "ollama", "onnx")
# GGUF file types the exporter writes (iceburg/export/gguf.py FILE_TYPES must list the same; a
# test checks it). Kept here so a typo is refused before any work, not after training.
OBJECTIVES = ("sft", "dpo", "orpo", "kto", "grpo")
# GRPO loss variants, named as TRL 1.16 names them (GRPOConfig.loss_type; docs/grpo.md)
GRPO_LOSSES = ("grpo", "dr_grpo", "dapo")
GGUF_QUANTIZATIONS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k")


def _f(default: Any, help: str, flag: str | None = None, **kw: Any) -> Any:
    """A config field whose metadata carries its CLI flag, help and bounds; the CLI is generated
    from these (iceburg/cli.py) and `problems()` checks the bounds, so both name the same flag.

    Metadata keys: `flag` (None = config/YAML only), `aliases`, `group` (only `"actions"`: listed
    under the CLI's actions; every other flag is listed under its `SECTIONS` heading),
    `min`/`max` (inclusive bounds; `min_exclusive`/`max_exclusive` for open ends), `choices`,
    `negate` (a `--no-x` flag that stores False), `nargs`, `action` ("extend": a repeatable list flag,
    `--gate A --gate B`)."""
    md = {"help": help, "flag": flag, **kw}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=md)
    return field(default=default, metadata=md)


# The config's sections (issue 24): every field belongs to exactly one (a test checks it). A YAML
# file groups its keys under these names (`train: {epochs: 3}`); --help lists the flags by
# section. Attribute access stays flat (`cfg.epochs`), so code and flags did not change; the old
# flat YAML keys still load, with a deprecation note. `hpo` is both a section and a field: a
# mapping under `hpo:` is the section, a number is the trial count.
SECTIONS: dict[str, tuple[str, ...]] = {
    "run": ("model_type", "base_model", "output_dir", "output_name", "resume", "seed", "trust_remote_code"),
    "data": ("data_path", "eval_fraction", "strict", "mine_preferences", "preference_margin"),
    "truth": ("use_truth_filter", "min_quality_score", "truth_patterns"),
    "emergence": ("use_emergence_weighting", "semantic_dedup", "curriculum_strategy"),
    "train": ("objective", "epochs", "max_steps", "learning_rate", "warmup_ratio", "weight_decay",
              "batch_size", "gradient_accumulation_steps", "max_seq_length", "overflow", "reasoning",
              "train_on", "split_parallel_calls", "supervise_tool_calls", "packing", "eval_steps", "save_steps", "num_threads", "device", "backend", "lora_r", "lora_alpha",
              "lora_dropout", "lora_target_modules", "use_qlora", "use_dora", "use_rslora",
              "gradient_checkpointing", "precision", "attn_implementation", "use_liger", "preference_beta",
              "grpo_group", "grpo_loss", "grpo_epsilon", "grpo_beta", "grpo_temperature", "grpo_sample_dtype", "grpo_eval_samples", "max_completion_length", "reward_weights",
              "reward"),
    "distributed": ("nproc", "distributed", "dist_timeout"),
    "export": ("export_formats", "onnx_int8", "quantization", "gguf_converter", "system_prompt"),
    "eval": ("compare_prompts", "compare_max_new_tokens", "report_to", "gates"),
    "hpo": ("hpo", "hpo_workers", "hpo_storage", "hpo_resume"),
    "curate": ("curate_tasks", "curate_workers"),
    "continual": ("continue_from", "replay_fraction", "replay_by", "forget_tolerance", "publish"),
}
SECTION_TITLES = {"run": "run", "data": "data", "truth": "truth filter (docs/truth_filter.md)",
                  "emergence": "emergence and curriculum (docs/emergence.md)", "train": "training",
                  "distributed": "distributed training", "export": "export",
                  "eval": "after training: comparison and evaluation", "hpo": "hyperparameter search (docs/hpo.md)",
                  "curate": "curation on datatrove (docs/curation.md)",
                  "continual": "continual training, versions and publishing (docs/loop.md)"}


def section_of(name: str) -> str:
    """The section a config key belongs to (KeyError for an unknown key)."""
    for section, names in SECTIONS.items():
        if name in names:
            return section
    raise KeyError(name)


def nest_sections(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A flat key -> value mapping grouped by section (the YAML form), sections in SECTIONS order."""
    out: dict[str, dict[str, Any]] = {}
    for section, names in SECTIONS.items():
        part = {k: flat[k] for k in names if k in flat}
        if part:
            out[section] = part
    return out


def flatten_sections(data: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """A YAML mapping with section blocks -> (flat keys, problems, flat keys used the old way).
    A key under the wrong section is a problem naming the right one."""
    flat: dict[str, Any] = {}
    problems: list[str] = []
    old: list[str] = []
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            for k, v in value.items():
                try:
                    right = section_of(k)
                except KeyError:
                    problems.append(f"{source}: unknown key {key}.{k}; valid keys in {key}: "
                                    + ", ".join(SECTIONS[key]))
                    continue
                if right != key:
                    problems.append(f"{source}: {k} belongs to section {right!r}, not {key!r}; move it under {right}:")
                flat[k] = v
        else:
            flat[key] = value
            old.append(key)
    return flat, problems, old


@dataclass
class TrainingConfig:
    """Everything one training run needs. Validate with `validate()` (called before any work)."""

    base_model: str = _f(EMBEDDED_BASE, "base model: a local HF folder, a .gguf file, an Ollama tag "
                         "(llama3.2:3b), a Hugging Face id, or 'iceburg-tiny' (embedded default)",
                         "--base-model")
    model_type: ModelType = _f(ModelType.BASE, "model type to train: base, surveyor, dissident, "
                               "synthesist or oracle", "--model-type", group="actions",
                               choices=tuple(m.short for m in ModelType))
    data_path: list[str] = _f([], "JSONL file(s) or folder(s) of transcripts; empty = bundled sample "
                              "data for the model type", "--data-path", nargs="+")
    output_dir: str = _f("runs", "folder under which the run folder is created (with --export-only: "
                         "the folder the exports are written to)", "--output-dir")
    output_name: str | None = _f(None, "run folder name (default: <model type>-<timestamp>)",
                                 "--output-name")
    resume: bool = _f(False, "resume an interrupted run in output_dir/output_name from its last "
                      "checkpoint", "--resume")

    epochs: int = _f(3, "passes over the training data", "--epochs", min=1)
    max_steps: int | None = _f(None, "stop after this many optimizer steps (overrides epochs)",
                               "--max-steps", min=1)
    learning_rate: float | None = _f(None, "peak learning rate (default: 2e-4, the original design's "
                                     "LoRA rate for 4096-wide 7B models, scaled by sqrt(4096 / hidden "
                                     "size) and clipped to [5e-5, 1e-3])", "--learning-rate",
                                     min_exclusive=0, max_exclusive=1)
    warmup_ratio: float = _f(0.05, "fraction of steps for linear warm-up", "--warmup-ratio",
                             min=0, max=1)
    weight_decay: float = _f(0.0, "AdamW weight decay", "--weight-decay", min=0, max=1)
    batch_size: int | None = _f(None, "micro-batch size in packed rows (default: chosen by the planner)",
                                "--batch-size", min=1)
    gradient_accumulation_steps: int | None = _f(None, "micro-batches per optimizer step (default: "
                                                 "planner)", "--grad-accum", min=1,
                                                 aliases=("--gradient-accumulation-steps",))
    max_seq_length: int = _f(1024, "tokens per packed row; longer transcripts are truncated or split "
                             "(--overflow)", "--max-seq-length", min=16)
    overflow: str = _f("split", "a training transcript longer than --max-seq-length: 'split' trains the "
                       "rest as further windows of that length (TRL's bfd_split); 'truncate' drops it "
                       "(TRL's default). Held-out transcripts are always truncated, so eval losses stay "
                       "comparable",
                       "--overflow", choices=("truncate", "split"))
    reasoning: str = _f("keep", "assistant reasoning (reasoning_content, thinking blocks, <think>): 'keep' "
                        "trains it the way the base's chat template writes it (Qwen3 <think>, R1 distills' "
                        "forced <think>) and drops it, counted, where the template has no place for it; "
                        "'drop' never trains it (docs/data.md)", "--reasoning", choices=("keep", "drop"))
    train_on: str = _f("all", "which assistant turns carry loss: 'all'; 'last' (earlier turns are context); "
                       "'final' (answers only, not the turns that call tools)", "--train-on",
                       choices=("all", "last", "final"))
    split_parallel_calls: bool = _f(False, "a turn with parallel tool calls under a template that writes one "
                                    "call per turn (Llama 3.x) trains as consecutive single calls instead of "
                                    "being rejected (template_refused)", "--split-parallel-calls")
    supervise_tool_calls: str = _f("all", "what of an assistant turn's tool calls carries loss: 'all' (name and "
                                   "arguments); 'name' (the arguments are context: the model learns when and "
                                   "which tool to call, not the argument values); 'none' (the call text is "
                                   "context; the turn's text, reasoning and end still train). Tool results never "
                                   "train (docs/data.md)", "--supervise-tool-calls", choices=("all", "name", "none"))
    packing: bool = _f(True, "one transcript per row instead of packing several into a row (no "
                       "attention across packed transcripts)", "--no-packing", negate=True)
    eval_fraction: float = _f(0.1, "share of records held out for evaluation", "--eval-fraction",
                              min=0, max_exclusive=0.9)
    eval_steps: int | None = _f(None, "evaluate every N optimizer steps (default: once per epoch)",
                                "--eval-steps", min=1)
    save_steps: int | None = _f(None, "checkpoint every N optimizer steps for resuming (default: per "
                                "epoch)", "--save-steps", min=1)
    seed: int = _f(42, "seed for the split, shuffling, LoRA init and dropout", "--seed", min=0)
    num_threads: int | None = _f(None, "torch CPU threads (default: torch's)", "--threads",
                                 min=1, aliases=("--num-threads",))
    device: str | None = _f(None, "force a device (default: detected)", "--device",
                            choices=("cpu", "cuda", "mps"))

    nproc: int = _f(1, "data-parallel training processes on this node (spawns torchrun; one per GPU, "
                    "or CPU processes with gloo). Under torchrun / accelerate launch the launcher's "
                    "world size is used instead. --batch-size and --grad-accum are per process",
                    "--nproc", min=1)
    distributed: str = _f("ddp", "multi-process mode: ddp (replicate the base, all-reduce LoRA "
                          "gradients) or fsdp (shard the frozen base per decoder layer, for bases "
                          "that do not fit one device)", "--distributed", choices=("ddp", "fsdp"))
    dist_timeout: int = _f(1800, "seconds any rank waits in a collective before the whole job "
                           "stops with an error (must exceed data preparation on rank 0)",
                           "--dist-timeout", min=10)

    backend: str = _f("auto", "training backend: torch, or mlx (mlx-lm; auto picks mlx on Apple silicon "
                      "when mlx-lm is installed and the run needs nothing only torch has)", "--backend",
                      choices=("auto", "torch", "mlx"))
    lora_r: int | None = _f(None, "LoRA rank (default: per model type, scaled by model size)",
                            "--lora-r", min=1)
    lora_alpha: int | None = _f(None, "LoRA alpha (default: 2 x r, as in the original table)",
                                "--lora-alpha", min=1)
    lora_dropout: float = _f(0.05, "LoRA dropout", "--lora-dropout", min=0, max=1)
    lora_target_modules: list[str] = _f([], "module names to adapt (default: every linear projection "
                                        "found in the model)", "--lora-target-modules",
                                        nargs="+")
    use_qlora: bool | None = _f(None, "4-bit QLoRA (--qlora / --no-qlora; default: when full "
                                "precision does not fit)", "--qlora", aliases=("--use-qlora",))
    use_dora: bool = _f(False, "DoRA: weight-decomposed LoRA (Liu et al. 2024; PEFT use_dora), a learned "
                        "magnitude per output channel on top of the low-rank update", "--dora")
    use_rslora: bool = _f(False, "rank-stabilised LoRA: scale the update by alpha/sqrt(r) instead of "
                          "alpha/r (Kalajdzievski 2023; PEFT use_rslora)", "--rslora")
    gradient_checkpointing: bool | None = _f(None, "trade compute for memory (default: planner)",
                                             "--gradient-checkpointing")
    precision: str | None = _f(None, "numeric precision (default: best the device supports)",
                               "--precision", choices=("fp32", "bf16", "fp16"))
    attn_implementation: str = _f("auto", "attention kernel: auto (transformers' choice: sdpa where the "
                                  "model supports it), sdpa or eager (packed rows get a block-diagonal "
                                  "mask from their position ids), or flash_attention_2 (CUDA + flash-attn; "
                                  "each micro-batch becomes one padding-free varlen row)",
                                  "--attn-implementation",
                                  choices=("auto", "sdpa", "eager", "flash_attention_2"))
    use_liger: bool = _f(False, "Liger's fused lm-head + cross-entropy (CUDA + liger-kernel): the "
                         "supervised positions' logits are never materialised", "--liger")

    min_quality_score: float = _f(0.7, "truth filter: minimum quality to keep a record",
                                  "--min-quality-score", min=0, max=1)
    use_truth_filter: bool = _f(True, "skip the truth filter (quality, duplicates, rubrics)",
                                "--no-truth-filter", negate=True)
    truth_patterns: str | None = _f(None, "file of verified/contradicted patterns for the truth "
                                    "filter (docs/truth_filter.md)", "--truth-patterns")
    use_emergence_weighting: bool = _f(True, "plain shuffled training (no novelty scoring or "
                                       "curriculum)", "--no-emergence", negate=True)
    semantic_dedup: float | None = _f(None, "emergence: drop records whose embedding cosine "
                                      "similarity to a kept neighbour is at least this (e.g. 0.95); "
                                      "default off", "--semantic-dedup", min_exclusive=0, max=1)
    curriculum_strategy: str = _f("weighted", "curriculum strategy", "--curriculum",
                                  choices=CURRICULUM_STRATEGIES)
    strict: bool = _f(False, "treat any invalid input line, or a record the chat template refuses, as an "
                      "error instead of rejecting it (rejects.jsonl)", "--strict")
    # Curation on datatrove (docs/curation.md): --filter-only sharded over tasks, same result as
    # one process (dedup and novelty are decided globally).
    curate_tasks: int = _f(0, "with --filter-only: run the truth filter, global dedup and emergence "
                           "scoring as datatrove pipeline steps over N tasks (files are the shards; "
                           "0 = the one-process --filter-only)", "--curate-tasks", min=0)
    curate_workers: int = _f(1, "with --curate-tasks: tasks run at once on this machine (datatrove's "
                             "local executor)", "--curate-workers", min=1)
    # Preference tuning (docs/preference.md). beta 0.1: DPO paper's and TRL's default (also TRL's
    # ORPO lambda and KTO beta); margin 0.1: one category band of the truth filter.
    objective: str = _f("sft", "training objective: sft (supervised), dpo or orpo (chosen/rejected "
                        "pairs) or kto (answers labelled good/bad); docs/preference.md", "--objective",
                        choices=OBJECTIVES)
    mine_preferences: bool = _f(False, "build chosen/rejected pairs from the transcripts with the truth "
                                "filter's verdicts (with --objective dpo, orpo or kto)", "--mine-preferences")
    preference_beta: float = _f(0.1, "DPO / KTO beta and ORPO lambda", "--beta", min_exclusive=0)
    # GRPO (docs/grpo.md). Defaults are TRL 1.16 GRPOConfig's: loss_type "dapo", epsilon 0.2, beta 0.0,
    # max_completion_length 256; the group of 4 is the bounded run (TRL's default 8 costs
    # twice the generation on CPU).
    grpo_group: int = _f(4, "--objective grpo: answers sampled per prompt (the group its advantages are "
                         "normalised in)", "--grpo-group", min=2)
    grpo_loss: str = _f("dapo", "--objective grpo: loss normalisation as TRL names it: grpo (per answer), "
                        "dr_grpo (by max_completion_length), dapo (by the step's answer tokens)", "--grpo-loss",
                        choices=GRPO_LOSSES)
    grpo_epsilon: float = _f(0.2, "--objective grpo: clipping range of the importance ratio", "--grpo-epsilon",
                             min_exclusive=0, max_exclusive=1)
    grpo_beta: float = _f(0.0, "--objective grpo: KL coefficient to the reference (the base, adapter "
                          "disabled); 0 computes no reference", "--grpo-beta", min=0)
    # TRL 1.16 GRPOConfig.temperature (default 1.0): sampling temperature; the loss's log-probabilities
    # are taken at the same temperature, as TRL does
    grpo_temperature: float = _f(1.0, "--objective grpo: sampling temperature of the G answers (the loss's "
                                 "log-probabilities use it too, as TRL's)", "--grpo-temperature", min_exclusive=0)
    grpo_sample_dtype: str | None = _f(None, "--objective grpo, torch: sample the answers with the weights in "
                                       "bf16 (output head and logits stay fp32); faster on CPUs with bf16 matmuls, "
                                       "answers drawn from a rounded policy (docs/grpo.md Speed); default: the "
                                       "model's dtype", "--grpo-sample-dtype", choices=("bf16",))
    grpo_eval_samples: int = _f(0, "--objective grpo: besides the greedy answers, score K answers per held-out "
                                "prompt sampled at --grpo-temperature (the same seeds before and after) and report "
                                "each reward's per-prompt mean; 0: greedy only (docs/grpo.md)", "--grpo-eval-samples",
                                min=0)
    max_completion_length: int = _f(256, "--objective grpo: token budget of each sampled answer",
                                    "--max-completion-length", min=1)
    reward_weights: list[str] = _f([], "--objective grpo: reward weights as NAME=WEIGHT (truth, tool_call, "
                                   "format, reference, or a --reward function's name); unnamed rewards keep "
                                   "their defaults (docs/grpo.md)", "--reward-weights", nargs="+")
    reward: list[str] = _f([], "--objective grpo: a user reward module:function(prompt, completion, record) "
                           "-> float | None (repeatable)", "--reward", action="extend")
    preference_margin: float = _f(0.1, "--mine-preferences: minimum truth-filter quality gap between the "
                                  "chosen and the rejected answer", "--preference-margin", min=0, max=1)
    trust_remote_code: bool = _f(False, "allow model code from the base model's repository (off: "
                                 "only architectures transformers ships)", "--trust-remote-code")

    export_formats: list[str] = _f(["huggingface"], "exports after training (or with --export-only)",
                                   "--formats", nargs="+", choices=EXPORT_FORMATS)
    onnx_int8: bool = _f(False, "also write an int8 (dynamic quantization) ONNX model", "--onnx-int8")
    quantization: list[str] = _f(["q8_0"], "GGUF file types to write", "--quantization",
                                 nargs="+", choices=GGUF_QUANTIZATIONS)
    gguf_converter: str = _f("auto", "who writes the GGUF: iceburg's in-process writer, llama.cpp's own "
                             "convert_hf_to_gguf.py from the pinned llama-cpp-python sdist, or auto (iceburg's "
                             "writer where the family registry has a proven GgufSpec, else llama.cpp's)",
                             "--gguf-converter", choices=("auto", "iceburg", "llama.cpp"))
    system_prompt: str | None = _f(None, "system prompt written into the Ollama Modelfile and used by "
                                   "chat (default: the model type's prompt)", "--system-prompt")
    compare_prompts: int = _f(0, "iceburg-train: after training, answer this many held-out prompts greedily "
                              "with the base and the tuned model (printed, RUN/eval.json, report.html); 0 = skip",
                              "--compare", min=0)
    compare_max_new_tokens: int = _f(256, "token budget of each --compare answer", "--compare-max-new-tokens", min=1)
    report_to: list[str] = _f([], "extra metric sinks besides metrics.jsonl: tensorboard (RUN/tensorboard/)",
                              "--report-to", nargs="+", choices=("tensorboard",))
    gates: list[str] = _f([], "evaluation gates checked after training, before the GGUF/Ollama/ONNX exports "
                          "are written (a failing model keeps only merged/ and the huggingface export; exit "
                          "3), e.g. --gate 'truth_pass_rate>=base-0.02' --gate 'forgetting_loss<=base+0.05' "
                          "(docs/evaluation.md)", "--gate", action="extend")

    # Continual training (iceburg/recipes/continual.py, docs/loop.md): the next version of a run.
    continue_from: str | None = _f(None, "train the next version of this finished run folder: start from its "
                                   "adapter (same base), drop new records it already saw (seen_before), mix in "
                                   "--replay-fraction of its curated data, re-evaluate its held-out set "
                                   "(docs/loop.md)", "--continue-from")
    replay_fraction: float = _f(0.3, "share of the next version's training records replayed from the previous "
                                "versions' curated data (0: no replay; default measured in docs/loop.md)",
                                "--replay-fraction", min=0, max_exclusive=1)
    replay_by: str = _f("quality", "which previous records are replayed first: highest truth-filter quality, "
                        "highest emergence score, or a seeded random sample", "--replay-by",
                        choices=("quality", "emergence", "random"))
    forget_tolerance: float = _f(0.02, "the continual gate: the previous held-out loss may rise by at most this "
                                 "much over the parent's (nats/token; the figure issue 28 asks for)",
                                 "--forget-tolerance", min=0)
    publish: bool = _f(False, "after a continual run whose gates pass: write the Modelfile for "
                       "iceburg-<type>:vN and run `ollama create` where ollama is on PATH (docs/loop.md)",
                       "--publish")

    # Hyperparameter search (iceburg/hpo, docs/hpo.md). Plain fields rather than a nested section:
    # the CLI is generated from flat fields and a search is "this config, N times, varied".
    hpo: int | None = _f(None, "search hyperparameters with N Optuna trials (TPE, median pruning) "
                         "instead of one run; writes a study folder with the best config "
                         "(docs/hpo.md)", "--hpo", min=1)
    hpo_workers: int = _f(1, "trial worker processes on this machine, sharing the study storage",
                          "--hpo-workers", min=1)
    hpo_storage: str | None = _f(None, "Optuna storage shared by all workers: an RDB URL (sqlite:///"
                                 "study.db, postgresql://...) or a journal file path (default: "
                                 "<study folder>/study.journal)", "--hpo-storage")
    hpo_resume: bool = _f(False, "continue (or join) the study in output_dir/output_name until it "
                          "has --hpo trials", "--hpo-resume")

    def __post_init__(self) -> None:
        if isinstance(self.model_type, str):
            try:
                self.model_type = ModelType.parse(self.model_type)
            except ValueError:
                pass  # reported by validate()
        if isinstance(self.data_path, (str, Path)):
            self.data_path = [str(self.data_path)]
        if isinstance(self.data_path, list):
            self.data_path = [str(p) for p in self.data_path]

    # -- validation -----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Every problem at once, each naming the key and its flag (bounds come from metadata)."""
        p: list[str] = []
        for f_ in dataclasses.fields(self):
            p.extend(_field_problems(f_, getattr(self, f_.name)))
        if isinstance(self.output_name, str) and not safe_name(self.output_name):
            p.append(f"output_name (--output-name): {self.output_name!r} is not a safe folder name; "
                     "use letters, digits, '.', '_' and '-' only")
        if isinstance(self.truth_patterns, str) and not Path(self.truth_patterns).is_file():
            p.append(f"truth_patterns (--truth-patterns): {self.truth_patterns} is not a file")
        for d in self.data_path if isinstance(self.data_path, list) else []:
            if not Path(d).exists():
                p.append(f"data_path (--data-path): {d} does not exist; pass a JSONL file or a folder "
                         "of .jsonl files")
        if self.mine_preferences is True and self.objective == "sft":
            p.append("mine_preferences (--mine-preferences): mined pairs train a preference objective; "
                     "add --objective dpo (or orpo, kto)")
        if self.backend == "mlx" and isinstance(self.nproc, int) and self.nproc > 1:
            p.append("nproc (--nproc): the MLX backend trains in one process; use --backend torch")
        if self.objective in ("dpo", "orpo", "kto") and isinstance(self.nproc, int) and self.nproc > 1:
            p.append("nproc (--nproc): preference objectives train in one process; drop --nproc or use "
                     "--objective sft")
        p.extend(self._grpo_problems())
        p.extend(self._export_problems())
        p.extend(self._backend_problems())
        if isinstance(self.system_prompt, str) and '"""' in self.system_prompt:
            p.append('system_prompt (--system-prompt): contains three double quotes, which would end '
                     "the Modelfile SYSTEM block; rephrase it")
        p.extend(self._hpo_problems())
        if isinstance(self.output_dir, str):
            problem = writable_problem(Path(self.output_dir))
            if problem:
                p.append(f"output_dir (--output-dir): {problem}")
        return p

    def _export_problems(self) -> list[str]:
        """Format and quantization combinations that would fail only after training."""
        import importlib.util

        if not (isinstance(self.export_formats, list) and isinstance(self.quantization, list)):
            return []
        p = []
        if self.onnx_int8 and "onnx" not in self.export_formats:
            p.append("onnx_int8 (--onnx-int8): only applies to the ONNX export; add onnx to --formats")
        gguf_out = {"gguf", "ollama"} & set(self.export_formats)
        k_quants = [q for q in self.quantization if "_k" in q]
        if gguf_out and k_quants and importlib.util.find_spec("llama_cpp") is None:
            p.append(f"quantization (--quantization): {', '.join(k_quants)} need llama-cpp-python "
                     "(CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install 'iceburg[llama]'); or choose "
                     "q8_0, q4_0, f16")
        return p

    def _grpo_problems(self) -> list[str]:
        """GRPO settings that would fail only after the data is prepared (docs/grpo.md)."""
        p = []
        used = [flag_of(k) for k in ("reward", "reward_weights", "grpo_sample_dtype", "grpo_eval_samples")
                if getattr(self, k)]
        if self.objective != "grpo":
            return [f"{f}: only applies to --objective grpo" for f in used]
        if isinstance(self.nproc, int) and self.nproc > 1:
            p.append("nproc (--nproc): --objective grpo trains in one process (its step samples and scores "
                     "answers on one rank; sharding groups over ranks is not built); drop --nproc")
        for spec in self.reward if isinstance(self.reward, list) else []:
            mod, _, fn = str(spec).partition(":")
            if not mod or not fn:
                p.append(f"reward (--reward): {spec!r} is not module:function, e.g. --reward my_rewards:length")
        for item in self.reward_weights if isinstance(self.reward_weights, list) else []:
            name, eq, w = str(item).partition("=")
            try:
                float(w)
            except ValueError:
                eq = ""
            if not eq or not name:
                p.append(f"reward_weights (--reward-weights): {item!r} is not NAME=WEIGHT, e.g. tool_call=2")
        return p

    def _hpo_problems(self) -> list[str]:
        p = []
        if self.hpo is None:
            used = [flag_of(k) for k in ("hpo_storage", "hpo_resume") if getattr(self, k)]
            used += ["--hpo-workers"] if self.hpo_workers != 1 else []
            p += [f"{f}: only applies to a hyperparameter search; add --hpo N" for f in used]
        else:
            if self.resume is True:
                p.append("resume (--resume): resumes one run; to continue a search use --hpo-resume")
            if self.hpo_resume is True and not self.output_name:
                p.append("hpo_resume (--hpo-resume): needs --output-name, the study folder to continue")
            if isinstance(self.hpo_storage, str) and "://" not in self.hpo_storage:
                problem = writable_problem(Path(self.hpo_storage).parent)
                if problem:
                    p.append(f"hpo_storage (--hpo-storage): {problem}")
        return p

    def _backend_problems(self) -> list[str]:
        import importlib.util

        p = []
        if self.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            p.append("attn_implementation (--attn-implementation): flash_attention_2 needs the flash-attn "
                     "package (CUDA): pip install flash-attn --no-build-isolation; or use sdpa")
        if self.use_liger is True and isinstance(self.nproc, int) and self.nproc > 1:
            p.append("use_liger (--liger): the fused loss bypasses the DDP/FSDP wrapper's forward, so it "
                     "runs in one process; drop --nproc or --liger")
        if self.use_liger is True and importlib.util.find_spec("liger_kernel") is None:
            p.append("use_liger (--liger): liger-kernel is not installed (CUDA only): "
                     "pip install liger-kernel==0.8.5")
        if self.backend != "mlx":
            return p
        p += [f"backend (--backend mlx): {what} runs on torch only; use --backend torch"
              for what, on in (("--qlora", self.use_qlora), ("--dora", self.use_dora), ("--liger", self.use_liger),
                               ("--attn-implementation flash_attention_2",
                                self.attn_implementation == "flash_attention_2"),
                               ("--grpo-sample-dtype", self.grpo_sample_dtype)) if on]
        if importlib.util.find_spec("mlx_lm") is None:
            p.append("backend (--backend mlx): mlx-lm is not installed: pip install mlx mlx-lm (Linux: "
                     "pip install 'mlx[cpu]==0.32.4' 'mlx-lm==0.32.2')")
        return p

    def resolved_backend(self) -> str:
        """torch or mlx: `auto` is mlx on Apple silicon with mlx-lm installed, unless the run asks for
        something only the torch backend does (QLoRA, DoRA, Liger, flash attention). Resuming a checkpoint with the other
        backend is refused by its loader (checkpoint/state.json "format")."""
        import importlib.util
        import platform

        if self.backend != "auto":
            return self.backend
        apple = platform.system() == "Darwin" and platform.machine() == "arm64"
        torch_only = bool(self.use_qlora or self.use_dora or self.use_liger or self.grpo_sample_dtype
                          or self.attn_implementation == "flash_attention_2")
        return "mlx" if apple and not torch_only and importlib.util.find_spec("mlx_lm") else "torch"

    def validate(self) -> "TrainingConfig":
        probs = self.problems()
        if probs:
            raise ConfigError(probs)
        return self

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Flat key -> value (config.json in a run folder; `nest_sections` gives the YAML form)."""
        out = {}
        for f_ in dataclasses.fields(self):
            v = getattr(self, f_.name)
            out[f_.name] = v.value if isinstance(v, ModelType) else v
        return out

    def section(self, name: str) -> dict[str, Any]:
        """The keys of one section and their values (`cfg.section("train")["epochs"]`)."""
        if name not in SECTIONS:
            raise KeyError(f"unknown config section {name!r}; sections: {', '.join(SECTIONS)}")
        flat = self.to_dict()
        return {k: flat[k] for k in SECTIONS[name]}

    def to_yaml(self, only: dict[str, Any] | None = None) -> str:
        """The YAML form, grouped by section (`only`: write just these keys, e.g. a search's overrides)."""
        import yaml

        return yaml.safe_dump(nest_sections(self.to_dict() if only is None else only), sort_keys=False)

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
        flat, problems = cls.yaml_values(path)
        if problems:
            raise ConfigError(problems)
        return cls.from_dict(flat, source=str(path))

    @classmethod
    def yaml_values(cls, path: str | Path) -> tuple[dict[str, Any], list[str]]:
        """(the known keys' values, the key problems: unknown keys, keys in the wrong section) of a
        YAML config, so the command line can report them together with the values' problems."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"--config {path}: no such file; pass a YAML file of config keys "
                               "(see docs/ARCHITECTURE.md or iceburg-train --help)"])
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            mark = getattr(e, "problem_mark", None)
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ConfigError([f"--config {path}: not valid YAML{at}: "
                               f"{getattr(e, 'problem', None) or e}"]) from None
        if not isinstance(data, dict):
            raise ConfigError([f"{path}: expected a mapping of config keys at the top level"])
        flat, problems, old = flatten_sections(data, str(path))
        names = {f_.name for f_ in dataclasses.fields(cls)}
        problems += [f"{path}: unknown key {k!r}; valid keys: {', '.join(sorted(names))}"
                     for k in sorted(set(flat) - names)]
        known_old = [k for k in old if any(k in names for names in SECTIONS.values())]
        if known_old:
            import logging

            logging.getLogger(__name__).warning(
                "%s: flat keys are deprecated; group them by section (%s), e.g. %s", path,
                ", ".join(known_old[:5]) + (" ..." if len(known_old) > 5 else ""),
                " / ".join(f"{section_of(k)}: {{{k}: ...}}" for k in known_old[:2]))
        return {k: v for k, v in flat.items() if k in names}, problems

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


def safe_name(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name)) and ".." not in name


def writable_problem(folder: Path) -> str | None:
    """Why `folder` cannot be created or written (None when it can): checked before any work so a
    run never trains for minutes and then fails to save."""
    import os

    probe = Path(folder).resolve()
    while not probe.exists():
        if probe.parent == probe:
            return f"{folder}: no existing parent folder"
        probe = probe.parent
    if not probe.is_dir():
        return f"{folder}: {probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{folder}: {probe} is not writable; choose another folder"
    return None


def flag_of(name: str) -> str:
    """The CLI flag of a config key (for messages); config-only keys are named as keys."""
    for f_ in dataclasses.fields(TrainingConfig):
        if f_.name == name:
            return f_.metadata.get("flag") or name
    raise KeyError(name)


def _field_problems(f_: dataclasses.Field, v: Any) -> list[str]:
    md = f_.metadata
    label = f"{f_.name} ({md['flag']})" if md.get("flag") else f_.name
    if f_.name == "model_type":
        if isinstance(v, ModelType):
            return []
        return [f"{label}: unknown value {v!r}; choose one of " + ", ".join(m.short for m in ModelType)]
    if v is None and "None" in str(f_.type):
        return []
    kind = str(f_.type).replace(" | None", "")
    if kind == "int" and (not isinstance(v, int) or isinstance(v, bool)):
        return [f"{label}: must be an integer, got {v!r}"]
    if kind == "float" and (not isinstance(v, (int, float)) or isinstance(v, bool)):
        return [f"{label}: must be a number, got {v!r}"]
    if kind == "bool" and not isinstance(v, bool):
        return [f"{label}: must be true or false, got {v!r}"]
    if kind == "str" and not isinstance(v, str):
        return [f"{label}: must be a string, got {v!r}"]
    if kind == "list[str]":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            return [f"{label}: must be a list of strings, got {v!r}"]
        bad = [x for x in v if md.get("choices") and x not in md["choices"]]
        if bad:
            return [f"{label}: unknown value(s) {', '.join(map(repr, bad))}; choose from "
                    + ", ".join(md["choices"])]
        return []
    if md.get("choices") and v not in md["choices"]:
        return [f"{label}: unknown {v!r}; choose one of {', '.join(md['choices'])}"]
    lo_ex, hi_ex = "min_exclusive" in md, "max_exclusive" in md
    lo, hi = md.get("min", md.get("min_exclusive")), md.get("max", md.get("max_exclusive"))
    if kind in ("int", "float") and (lo is not None or hi is not None):
        too_low = lo is not None and (v <= lo if lo_ex else v < lo)
        too_high = hi is not None and (v >= hi if hi_ex else v > hi)
        if too_low or too_high:
            if lo is not None and hi is not None:
                rng = f"in {'(' if lo_ex else '['}{lo}, {hi}{')' if hi_ex else ']'}"
            elif lo is not None:
                rng = f"{'>' if lo_ex else '>='} {lo}"
            else:
                rng = f"{'<' if hi_ex else '<='} {hi}"
            return [f"{label}: must be {rng}, got {v!r}"]
    return []


def config_help() -> dict[str, str]:
    return {f_.name: f_.metadata.get("help", "") for f_ in dataclasses.fields(TrainingConfig)}
