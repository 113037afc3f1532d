"""Saving datasets with a manifest and content hash; loading checks integrity; no pickles anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset, concatenate_datasets

from models.errors import DataError, IntegrityError
from models.training_data import content_hash, load_dataset, save_dataset
from models.training_data.dataset_io import RecordSink
from models.training_data.schema import WRITING_CHUNK_FEATURES


def rows(n: int) -> list[dict]:
    return [
        {"text": f"text {i}", "input_ids": list(range(i % 7)), "length": i % 7, "genre": "g", "title": "t",
         "chunk_index": i, "doc_sha256": "d", "source": "s", "file": "f", "position": f"char:{i}", "sha256": str(i)}
        for i in range(n)
    ]  # fmt: skip


def test_record_sink_streams_batches_to_an_arrow_file() -> None:
    sink = RecordSink(WRITING_CHUNK_FEATURES, "test")
    sink.extend(rows(2500))
    ds = sink.finish()
    assert len(ds) == 2500 and ds[2499]["input_ids"] == list(range(2499 % 7))
    assert ds.cache_files and ds.cache_files[0]["filename"].endswith(".arrow")


def test_save_load_roundtrip_with_manifest_and_lineage(tmp_path: Path) -> None:
    ds = Dataset.from_list(rows(50), features=WRITING_CHUNK_FEATURES)
    info = save_dataset(ds, tmp_path / "out", kind="writing-tokenized", lineage={"steps": [{"step": "test"}]})
    folder = tmp_path / "out"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["rows"] == 50 and meta["content_sha256"] == content_hash(ds) == info["content_sha256"]
    assert meta["lineage"] == {"steps": [{"step": "test"}]} and meta["format"] == "companion-dataset/1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "dataset.json" in manifest["files"] and any(f.endswith(".arrow") for f in manifest["files"])
    assert not any(f.endswith((".pkl", ".pickle", ".bin", ".pt")) for f in manifest["files"])
    assert load_dataset(folder).to_list() == ds.to_list()
    with pytest.raises(DataError, match="already exists"):
        save_dataset(ds, folder, kind="x")


def test_tampering_is_detected(tmp_path: Path) -> None:
    save_dataset(Dataset.from_list(rows(5), features=WRITING_CHUNK_FEATURES), tmp_path / "d", kind="k")
    (tmp_path / "d" / "dataset.json").write_text((tmp_path / "d" / "dataset.json").read_text().replace('"k"', '"q"'))
    with pytest.raises(IntegrityError):
        load_dataset(tmp_path / "d")
    with pytest.raises(DataError, match="not a saved dataset"):
        load_dataset(tmp_path)


def test_content_hash_depends_on_rows_not_layout() -> None:
    ds = Dataset.from_list(rows(30), features=WRITING_CHUNK_FEATURES)
    pieces = concatenate_datasets([ds.select(range(10)), ds.select(range(10, 30))])
    assert content_hash(pieces) == content_hash(ds)
    assert content_hash(ds, batch_size=7) == content_hash(ds)
    changed = ds.map(lambda r: {"text": r["text"] + "!"} if r["chunk_index"] == 3 else {})
    assert content_hash(changed) != content_hash(ds)


def test_reads_are_batched_by_size_so_big_records_stay_bounded() -> None:
    from models.training_data.inputs import batch_rows

    big = Dataset.from_dict({"text": ["x" * 1_000_000] * 20})
    small = Dataset.from_dict({"text": ["x" * 2_000] * 20})
    assert batch_rows(big) <= 8 and batch_rows(small) == 1024
