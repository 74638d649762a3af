"""RegistryCache: the writer's registry cache sees every change of registry.yaml and hands out copies (R1, R8)."""
from __future__ import annotations

import subprocess
import sys

from usr_core import Dataset, register_namespace
from usr_core.registry.registry import RegistryCache, hash_registry, load_registry, namespace_contract_hash


def test_R8_cache_follows_the_file_and_hashes_like_hash_registry(tmp_path):
    register_namespace(tmp_path, "aa", "aa__x:float64")
    cache = RegistryCache(tmp_path)
    first = cache.load()
    assert first == load_registry(tmp_path)
    assert cache.hash(first) == hash_registry(first)
    assert cache.contract_hash(first, "aa") == namespace_contract_hash(first, "aa")
    first["aa"]["columns"].append({"name": "aa__y", "type": "int64"})  # a private copy
    assert cache.hash(first) == hash_registry(first) != cache.hash(cache.load())
    # Another process rewrites the file with the same size (same-length type name): seen at once.
    code = ("import sys; from usr_core import register_namespace; "
            "register_namespace(sys.argv[1], 'aa', 'aa__x:float32', overwrite=True)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    again = cache.load()
    assert again["aa"]["columns"][0]["type"] == "float32"
    assert cache.hash(again) == hash_registry(load_registry(tmp_path))


def test_R14_part_writes_stamp_the_current_registry_after_a_change(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    register_namespace(tmp_path, "aa", "aa__x:float64")
    ds = Dataset(tmp_path, "d")
    ds.init()
    ids = ds.add_sequences(pa.table({"sequence": ["ACGT", "GGCC"]}), bio_type="dna", alphabet="dna_4").ids
    first = ds.write_part("aa", pa.table({"id": ids, "aa__x": [1.0, 2.0]}))
    register_namespace(tmp_path, "bb", "bb__y:int64")
    second = ds.write_part("aa", pa.table({"id": ids, "aa__x": [3.0, 4.0]}))
    h1 = pq.read_metadata(first.path).metadata[b"usr:registry_hash"].decode()
    h2 = pq.read_metadata(second.path).metadata[b"usr:registry_hash"].decode()
    assert h1 != h2 == hash_registry(load_registry(tmp_path))
