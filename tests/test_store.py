"""The model store: names, safety refusals, manifests, atomic publishing, locks and crashes."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from models import integrity as integrity_mod
from models import store as store_mod
from models.errors import (
    IntegrityError,
    InvalidModelName,
    ModelNotFoundError,
    StoreError,
    UnsafeFileError,
)
from models.store import (
    ModelStore,
    check_safe_files,
    hash_folder,
    validate_name,
    validate_version,
    verify_manifest,
    write_manifest,
)

CAT, NAME = "personality", "luna"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("COMPANION_HOME", str(home))
    return home


@pytest.fixture
def store(home: Path) -> ModelStore:
    return ModelStore()


def make_model(folder: Path, seed: int = 0, size: int = 12) -> Path:
    """A tiny HF-like model folder: safetensors weights, a config and a nested adapter."""
    (folder / "adapter").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file({"w": rng.standard_normal((size, 4)).astype(np.float32)}, folder / "model.safetensors")
    save_file({"a": np.ones((2, 2), dtype=np.float16)}, folder / "adapter/adapter_model.safetensors")
    (folder / "config.json").write_text(json.dumps({"hidden_size": 4, "seed": seed}))
    return folder


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_model(tmp_path / "src")


def store_files(home: Path) -> list[Path]:
    """Every file or folder under the store (the refusal tests expect none)."""
    root = home / "store"
    return sorted(root.rglob("*")) if root.exists() else []


def writable(folder: Path) -> Path:
    store_mod._make_writable(folder)
    return folder


# -- names and versions -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["luna", "luna_personality", "gpt2-small", "v1.5", "0"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


BAD_NAMES = ["../x", "/etc", "Luna", "a/b", "", "..", ".", "x.tmp", "x.lock", ".hidden", "a b"]


@pytest.mark.parametrize("name", [*BAD_NAMES, "a" * 65, "é", "x\n", None])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidModelName, match="invalid model name"):
        validate_name(name)


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.0.0", "1.0.0+build", "1.0.0-RC1", "x"])
def test_invalid_versions_are_refused(version: str) -> None:
    with pytest.raises(StoreError, match="semver"):
        validate_version(version)


def test_bad_category_and_traversal_refused_before_writing(store: ModelStore, source: Path, home: Path) -> None:
    with pytest.raises(InvalidModelName, match=r"'\.\./x'"):
        store.publish(CAT, "../x", "1.0.0", source)
    with pytest.raises(InvalidModelName, match="invalid category"):
        store.publish("../etc", NAME, "1.0.0", source)
    assert store_files(home) == []


# -- safety refusals --------------------------------------------------------------------------


def write_pickle_protocol0(folder: Path) -> str:
    """Issue 15 item 11: protocols 0 and 1 have no `\\x80` header and passed the check before."""
    (folder / "weights.dat").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=0))
    return "weights.dat"


def write_pickle_protocol1(folder: Path) -> str:
    (folder / "state").write_bytes(pickle.dumps(("os", "system", 1), protocol=1) + b"trailing bytes")
    return "state"


def write_pickle(folder: Path) -> str:
    (folder / "weights.dat").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    return "weights.dat"


def write_bin(folder: Path) -> str:
    (folder / "pytorch_model.bin").write_bytes(b"\x00" * 16)
    return "pytorch_model.bin"


def write_torch_zip(folder: Path) -> str:
    with zipfile.ZipFile(folder / "model.weights", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        archive.writestr("archive/data/0", b"\x00" * 8)
    return "model.weights"


def write_npy_magic(folder: Path) -> str:
    (folder / "adapter/extra.dat").write_bytes(b"\x93NUMPY\x01\x00" + b"\x00" * 8)
    return "adapter/extra.dat"


def write_nested_pt(folder: Path) -> str:
    (folder / "adapter/optimizer.pt").write_bytes(b"not even a pickle")
    return "adapter/optimizer.pt"


@pytest.mark.parametrize(
    "write",
    [
        write_pickle,
        write_pickle_protocol0,
        write_pickle_protocol1,
        write_bin,
        write_torch_zip,
        write_npy_magic,
        write_nested_pt,
    ],
)
def test_unsafe_files_refused_and_nothing_written(store: ModelStore, source: Path, home: Path, write) -> None:
    rel = write(source)
    with pytest.raises(UnsafeFileError) as info:
        store.publish(CAT, NAME, "1.0.0", source)
    message = str(info.value)
    assert rel in message
    assert "safetensors.torch.save_file" in message
    assert store_files(home) == []


def test_truncated_safetensors_refused(store: ModelStore, source: Path, home: Path) -> None:
    path = source / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match=r"model\.safetensors.*truncated"):
        store.publish(CAT, NAME, "1.0.0", source)
    assert store_files(home) == []


@pytest.mark.parametrize(
    "payload",
    [
        b"\x05\x00",  # shorter than the 8-byte length
        (10**9).to_bytes(8, "little") + b"{}",  # header longer than the file
        (5).to_bytes(8, "little") + b"{nope",  # not JSON
        (2).to_bytes(8, "little") + b"[]",  # not an object
    ],
)
def test_corrupt_safetensors_headers_refused(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / "broken.safetensors").write_bytes(payload)
    with pytest.raises(IntegrityError, match=r"broken\.safetensors"):
        check_safe_files(tmp_path)


def test_safetensors_offsets_checked_against_dtype(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "w.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"0" * 8)
    with pytest.raises(IntegrityError, match="dtype and shape"):
        check_safe_files(tmp_path)


def test_symlinked_folder_refused(tmp_path: Path, source: Path) -> None:
    (source / "linked").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UnsafeFileError, match="linked"):
        check_safe_files(source)


# -- publishing -------------------------------------------------------------------------------


def test_publish_writes_manifest_and_is_read_only(store: ModelStore, source: Path) -> None:
    folder = store.publish(CAT, NAME, "1.0.0", source)
    assert folder == store.root / CAT / NAME / "1.0.0"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "companion-manifest/1"
    rels = ["adapter/adapter_model.safetensors", "config.json", "model.safetensors"]
    assert list(manifest["files"]) == rels
    for rel in rels:
        data = (source / rel).read_bytes()
        assert manifest["files"][rel] == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
    assert manifest["created"].endswith("+00:00")
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o444
    assert stat.S_IMODE(folder.stat().st_mode) == stat.S_IMODE((folder / "adapter").stat().st_mode)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o555
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".tmp-")] == []
    assert store.open(CAT, NAME) == folder
    if os.geteuid() != 0:  # root ignores permission bits
        with pytest.raises(PermissionError):
            (folder / "config.json").write_text("{}")


def test_publish_over_existing_version_refused(store: ModelStore, tmp_path: Path) -> None:
    first = store.publish(CAT, NAME, "1.0.0", make_model(tmp_path / "a", seed=1))
    before = hash_folder(first)
    with pytest.raises(StoreError, match=r"1\.0\.0 already exists.*next: 1\.1\.0"):
        store.publish(CAT, NAME, "1.0.0", make_model(tmp_path / "b", seed=2))
    assert hash_folder(first) == before
    verify_manifest(first, full=True)
    assert sorted(p.name for p in first.parent.iterdir()) == [".lock", "1.0.0"]


def test_publish_move(store: ModelStore, source: Path) -> None:
    expected = hash_folder(source)
    folder = store.publish(CAT, NAME, "1.0.0", source, move=True)
    assert not source.exists()
    assert hash_folder(folder) == expected
    verify_manifest(folder, full=True)


def test_empty_source_refused(store: ModelStore, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no files"):
        store.publish(CAT, NAME, "1.0.0", tmp_path / "empty")
    with pytest.raises(ModelNotFoundError):
        store.publish(CAT, NAME, "1.0.0", tmp_path / "missing")


def test_staging_and_publish_staged(store: ModelStore) -> None:
    with store.staging(CAT, NAME) as tmp:
        assert tmp.parent == store.model_dir(CAT, NAME)
        make_model(tmp)
        folder = store.publish_staged(tmp, CAT, NAME, "2.0.0-rc.1")
    assert not tmp.exists()
    verify_manifest(folder)
    with pytest.raises(StoreError, match="not a staging folder"):
        store.publish_staged(folder, CAT, NAME, "2.0.0")


def test_staging_cleaned_up_on_error(store: ModelStore) -> None:
    with pytest.raises(RuntimeError), store.staging(CAT, NAME) as tmp:
        make_model(tmp)
        raise RuntimeError("training crashed")
    assert not tmp.exists()


def test_staged_unsafe_file_refused(store: ModelStore, home: Path) -> None:
    with pytest.raises(UnsafeFileError, match=r"weights\.dat"), store.staging(CAT, NAME) as tmp:
        make_model(tmp)
        write_pickle(tmp)
        store.publish_staged(tmp, CAT, NAME, "1.0.0")
    assert store.list_versions(CAT, NAME) == []
    assert [p for p in store_files(home) if p.name.startswith(".tmp-")] == []


# -- verification -----------------------------------------------------------------------------


@pytest.fixture
def published(store: ModelStore, source: Path) -> Path:
    return store.publish(CAT, NAME, "1.0.0", source)


def test_flipped_byte_detected(store: ModelStore, published: Path) -> None:
    path = writable(published) / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside the tensor data: the header stays valid
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.safetensors.*sha256 differs"):
        store.open(CAT, NAME)


def test_file_added_after_publish_detected(store: ModelStore, published: Path) -> None:
    (writable(published) / "adapter" / "notes.txt").write_text("hi")
    with pytest.raises(IntegrityError, match=r"adapter/notes\.txt .*not in its manifest"):
        store.open(CAT, NAME, "1.0.0")


def test_removed_and_resized_files_detected(published: Path) -> None:
    (writable(published) / "config.json").write_text('{"hidden_size": 4, "seed": 1234567}')
    with pytest.raises(IntegrityError, match=r"config\.json .* bytes, manifest says"):
        verify_manifest(published)
    (published / "config.json").unlink()
    with pytest.raises(IntegrityError, match=r"config\.json is listed .* missing"):
        verify_manifest(published)
    (published / "manifest.json").unlink()
    with pytest.raises(IntegrityError, match=r"no manifest\.json"):
        verify_manifest(published)


def test_malformed_manifest_refused(published: Path) -> None:
    (writable(published) / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(IntegrityError, match="malformed"):
        verify_manifest(published)


def test_warm_verify_uses_cache(published: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(integrity_mod, "_RACY_NS", 0)  # trust fresh timestamps in this test
    verify_manifest(published)
    calls: list[Path] = []
    real = integrity_mod._sha256_file
    monkeypatch.setattr(integrity_mod, "_sha256_file", lambda p: calls.append(p) or real(p))
    verify_manifest(published)
    assert calls == []
    verify_manifest(published, full=True)
    assert len(calls) == 3
    path = writable(published) / "config.json"
    path.write_text('{"hidden_size": 4, "seed": 9}')  # same size, different bytes
    os.utime(path, ns=(10**18, 10**18))  # a distinct mtime even on a coarse clock
    with pytest.raises(IntegrityError, match=r"config\.json.*sha256"):
        verify_manifest(published)


def test_racy_timestamps_are_rehashed(published: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(integrity_mod, "_RACY_NS", 10**18)  # every timestamp counts as too fresh
    verify_manifest(published)
    calls: list[Path] = []
    real = integrity_mod._sha256_file
    monkeypatch.setattr(integrity_mod, "_sha256_file", lambda p: calls.append(p) or real(p))
    verify_manifest(published)
    assert len(calls) == 3


def test_hash_folder_is_stable(tmp_path: Path) -> None:
    a, b = make_model(tmp_path / "a"), make_model(tmp_path / "b")
    assert hash_folder(a) == hash_folder(b)
    write_manifest(a)
    assert hash_folder(a) == hash_folder(b)
    assert hash_folder(make_model(tmp_path / "c", seed=1)) != hash_folder(a)


# -- listing, versions, open ------------------------------------------------------------------


def test_versions_sorted_by_semver(store: ModelStore, source: Path) -> None:
    for v in ["1.9.0", "1.10.0", "1.0.0-rc.2", "1.0.0", "1.0.0-rc.10", "1.0.0-beta"]:
        store.publish(CAT, NAME, v, source)
    model = store.model_dir(CAT, NAME)
    (model / ".tmp-junk").mkdir()
    (model / "notes").mkdir()
    (model / "9.9.9.txt").write_text("x")
    expected = ["1.0.0-beta", "1.0.0-rc.2", "1.0.0-rc.10", "1.0.0", "1.9.0", "1.10.0"]
    assert store.list_versions(CAT, NAME) == expected
    assert store.latest_version(CAT, NAME) == "1.10.0"
    assert store.next_version(CAT, NAME) == "1.11.0"
    assert store.next_version(CAT, NAME, "major") == "2.0.0"
    assert store.next_version(CAT, NAME, "patch") == "1.10.1"
    store.publish(CAT, NAME, "2.0.0-rc.1", source)
    assert store.latest_version(CAT, NAME) == "1.10.0"  # releases win over pre-releases


def test_first_versions(store: ModelStore, source: Path) -> None:
    assert store.list_versions(CAT, NAME) == []
    assert store.latest_version(CAT, NAME) is None
    assert store.next_version(CAT, NAME) == "1.0.0"
    store.publish(CAT, NAME, "1.0.0-rc.1", source)
    assert store.latest_version(CAT, NAME) == "1.0.0-rc.1"
    assert store.next_version(CAT, NAME) == "1.0.0"
    with pytest.raises(StoreError, match="invalid bump"):
        store.next_version(CAT, NAME, "huge")  # type: ignore[arg-type]


def test_list_models(store: ModelStore, source: Path) -> None:
    assert store.list_models() == []
    store.publish(CAT, NAME, "1.0.0", source)
    store.publish("writing", "clara", "1.0.0", source)
    with store.lock("writing", "empty"):
        pass  # a model folder with no versions is not listed
    (store.root / "writing" / "stray.tmp").mkdir()  # nor is a folder with a reserved name
    assert store.list_models() == [(CAT, NAME), ("writing", "clara")]
    assert store.list_models("writing") == [("writing", "clara")]


def test_open_missing_lists_versions(store: ModelStore, source: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no published version.*available: none"):
        store.open(CAT, NAME)
    store.publish(CAT, NAME, "1.0.0", source)
    store.publish(CAT, NAME, "1.1.0", source)
    with pytest.raises(ModelNotFoundError, match=r"no version 3\.0\.0.*1\.0\.0, 1\.1\.0"):
        store.open(CAT, NAME, "3.0.0")
    assert store.open(CAT, NAME).name == "1.1.0"
    assert store.open(CAT, NAME, "1.0.0", verify=False).name == "1.0.0"


def test_delete_version(store: ModelStore, source: Path) -> None:
    store.publish(CAT, NAME, "1.0.0", source)
    store.delete_version(CAT, NAME, "1.0.0")
    assert store.list_versions(CAT, NAME) == []
    assert sorted(p.name for p in store.model_dir(CAT, NAME).iterdir()) == [".lock"]
    with pytest.raises(ModelNotFoundError):
        store.delete_version(CAT, NAME, "1.0.0")
    store.publish(CAT, NAME, "1.0.0", source)  # the version number can be reused after erasure


def test_gc_removes_stale_but_not_live_folders(store: ModelStore, source: Path) -> None:
    model = store.model_dir(CAT, NAME)
    (model / ".tmp-crashed" / "sub").mkdir(parents=True)
    (model / ".trash-1.0.0-dead").mkdir()
    store_mod._make_read_only(model / ".trash-1.0.0-dead")
    assert store.gc() == []  # too fresh for the default hour
    with store.staging(CAT, NAME) as live:
        removed = store.gc(max_age=0)
        assert live.exists()
    assert sorted(p.name for p in removed) == [".tmp-crashed", ".trash-1.0.0-dead"]
    assert not (model / ".tmp-crashed").exists()


# -- locks and crashes ------------------------------------------------------------------------


def test_lock_is_reentrant(store: ModelStore, source: Path) -> None:
    with store.lock(CAT, NAME), store.lock(CAT, NAME, timeout=0.1):
        version = store.next_version(CAT, NAME)
        store.publish(CAT, NAME, version, source)  # takes the lock again inside
    assert store.list_versions(CAT, NAME) == ["1.0.0"]


def test_lock_excludes_other_processes(store: ModelStore, home: Path) -> None:
    holder = textwrap.dedent(
        f"""
        import sys, time
        from models.store import ModelStore
        with ModelStore().lock({CAT!r}, {NAME!r}):
            print("locked", flush=True)
            time.sleep(30)
        """
    )
    with subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
            refused = pytest.raises(StoreError, match=r"timed out .* another process")
            with refused, store.lock(CAT, NAME, timeout=0.2):
                pass
        finally:
            proc.kill()
    with store.lock(CAT, NAME, timeout=5):  # released when its holder dies
        pass


CRASH_LOOP = """
import sys
from pathlib import Path
from models.store import ModelStore
store, source = ModelStore(Path(sys.argv[1])), Path(sys.argv[2])
print("ready", flush=True)
while True:
    with store.lock("crash", "m"):
        store.publish("crash", "m", store.next_version("crash", "m", "patch"), source)
