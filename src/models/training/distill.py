"""Distillation: a smaller student of a local chat model, trained on the teacher's own outputs.

`companion compress distill TEACHER --name NEW` (= `distill`):

1. **Data: the teacher's replies** (sequence-level knowledge distillation, Kim & Rush 2016).
   The teacher answers prompts (`--prompts FILE`, one per line or JSONL with `messages`;
   by default the user lines of the package's writing-assistant dialogues), several samples
   each, with an emotion token drawn in turn when its template has them, so the student
   learns emotion control too. One prompt in ten (by a stable hash) is held out.
2. **Student**: the teacher's shape with fewer layers (`--layers`, default half) and,
   optionally, a narrower width (`--hidden`). At the teacher's width it starts from the
   teacher's embeddings, final norm and evenly spaced layers (layer dropping, as DistilBERT
   initialises from every other layer); narrower, from scratch. Same tokenizer and template.
3. **Loss**: on every position of the teacher's sequences, `alpha` × T² × KL(teacher ‖
   student) at temperature T (Hinton et al. 2015) plus (1 − `alpha`) × cross-entropy on the
   sampled tokens; AdamW, cosine decay, the best held-out state kept.
4. **Report and publish**: one table, teacher against student: parameters, size on disk,
   decoding tokens/s (the `fast` engine, greedy, same threads, best of 3) and held-out
   perplexity of the replies (reply tokens only); the student is published as a normal
   versioned base model (`base/NAME`) with the teacher, method and table in its lineage.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.errors import DataError, TrainingError

__all__ = ["DistillResult", "DistillSettings", "default_prompts", "distill"]

#: Files of the teacher's folder that the student keeps (the weights and records are its own).
_OWN = {"model.safetensors", "config.json", "manifest.json", "companion.json", "generation_config.json"}


@dataclass
class DistillSettings:
    layers: int | None = None
    """Student layers (default: half the teacher's, at least 1)."""
    hidden: int | None = None
    """Student width (default: the teacher's; narrower starts from scratch)."""
    samples_per_prompt: int = 2
    max_new_tokens: int = 48
    temperature: float = 0.8
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    alpha: float = 0.5
    kd_temperature: float = 2.0
    eval_every: int = 50
    minutes: float | None = None
    seed: int = 0
    threads: int | None = None


@dataclass
class DistillResult:
    name: str
    version: str | None
    folder: str
    table: list[dict[str, Any]]
    steps: int
    train_sequences: int
    heldout_sequences: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "folder": self.folder, "table": self.table,
            "steps": self.steps, "train_sequences": self.train_sequences,
            "heldout_sequences": self.heldout_sequences, "seconds": round(self.seconds, 1), "history": self.history,
        }  # fmt: skip


