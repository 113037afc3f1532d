"""The `fast` engine's package: one Llama decoder, its weights, cache and block.

spec.py     LlamaSpec: the shape from config.json, and what the engine refuses
weights.py  Weights: fused matrices in float32, bfloat16 or packed int8, with their matmul
cache.py    KVCache (rows, capacity, grow, select, expand) and the RoPE table
block.py    forward(): the decoder block for any rows and tokens; OneRowStep: the batch-1 path
engine.py   FastEngine: load, prefill, step, score, runtime changes as new Weights
runtime.py  an optimized version's `runtime` section (int8, bf16, threads)
batch.py    best-of-N: N rows of one prompt decoded together
"""

from models.engines.llama.cache import KVCache, RopeTable
from models.engines.llama.engine import DEFAULT_THREADS, FastEngine, ThreadScope
from models.engines.llama.spec import LlamaSpec
from models.engines.llama.weights import LayerWeights, Weights

__all__ = [
    "DEFAULT_THREADS",
    "FastEngine",
    "KVCache",
    "LayerWeights",
    "LlamaSpec",
    "RopeTable",
    "ThreadScope",
    "Weights",
]
