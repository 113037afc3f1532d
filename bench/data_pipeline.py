"""Training-data pipeline: ours (preprocess + validate) vs datatrove on the same corpus and filters.

Corpus: `../shared/data/books` cut into ~2,000-word documents when that folder exists, else
generated English-like text of the same shape; 5 % of documents are planted again as exact
copies and 5 % as copies with 3 % of their words changed. Both sides run single-process, one
run each:

* ours: `DataPreprocessor.preprocess_writing_data` (clean, byte-level BPE, one window per
  document) then `DataValidator.validate_writing_data` (Gopher quality + repetition and the
  other documented rules, English check, exact + MinHash dedup, 14 bands × 8 rows on 5-grams);
* datatrove 0.10: `GopherRepetitionFilter` and `GopherQualityFilter` on every document, then
  the four MinHash stages with the same 5-grams and 14 × 8 buckets.

Reported: MB/s of each and the ratio (target ≥ 1×), planted duplicates each finds, and the
peak memory of our whole pipeline (collect → preprocess → validate) on a generated input of
`BENCH_DATA_GB` GB (default 1.0; it takes several minutes) in a fresh process.

Environment: `BENCH_DATA_GB` (size of the memory run, 0 to skip), `BENCH_DATA_CORPUS_MB` (cap
on the comparison corpus, default: all of it).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BOOKS = ROOT.parent / "shared" / "data" / "books"
DOC_WORDS = 2000

_VOCAB_TEXT = (
    "the of and to a in that was he she it his her with as for had you not be on at by which but from they "
    "this have were all we one said there been if would so their more when who what up out no an them then "
    "could into my time some about than like little only other old any these upon very before after over "
    "night house door window river letter road light hand eyes face heart voice morning garden sea story "
    "walked looked thought knew turned waited smiled opened found wrote heard asked answered remembered "
    "quiet long dark small bright cold warm strange slow careful sudden gentle tired silver grey"
)
_VOCAB = _VOCAB_TEXT.split()


def _generated_words(n: int, rng: random.Random) -> list[str]:
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(_VOCAB))]
    return rng.choices(_VOCAB, weights=weights, k=n)


def _generated_doc(rng: random.Random, words: int = DOC_WORDS) -> str:
    out, paragraph, sentence = [], [], []
    for w in _generated_words(words, rng):
        sentence.append(w)
        if len(sentence) >= rng.randint(8, 20):
            paragraph.append(" ".join(sentence).capitalize() + ".")
            sentence = []
            if len(paragraph) >= rng.randint(3, 7):
                out.append(" ".join(paragraph))
                paragraph = []
    if sentence:
        paragraph.append(" ".join(sentence).capitalize() + ".")
    if paragraph:
        out.append(" ".join(paragraph))
    return "\n\n".join(out)


def build_corpus(cap_mb: float | None = None) -> tuple[list[str], list[int], list[int], str]:
    """(documents, exact-copy indices, near-copy indices, description)."""
    rng = random.Random(1234)
    docs: list[str] = []
    if BOOKS.is_dir():
        from models.training_data.cleaning import clean_text

        for path in sorted(BOOKS.glob("*.txt")):
            words = clean_text(path.read_text(encoding="utf-8")).split(" ")
            docs += [" ".join(words[i : i + DOC_WORDS]) for i in range(0, len(words), DOC_WORDS)]
        what = f"{BOOKS} cut into ~{DOC_WORDS}-word documents"
    else:
        docs = [_generated_doc(rng) for _ in range(1500)]
        what = f"generated English-like text ({len(docs)} documents of ~{DOC_WORDS} words)"
    if cap_mb:
        size, keep = 0, []
        for d in docs:
            size += len(d.encode())
            if size > cap_mb * 1e6:
                break
            keep.append(d)
        docs = keep
    n = len(docs)
    picks = rng.sample(range(n), k=max(2, n // 10))
    exact_src, near_src = picks[: len(picks) // 2], picks[len(picks) // 2 :]
    exact_idx, near_idx = [], []
    for i in exact_src:
        exact_idx.append(len(docs))
        docs.append(docs[i])
    for i in near_src:
        words = docs[i].split(" ")
        for j in rng.sample(range(len(words)), k=max(1, len(words) * 3 // 100)):
            words[j] = "zzqx"
        near_idx.append(len(docs))
        docs.append(" ".join(words))
    return docs, exact_idx, near_idx, what


def run_ours(docs: list[str]) -> dict[str, Any]:
    from datasets import Dataset

    from models.training_data import DataPreprocessor, DataValidator

    ds = Dataset.from_dict({"text": docs, "sha256": [str(i) for i in range(len(docs))]})
    t0 = time.perf_counter()
    chunks = DataPreprocessor().preprocess_writing_data(ds, tokenization="gpt2", max_length=16384)
    t1 = time.perf_counter()
    result = DataValidator().validate_writing_data(chunks, quality_threshold=0.8)
    t2 = time.perf_counter()
    removed_dups = set()
    for row in result.rejected.select_columns(["doc_sha256", "rejection_reasons"]):
        if {"exact_duplicate", "near_duplicate"} & set(row["rejection_reasons"]):
            removed_dups.add(int(row["doc_sha256"]))
    return {
        "seconds": t2 - t0,
        "preprocess_seconds": t1 - t0,
        "validate_seconds": t2 - t1,
        "kept": result.report.kept,
        "windows": len(chunks),
        "removed_low_quality": result.report.removed["low_quality"],
        "dup_removed": removed_dups,
    }


def run_datatrove(docs: list[str]) -> dict[str, Any]:
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from loguru import logger

    logger.remove()  # datatrove logs every step at INFO

    def documents() -> list[Document]:
        return [Document(text=t, id=str(i)) for i, t in enumerate(docs)]

    rep, qual = GopherRepetitionFilter(), GopherQualityFilter()
    t0 = time.perf_counter()
    passed = 0
    for doc in documents():
        ok = rep.filter(doc)
        ok = ok if isinstance(ok, bool) else ok[0]
        if ok:
            ok = qual.filter(doc)
            ok = ok if isinstance(ok, bool) else ok[0]
        passed += bool(ok)
    t1 = time.perf_counter()
    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    with tempfile.TemporaryDirectory() as tmp:
        sigs, buckets, clusters = (f"{tmp}/{name}" for name in ("sigs", "buckets", "clusters"))
        _drain(MinhashDedupSignature(output_folder=sigs, config=config).run(documents(), 0, 1))
        for b in range(config.num_buckets):
            _drain(MinhashDedupBuckets(input_folder=sigs, output_folder=buckets, config=config).run(None, b, 14))
        _drain(MinhashDedupCluster(input_folder=buckets, output_folder=clusters, config=config).run(None, 0, 1))
        kept_ids = {d.id for d in MinhashDedupFilter(input_folder=clusters).run(documents(), 0, 1)}
    t2 = time.perf_counter()
    return {
        "seconds": t2 - t0,
        "filter_seconds": t1 - t0,
        "minhash_seconds": t2 - t1,
        "passed_filters": passed,
        "dup_removed": {i for i in range(len(docs)) if str(i) not in kept_ids},
    }


def _drain(result: Any) -> None:
    if result is not None:
        for _ in result:
            pass


# ----------------------------------------------------------------------------- memory run

BIG = """
import json, resource, sys, threading, time
from models.training_data import DataCollector, DataPreprocessor, DataValidator

