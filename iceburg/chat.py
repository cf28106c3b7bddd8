"""Talk to a trained model: `iceburg chat RUN_OR_MODEL [--prompt TEXT]`.

Two backends behind one `ChatModel` interface:
- `HfChatModel`: a Hugging Face folder (a run's `merged/`, any base folder or an embedded base name)
  with transformers; greedy decoding, streamed through `TextIteratorStreamer`.
- `GgufChatModel`: a `.gguf` file (a run's export, or any GGUF) with llama.cpp
  (llama-cpp-python), whose chat handler renders the file's own `tokenizer.chat_template`.

Both render the conversation with the model's own chat template, so the model sees exactly the
format it was trained on, and both report whether the answer ended with the end-of-turn token
(`Answer.stopped`) or ran out of budget: the stop rate `iceburg eval` measures.
A run folder gives the run's system prompt (the model type's, the Modelfile's SYSTEM line).
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from .errors import IceburgError, MissingDependencyError

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]


@dataclass
class Answer:
    text: str
    stopped: bool  # ended with the end-of-turn token within the budget
    new_tokens: int


def decode_answers(tokenizer, rows: list[list[int]], eos) -> list[Answer]:
    """Generated token rows -> answers, each cut at its first end-of-turn token (`eos`: the ids
    that end a turn); `stopped` says whether one came within the budget."""
    answers = []
    for row in rows:
        stop_at = next((i for i, t in enumerate(row) if t in eos), None)
        kept = row if stop_at is None else row[:stop_at]
        answers.append(Answer(tokenizer.decode(kept, skip_special_tokens=True).strip(),
                              stopped=stop_at is not None, new_tokens=len(kept) + (stop_at is not None)))
    return answers


class ChatModel(Protocol):
    name: str
    system: str | None

    def answer(self, messages: Messages, max_new_tokens: int,
               on_text: Callable[[str], None] | None = None) -> Answer: ...


@dataclass
class ChatTarget:
    """What `iceburg chat X` resolved X to."""

    kind: str  # "hf" or "gguf"
    path: Path
    system: str | None  # the run's system prompt, None outside a run folder
    run_dir: Path | None = None


def run_system_prompt(run_dir: Path) -> str | None:
    """The system prompt a run's exports use (ExportContext.system: the model type's prompt)."""
    from .config import SYSTEM_PROMPTS, ModelType
    from .run_folder import RunFolder

    run = RunFolder(run_dir)
    cfg = run.read_json(run.config)
    if cfg is None:
        return None
    if cfg.get("system_prompt"):
        return cfg["system_prompt"]
    return SYSTEM_PROMPTS[ModelType.parse(cfg.get("model_type", "base"))]


def resolve_chat_target(spec: str | Path, gguf: bool = False) -> ChatTarget:
    """A run folder (its merged model, or with `gguf` its first GGUF export), a HF folder, a .gguf
    file, or any base model name `resolve_base_model` knows (e.g. `smollm2-135m`)."""
    from .run_folder import RunFolder

    path = Path(spec).expanduser()
    run = RunFolder(path)
    if path.is_dir() and run.config.is_file() and run.is_run():
        system = run_system_prompt(path)
        if gguf:
            files = sorted(run.exports.glob("**/*.gguf"))
            if not files:
                raise IceburgError(f"{path}: the run has no GGUF export (exports/**/*.gguf); export one with "
                                   f"`iceburg-train --export-only {path} --formats gguf`, or drop --gguf")
            return ChatTarget("gguf", files[0], system, path)
        return ChatTarget("hf", run.merged, system, path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ChatTarget("gguf", path, None)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise IceburgError(f"{path}: neither a run folder (config.json + merged/) nor a Hugging Face "
                               "model folder (config.json); pass a run folder, a model folder or a .gguf file")
        return ChatTarget("hf", path, None)
    from .base_models import resolve_base_model

    return ChatTarget("hf", resolve_base_model(str(spec)).path, None)


def load_chat_model(target: ChatTarget, threads: int | None = None) -> ChatModel:
    if target.kind == "gguf":
        return GgufChatModel(target.path, target.system, threads=threads)
    return HfChatModel(target.path, target.system, threads=threads)


class HfChatModel:
    """transformers backend: greedy decoding with the folder's chat template and EOS ids."""

    def __init__(self, folder: Path, system: str | None = None, threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .training.encoding import ensure_chat_template, eos_ids

        if threads:
            torch.set_num_threads(threads)
        self.name, self.system = str(folder), system
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        ensure_chat_template(self.tokenizer)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
        self.model.eval()
        gen = self.model.generation_config
        self.eos = sorted(eos_ids(self.tokenizer, gen))

    def _prompt_ids(self, messages: Messages) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False)

    def answer(self, messages: Messages, max_new_tokens: int,
               on_text: Callable[[str], None] | None = None) -> Answer:
        return self.answer_batch([messages], max_new_tokens, on_text)[0]

    def answer_batch(self, conversations: list[Messages], max_new_tokens: int,
                     on_text: Callable[[str], None] | None = None) -> list[Answer]:
        """Greedy answers to several conversations in one left-padded batch (CPU decoding is
        memory-bound, so a batch of 8 costs little more than one). Streams only a single answer."""
        import torch
        from transformers import TextIteratorStreamer

        prompts = [self._prompt_ids(m) for m in conversations]
        width = max(map(len, prompts))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos[0]
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        kwargs = dict(input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens, do_sample=False,
                      eos_token_id=self.eos, pad_token_id=pad, top_p=None, top_k=None, temperature=None)
        if on_text is not None and len(prompts) == 1:
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            result: dict = {}

            def run() -> None:
                with torch.no_grad():
                    result["out"] = self.model.generate(**kwargs, streamer=streamer)

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            for piece in streamer:
                on_text(piece)
            thread.join()
            out = result["out"]
        else:
            with torch.no_grad():
                out = self.model.generate(**kwargs)
        return decode_answers(self.tokenizer, out[:, width:].tolist(), self.eos)


