"""`companion doctor`: the seed's "Support" checklist, made executable.

1. model loading and initialization   2. training data quality and format
3. performance metrics (database)      4. model configuration   5. framework integration
Each check says what is wrong and how to fix it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CheckResult", "run_checks"]


@dataclass
class CheckResult:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str | None = None


def _check(name: str, fn: Callable[[], CheckResult]) -> CheckResult:
    try:
        return fn()
    except Exception as exc:  # a doctor reports, it does not crash
        return CheckResult(name, "fail", f"{type(exc).__name__}: {exc}", "see the error above")


def _environment() -> CheckResult:
    import torch

    from models.home import companion_home

    home = companion_home()
    probe = home / ".doctor-write-test"
    probe.write_text("ok")
    probe.unlink()
    free = shutil.disk_usage(home).free / 2**30
    detail = f"python {sys.version.split()[0]}, torch {torch.__version__}, home {home} ({free:.1f} GiB free)"
    if free < 1:
        return CheckResult("environment", "warn", detail, "free disk space: training and versions need room")
    return CheckResult("environment", "ok", detail)


def _config() -> CheckResult:
    from models.model_manager import ModelManager

    cfg = ModelManager().config
    n = sum(len(cfg.names(c)) for c in cfg.categories())
    return CheckResult("configuration", "ok", f"{n} models from {', '.join(cfg.files)}")


def _models() -> CheckResult:
    from models.errors import CompanionError
    from models.model_manager import ModelManager, resolve_path

    mgr = ModelManager()
    problems, ok = [], 0
    for info in mgr.list_models():
        try:
            resolve_path(
                info.path,
                mgr.config.base_dir(info.category, info.name),
                config=mgr.config,
                hint=(info.category, info.name),
            )
            ok += 1
        except CompanionError as exc:
            problems.append(f"{info.category}/{info.name}: {exc}")
    if problems:
        return CheckResult(
            "model paths", "fail", "; ".join(problems), "fix the path in config.yaml, or train/publish the model"
        )
    return CheckResult("model paths", "ok", f"{ok} model paths resolve")


def _loading() -> CheckResult:
    from models.model_manager import ModelManager

    mgr = ModelManager()
    t0 = time.perf_counter()
    model = mgr.load_model("base", "companion-base")
    load = time.perf_counter() - t0
    text = model.generate("The", max_length=8, seed=0)
    if not text.strip():
        return CheckResult(
            "model loading",
            "fail",
            "the embedded model generated nothing",
            "reinstall the package (its weights may be damaged)",
        )
    return CheckResult(
        "model loading",
        "ok",
        f"embedded model verified and loaded in {load * 1000:.0f} ms ({model.engine_name}); "
        f"generated {model.last_stats.completion_tokens} tokens",
    )


def _store() -> CheckResult:
    from models.store import ModelStore, verify_manifest

    store = ModelStore()
    versions = [(c, n, v) for c, n in store.list_models() for v in store.list_versions(c, n)]
    for c, n, v in versions:
        verify_manifest(store.version_dir(c, n, v), full=True)
    return CheckResult("store integrity", "ok", f"{len(versions)} stored versions, every file's sha256 verified")


def _database() -> CheckResult:
    from models.db import connect

    engine = connect()
    from sqlalchemy import text

    with engine.connect() as conn:
        version = conn.execute(text("SELECT MAX(version) FROM schema_migrations")).scalar()
    return CheckResult(
        "metrics database", "ok", f"{engine.url.render_as_string(hide_password=True)} at schema {version}"
    )


def _training_data() -> CheckResult:
    from importlib import resources

    root = resources.files("models") / "training_data" / "writing_assistant"
    if not root.is_dir():
        return CheckResult(
            "training data",
            "warn",
            "shipped writing_assistant samples not installed yet",
            "they ship with the data pipeline (issue 3)",
        )
    n = sum(1 for _ in os.walk(str(root)))
    return CheckResult("training data", "ok", f"writing_assistant samples present ({n} folders)")


def _framework() -> CheckResult:
    try:
        from framework.framework_tool import get_framework
    except ImportError:
        return CheckResult(
            "framework integration",
            "warn",
            "framework plugins not installed yet",
            "they ship with the personality engine (issue 5)",
        )
    fw = get_framework()
    return CheckResult("framework integration", "ok", f"framework ready: {type(fw).__name__}")


def _engines() -> CheckResult:
    """Which engines can run here: llama.cpp for .gguf files is an optional compiled extra."""
    from models.engines import engine_names
    from models.engines.llamacpp import llama_cpp_available

    names = ", ".join(engine_names())
    version = llama_cpp_available()
    if version is None:
        return CheckResult(
            "engines",
            "warn",
            f"engines: {names}; llama.cpp (llama-cpp-python) is not installed, so .gguf files cannot run",
            "pip install 'companion-models[gguf]' (compiles llama.cpp, a few minutes)",
        )
    return CheckResult("engines", "ok", f"engines: {names}; llama.cpp via llama-cpp-python {version}")


def _federated() -> CheckResult:
    """Federated personalization (`companion federate`) needs the optional Flower extra."""
    from models.training.flower import flower_version

    version = flower_version()
    if version is None:
        return CheckResult(
            "federated learning",
            "warn",
            "Flower (flwr) is not installed, so `companion federate` cannot run",
            "pip install 'companion-models[federated]'",
        )
    return CheckResult("federated learning", "ok", f"`companion federate` ready: Flower {version}")


def _voice() -> CheckResult:
    """Spoken replies need the optional Piper extra and a voice the user installs."""
    from models.speech import installed_voices, piper_version

    version = piper_version()
    if version is None:
        return CheckResult("voice", "warn", "Piper (piper-tts) is not installed: replies cannot be spoken",
                           "pip install 'companion-models[voice]', then companion voices add FILE.onnx")  # fmt: skip
    names = [v["name"] for v in installed_voices()]
    if not names:
        return CheckResult("voice", "warn", f"Piper {version}, but no voice is installed",
                           "companion voices add FILE.onnx (a Piper voice and its .onnx.json)")  # fmt: skip
    return CheckResult("voice", "ok", f"Piper {version}; voices: {', '.join(names)}")


CHECKS: list[tuple[str, Callable[[], CheckResult]]] = [
    ("environment", _environment),
    ("configuration", _config),
    ("model paths", _models),
    ("store integrity", _store),
    ("model loading", _loading),
    ("engines", _engines),
    ("federated learning", _federated),
    ("voice", _voice),
    ("metrics database", _database),
    ("training data", _training_data),
    ("framework integration", _framework),
]


def run_checks() -> list[CheckResult]:
    return [_check(name, fn) for name, fn in CHECKS]