def default_prompts() -> list[str]:
    """The user lines of the package's writing-assistant dialogues (the seed's training data)."""
    from importlib import resources

    folder = Path(str(resources.files("models") / "training_data" / "writing_assistant" / "character_data"))
    prompts = []
    for f in sorted(folder.glob("*_dialogue.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                ctx = str(json.loads(line).get("context") or "").strip()
                if ctx:
                    prompts.append(ctx)
    return list(dict.fromkeys(prompts))


def read_prompts(path: str | Path) -> list[list[dict[str, str]]]:
    """Prompts from a file: one user message per line, or JSONL with `messages` (or `prompt`)."""
    path = Path(path)
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{i}: not JSON ({exc})") from None
            msgs = row.get("messages") or [{"role": "user", "content": str(row.get("prompt", ""))}]
            if not isinstance(msgs, list) or not all(isinstance(m, dict) and "content" in m for m in msgs):
                raise DataError(f"{path}:{i}: messages must be a list of {{role, content}}")
            out.append([{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in msgs])
        else:
            out.append([{"role": "user", "content": line}])
    if not out:
        raise DataError(f"{path}: no prompts")
    return out


def _heldout(messages: Sequence[dict[str, str]]) -> bool:
    key = json.dumps(list(messages), sort_keys=True).encode()
    return int(hashlib.sha256(key).hexdigest()[:8], 16) % 10 == 0


def teacher_samples(
    engine: Any, prompts: Sequence[list[dict[str, str]]], s: DistillSettings
) -> tuple[list[tuple[list[int], int]], list[tuple[list[int], int]]]:
    """(train, held-out) sequences: the prompt's ids + the teacher's reply and end-of-turn
    marker, with where the reply starts."""
    from models.engines.base import SamplingParams
    from models.tokens import EMOTIONS

    emotions = list(EMOTIONS) if engine.codec.has_emotion_tokens else [None]
    train, held = [], []
    for i, messages in enumerate(prompts):
        emotion = emotions[i % len(emotions)]
        params = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=0.95,
                                seed=s.seed * 100_003 + i, emotion=emotion)  # fmt: skip
        ids, _suppress = engine.prompt_ids(messages, params)
        codec = engine.codec
        end = codec.token_id("<|end|>") if codec.token_id("<|end|>") is not None else codec.eos_id  # the turn's end
        for c in engine.sample_many(messages, params, s.samples_per_prompt):
            reply = engine.codec.encode(c.text, add_bos=False)
            if not reply:
                continue
            seq = ids + reply + ([end] if c.finish_reason == "stop" and end is not None else [])
            (held if _heldout(messages) else train).append((seq[: engine.max_positions], len(ids)))
    if not train or not held:
        raise TrainingError(
            f"the teacher gave too few replies to learn from ({len(train)} train, {len(held)} held out)"
        )
    return train, held


def student_from(teacher: Any, layers: int, hidden: int | None, seed: int) -> Any:
    """The student: fewer (evenly spaced) teacher layers, or a narrower model from scratch."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = teacher.config.to_dict()
    n = teacher.config.num_hidden_layers
    if not 1 <= layers <= n:
        raise TrainingError(f"--layers: the teacher has {n} layers; the student may have 1 to {n}")
    cfg["num_hidden_layers"] = layers
    torch.manual_seed(seed)
    if hidden is not None and hidden != teacher.config.hidden_size:
        heads = teacher.config.num_attention_heads
        if hidden % heads or hidden >= teacher.config.hidden_size:
            raise TrainingError(f"--hidden {hidden}: narrower than the teacher's {teacher.config.hidden_size} "
                                f"and a multiple of its {heads} heads")  # fmt: skip
        scale = hidden / teacher.config.hidden_size
        cfg.update(hidden_size=hidden, head_dim=hidden // heads,
                   intermediate_size=round(teacher.config.intermediate_size * scale / 32) * 32)  # fmt: skip
        return LlamaForCausalLM(LlamaConfig(**cfg))
    student = LlamaForCausalLM(LlamaConfig(**cfg))
    keep = [round(i * (n - 1) / max(1, layers - 1)) for i in range(layers)] if layers > 1 else [n - 1]
    state = teacher.state_dict()
    own = {}
    for key in student.state_dict():
        if key.startswith("model.layers."):
            i, rest = key[len("model.layers.") :].split(".", 1)
            own[key] = state[f"model.layers.{keep[int(i)]}.{rest}"]
        else:
            own[key] = state[key]
    student.load_state_dict(own)
    return student


def _batch(seqs: Sequence[tuple[list[int], int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids (B, T), attention mask, and the reply mask (positions whose next token is the reply)."""
    width = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    reply = torch.zeros((len(seqs), width - 1), dtype=torch.bool)
    for i, (s, start) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
        reply[i, start - 1 : len(s) - 1] = True
    return ids, attn, reply


def _kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, ids: torch.Tensor, attn: torch.Tensor,
             alpha: float, temp: float) -> torch.Tensor:  # fmt: skip
    s, t = student_logits[:, :-1].float(), teacher_logits[:, :-1].float()
    mask = attn[:, 1:].bool()
    kl = F.kl_div(F.log_softmax(s / temp, -1), F.log_softmax(t / temp, -1), log_target=True, reduction="none").sum(-1)
    ce = F.cross_entropy(s.transpose(1, 2), ids[:, 1:], reduction="none")
    per = alpha * temp * temp * kl + (1 - alpha) * ce
    return (per * mask).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def reply_perplexity(model: Any, seqs: Sequence[tuple[list[int], int]], pad: int, batch: int = 16) -> float:
    """Perplexity per reply token (the end-of-turn marker included) of `seqs` under `model`."""
    model.eval()
    nll, count = 0.0, 0
    for i in range(0, len(seqs), batch):
        ids, attn, reply = _batch(seqs[i : i + batch], pad)
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
        loss = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        nll += float(loss[reply].sum())
        count += int(reply.sum())
    return math.exp(nll / max(1, count))


def decode_speed(folder: Path, threads: int, tokens: int = 64) -> float:
    """Greedy decoding tokens/s of the model in `folder` on the `fast` engine (best of 3)."""
    from models.engines.base import SamplingParams
    from models.engines.llama.engine import FastEngine

    engine = FastEngine(folder, threads=threads)
    params = SamplingParams(max_new_tokens=tokens, temperature=0.0)
    ids = engine.codec.encode("It was a dark and stormy night; the lighthouse", add_bos=True)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        n = sum(1 for _ in engine.stream_ids(ids, params, suppress=engine.codec.chat_control_ids))
        n = engine.last_stats.completion_tokens or n
        best = max(best, n / (time.perf_counter() - t0))
    return best


def _write_student(student: Any, teacher_folder: Path, out: Path, name: str, lineage: dict[str, Any]) -> None:
    from models.fileio import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    for item in teacher_folder.iterdir():
        if item.is_file() and item.name not in _OWN:
            shutil.copy2(item, out / item.name)
    student.save_pretrained(out, safe_serialization=True)
    meta = (
        json.loads((teacher_folder / "companion.json").read_text())
        if (teacher_folder / "companion.json").exists()
        else {}
    )
    keep = {k: meta[k] for k in ("format", "kind", "chat_template", "emotion_tokens", "emotion_control") if k in meta}
    atomic_write_json(
        out / "companion.json", {"format": "companion-model/1", **keep, "name": name, "distilled": lineage}
    )


def distill(
    teacher: str,
    name: str,
    *,
    prompts: str | Path | None = None,
    settings: DistillSettings | None = None,
    publish: bool = True,
    user: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> DistillResult:
    """Distil local model `teacher` into a smaller student, published as `base/NAME` (see the
    module docstring)."""
    from transformers import LlamaForCausalLM

    from models.engines.llama.engine import FastEngine
    from models.training.publish import resolve_target, run_folder

    s = settings or DistillSettings()
    say = progress or (lambda _msg: None)
    t0 = time.time()
    if s.steps < 1 or s.batch_size < 1 or not 0 <= s.alpha <= 1 or s.kd_temperature <= 0:
        raise TrainingError("steps and batch size must be at least 1, alpha within 0..1, the KD temperature > 0")
    (category, tname), served, folder = _teacher_folder(teacher)
    vc, sname = resolve_target(name, "base", user, "distill") if publish else (None, name)
    threads = s.threads or torch.get_num_threads()
    torch.set_num_threads(threads)

    engine = FastEngine(folder, threads=threads)
    msgs = read_prompts(prompts) if prompts else [[{"role": "user", "content": p}] for p in default_prompts()]
    say(f"the teacher answers {len(msgs)} prompts, {s.samples_per_prompt} samples each")
    train, held = teacher_samples(engine, msgs, s)
    pad = engine.codec.pad_id or 0
    del engine

    t_model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    for p in t_model.parameters():
        p.requires_grad_(False)
    layers = s.layers or max(1, t_model.config.num_hidden_layers // 2)
    student = student_from(t_model, layers, s.hidden, s.seed)
    step, history = _fit_student(student, t_model, train, held, pad, s, say)

    run_dir = run_folder(None, f"distill-{sname}", resume=False)
    stage = run_dir / "student"
    if stage.exists():
        shutil.rmtree(stage)
    lineage = {
        "recipe": "distill", "teacher": f"{category}/{tname}", "teacher_version": served.version,
        "method": "sequence-level KD on the teacher's samples + logit KD (KL at T) and cross-entropy",
        "alpha": s.alpha, "kd_temperature": s.kd_temperature, "layers": layers,
        "hidden": s.hidden or t_model.config.hidden_size,
        "init": "teacher layers (layer dropping)" if not s.hidden else "random (narrower than the teacher)",
        "prompts": str(prompts) if prompts else "package writing-assistant dialogues",
        "samples_per_prompt": s.samples_per_prompt, "steps": step, "seed": s.seed,
    }  # fmt: skip
    _write_student(student, folder, stage, sname, lineage)
    say("measuring teacher and student (size, tokens/s, held-out perplexity)")
    table = [
        _measure(who, model, path, held, pad, threads)
        for who, model, path in (("teacher", t_model, folder), ("student", student, stage))
    ]
    version = _publish_student(vc, sname, run_dir, stage, lineage, table) if publish else None
    return DistillResult(sname, version, str(stage), table, step, len(train), len(held), time.time() - t0, history)


def _publish_student(
    vc: Any, sname: str, run_dir: Path, stage: Path, lineage: dict[str, Any], table: list[dict[str, Any]]
) -> str:
    """The staged student as a new version of `base/NAME`, its lineage carrying the measured table."""
    from models.training.publish import publish_version

    lineage["table"] = table

    def write(dest: Path) -> None:
        for item in stage.iterdir():
            shutil.copy2(item, dest / item.name)

    metrics = {"heldout_perplexity": table[1]["heldout_perplexity"], "tokens_per_s": table[1]["tokens_per_s"],
               "size_mb": table[1]["size_mb"], "teacher_perplexity": table[0]["heldout_perplexity"]}  # fmt: skip
    why = f"distilled from {lineage['teacher']}: {lineage['layers']} layers, {lineage['steps']} steps"
    return publish_version(vc, f"base/{sname}", run_dir, write, why, lineage, metrics)


def _teacher_folder(teacher: str) -> tuple[tuple[str, str], Any, Path]:
    """(category, name), the served entry and the local folder of `teacher`; a model without
    local weights cannot teach by its logits."""
    from models.model_manager import ModelManager

    manager = ModelManager()
    category, tname = manager.find(teacher) if "/" not in teacher else tuple(teacher.split("/", 1))
    served = manager.resolve(category, tname)
    if served.folder is None or not (served.folder / "config.json").exists():
        raise TrainingError(f"{teacher}: distillation needs a local model folder (config.json + safetensors)")
    return (category, tname), served, Path(served.folder)


def _fit_student(
    student: Any,
    t_model: Any,
    train: list[Any],
    held: list[Any],
    pad: int,
    s: DistillSettings,
    say: Callable[[str], None],
) -> tuple[int, list[dict[str, Any]]]:
    """Train `student` on the teacher's logits for `s.steps` steps (or `s.minutes`), keeping the
    weights with the best held-out reply perplexity; the last step and the evaluation history."""
    rng = random.Random(s.seed)
    opt = torch.optim.AdamW(student.parameters(), lr=s.lr, betas=(0.9, 0.95), weight_decay=0.01)
    warm = max(1, s.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, i / s.steps))))
    )
    best, best_state, history = float("inf"), None, []
    deadline = time.time() + 60 * s.minutes if s.minutes else None
    step = 0
    for step in range(1, s.steps + 1):
        student.train()
        ids, attn, _ = _batch(rng.sample(train, min(s.batch_size, len(train))), pad)
        with torch.no_grad():
            t_logits = t_model(input_ids=ids, attention_mask=attn).logits
        loss = _kd_loss(student(input_ids=ids, attention_mask=attn).logits, t_logits, ids, attn, s.alpha,
                        s.kd_temperature)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        last = step == s.steps or (deadline is not None and time.time() > deadline)
        if step % s.eval_every == 0 or last:
            ppl = reply_perplexity(student, held, pad)
            history.append({"step": step, "loss": round(loss_value, 4), "heldout_perplexity": round(ppl, 3)})
            say(f"step {step}/{s.steps}: loss {loss_value:.3f}, held-out reply perplexity {ppl:.2f}")
            if ppl < best:
                best, best_state = ppl, {k: v.detach().clone() for k, v in student.state_dict().items()}
        if last:
            break
    if best_state is not None:
        student.load_state_dict(best_state)
    return step, history


def _measure(who: str, model: Any, path: Path, held: list[Any], pad: int, threads: int) -> dict[str, Any]:
    """One row of the teacher/student table: size, decoding speed, held-out reply perplexity."""
    return {
        "model": who,
        "parameters": sum(p.numel() for p in model.parameters()),
        "size_mb": round((path / "model.safetensors").stat().st_size / 1e6, 2),
        "tokens_per_s": round(decode_speed(path, threads), 1),
        "heldout_perplexity": round(reply_perplexity(model, held, pad), 3),
    }