class GgufChatModel:
    """llama.cpp backend: the GGUF's own chat template (llama-cpp-python's Jinja chat handler)."""

    def __init__(self, path: Path, system: str | None = None, threads: int | None = None, n_ctx: int = 2048):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise MissingDependencyError("llama-cpp-python (to chat with a GGUF)", "pip install 'iceburg[llama]'") from exc
        self.name, self.system = str(path), system
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, verbose=False, seed=0)

    def answer(self, messages: Messages, max_new_tokens: int,
               on_text: Callable[[str], None] | None = None) -> Answer:
        stream = self.llm.create_chat_completion(messages=messages, max_tokens=max_new_tokens, temperature=0.0,
                                                 top_k=1, stream=True)
        parts, finish, pieces = [], None, 0
        for chunk in stream:
            choice = chunk["choices"][0]
            piece = choice.get("delta", {}).get("content") or ""
            if piece:
                parts.append(piece)
                pieces += 1
                if on_text is not None:
                    on_text(piece)
            finish = choice.get("finish_reason") or finish
        text = "".join(parts)
        return Answer(text.strip(), stopped=finish == "stop", new_tokens=len(self.llm.tokenize(text.encode(),
                                                                                                 add_bos=False)))


def with_system(messages: Messages, system: str | None) -> Messages:
    if system and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system}, *messages]
    return messages


def chat_loop(model: ChatModel, max_new_tokens: int, stdin=sys.stdin, stdout=sys.stdout) -> None:
    """Interactive terminal chat; an empty line or EOF (Ctrl-D) ends it, `/reset` starts over."""
    history: Messages = []
    stdout.write(f"chatting with {model.name} (empty line or Ctrl-D to quit, /reset to start over)\n")
    while True:
        stdout.write("> ")
        stdout.flush()
        line = stdin.readline()
        if not line or not line.strip():
            return
        if line.strip() == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": line.strip()})
        ans = model.answer(with_system(history, model.system), max_new_tokens,
                           on_text=lambda t: (stdout.write(t), stdout.flush()))
        stdout.write("\n" if ans.stopped else f"\n[stopped at the {max_new_tokens}-token budget]\n")
        history.append({"role": "assistant", "content": ans.text})