peak_anon = [0]
def sample():  # anonymous memory (heap): RSS minus the page cache of the memory-mapped Arrow files
    while True:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    peak_anon[0] = max(peak_anon[0], int(line.split()[1]))
        time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
raw = DataCollector().collect_writing_samples(sys.argv[1])
t1 = time.perf_counter()
chunks = DataPreprocessor().preprocess_writing_data(raw, tokenization="gpt2", max_length=512)
t2 = time.perf_counter()
result = DataValidator().validate_writing_data(chunks, quality_threshold=0.8)
t3 = time.perf_counter()
print(json.dumps({"documents": len(raw), "windows": len(chunks), "kept": result.report.kept,
                  "collect_s": t1 - t0, "preprocess_s": t2 - t1, "validate_s": t3 - t2,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_anon_mb": peak_anon[0] / 1024}))
"""


def _write_big_input(folder: Path, gigabytes: float) -> int:
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    target, written, n = int(gigabytes * 1e9), 0, 0
    while written < target:
        with (folder / f"part_{n:04d}.txt").open("w", encoding="utf-8") as f:
            for _ in range(400):  # ~5 MB per file
                doc = _generated_doc(rng, 2000)
                f.write(doc + "\n\n")
                written += len(doc) + 2
        n += 1
    return written


def memory_run(gigabytes: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        size = _write_big_input(Path(tmp) / "big", gigabytes)
        env = {**os.environ, "COMPANION_HOME": f"{tmp}/home", "HF_DATASETS_CACHE": f"{tmp}/hf", "TMPDIR": tmp}
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", BIG, f"{tmp}/big"], capture_output=True, text=True, env=env, check=True
        )
        wall = time.perf_counter() - t0
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data | {"input_mb": size / 1e6, "wall_s": wall, "mb_per_s": size / 1e6 / wall}


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cap = float(os.environ["BENCH_DATA_CORPUS_MB"]) if os.environ.get("BENCH_DATA_CORPUS_MB") else None
    docs, exact_idx, near_idx, what = build_corpus(cap)
    mb = sum(len(d.encode()) for d in docs) / 1e6
    planted = f"planted {len(exact_idx)} exact + {len(near_idx)} near copies"
    console.print(f"corpus: {what}; {len(docs)} documents, {mb:.1f} MB, {planted}")
    ours = run_ours(docs)
    try:
        peer = run_datatrove(docs)
    except ImportError as exc:
        peer = None
        console.print(f"[yellow]datatrove not installed ({exc}); `pip install -e '.[bench]'`[/]")
    table = Table(title="training-data pipeline, one process, one run")
    for col in ("", "ours", "datatrove"):
        table.add_column(col)

    def found(side: dict[str, Any] | None, idx: list[int]) -> str:
        return f"{len(set(idx) & side['dup_removed'])}/{len(idx)}" if side else "-"

    rows = [
        ("MB/s (whole run)", f"{mb / ours['seconds']:.3f}", f"{mb / peer['seconds']:.3f}" if peer else "-"),
        ("seconds", f"{ours['seconds']:.1f}", f"{peer['seconds']:.1f}" if peer else "-"),
        ("  of which", f"preprocess {ours['preprocess_seconds']:.1f}, validate {ours['validate_seconds']:.1f}",
         f"filters {peer['filter_seconds']:.1f}, minhash {peer['minhash_seconds']:.1f}" if peer else "-"),
        ("planted exact copies removed", found(ours, exact_idx), found(peer, exact_idx)),
        ("planted 3 %-changed copies removed", found(ours, near_idx), found(peer, near_idx)),
        ("documents failing quality rules", str(ours["removed_low_quality"]),
         str(len(docs) - peer["passed_filters"]) if peer else "-"),
    ]  # fmt: skip
    for r in rows:
        table.add_row(*r)
    console.print(table)
    if peer:
        console.print(f"ratio ours/datatrove (MB/s): [bold]{peer['seconds'] / ours['seconds']:.1f}×[/] (target ≥ 1×)")
    gigabytes = float(os.environ.get("BENCH_DATA_GB", "1.0"))
    if gigabytes > 0:
        console.print(f"memory run: generating {gigabytes:g} GB and running collect → preprocess → validate ...")
        big = memory_run(gigabytes)
        console.print(
            f"memory run: {big['input_mb']:.0f} MB in {big['wall_s']:.0f} s ({big['mb_per_s']:.2f} MB/s; collect "
            f"{big['collect_s']:.0f} s, preprocess {big['preprocess_s']:.0f} s, validate {big['validate_s']:.0f} s), "
            f"{big['windows']} windows; peak memory [bold]{big['peak_anon_mb']:.0f} MB[/] anonymous "
            f"(heap), {big['peak_rss_mb']:.0f} MB RSS including the page cache of the memory-mapped Arrow files"
        )


if __name__ == "__main__":
    main()