"""


def test_sigkill_during_publish_leaves_only_complete_versions(home: Path, tmp_path: Path) -> None:
    source = make_model(tmp_path / "big", size=32_768)  # ~512 KiB of weights
    store = ModelStore(home)
    began = time.monotonic()
    store.publish("crash", "m", "1.0.0", source)
    # Kill within a few publishes' time, however slow fsync is on this machine today.
    window = max(0.12, 4 * (time.monotonic() - began))
    rng = random.Random(1234)
    deadline = time.monotonic() + 12
    for _ in range(20):
        if time.monotonic() > deadline:
            break
        command = [sys.executable, "-c", CRASH_LOOP, str(home), str(source)]
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, window))
            proc.send_signal(signal.SIGKILL)
    versions = store.list_versions("crash", "m")
    for version in versions:
        verify_manifest(store.version_dir("crash", "m", version), full=True)
    crashed = [p for p in store.model_dir("crash", "m").iterdir() if p.name.startswith(".tmp-")]
    assert crashed, "no kill landed inside publish"
    store.gc(max_age=0)
    leftovers = [p.name for p in store.model_dir("crash", "m").iterdir()]
    assert sorted(leftovers) == sorted([".lock", *versions])


PUBLISH_FIVE = """
import sys
from pathlib import Path
from models.store import ModelStore
store = ModelStore(Path(sys.argv[1]))
for _ in range(5):
    with store.lock("race", "m"):
        store.publish("race", "m", store.next_version("race", "m", "patch"), Path(sys.argv[2]))
"""


def test_concurrent_publishers_do_not_collide(home: Path, source: Path) -> None:
    command = [sys.executable, "-c", PUBLISH_FIVE, str(home), str(source)]
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    store = ModelStore(home)
    versions = store.list_versions("race", "m")
    assert versions == [f"1.0.{i}" for i in range(10)]
    for version in versions:
        verify_manifest(store.version_dir("race", "m", version), full=True)


def test_public_api() -> None:
    for name in store_mod.__all__:
        assert hasattr(store_mod, name), name
