"""`clipkit search`: exact and FAISS nearest neighbours over an embedding folder, checked against ground truth."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipkit.cli.app import app
from clipkit.collection import manifest as mf
from clipkit.collection import shards as sh
from clipkit.collection.config import SearchConfig
from clipkit.collection.embed import embed
from clipkit.collection.faiss_index import index_key, nb_clusters
from clipkit.collection.search import exact_search

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Shapes-world scenes with one object each: 3 red circles among red non-circles and non-red circles
    (the hard negatives), embedded with shapes-clip. Returns (folder of images, embedding folder, truth)."""
    from clipkit.world.scenes import SceneConfig, generate_scene

    root = tmp_path_factory.mktemp("world")
    images = root / "images"
    images.mkdir()
    groups = [(("red",), ("circle",), 3), (("red",), ("square", "star", "triangle", "cross"), 8),
              (("blue", "green", "yellow"), ("circle",), 6), (("blue", "green", "purple"), ("star", "square"), 7)]
    truth, index = {}, 0
    for colours, shapes, n in groups:
        for _ in range(n):
            scene = generate_scene(11, index, SceneConfig(size=(96, 96), colours=colours, shapes=shapes),
                                   n_objects=1)
            path = images / f"scene_{index:03d}.png"
            scene.image.save(path)
            truth[str(path)] = scene.names[0]
            index += 1
    out = root / "E"
    embed(str(images), out, shard_size=10, workers=0)
    return images, out, truth


def search_json(*args):
    res = invoke("search", *args, "-f", "jsonl", "-q")
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_text_search_finds_the_red_circles(world):
    _, out, truth = world
    red, blue = search_json(out, "--text", "red circle", "--text", "blue star", "-k", "3")
    assert red["query"] == "red circle" and red["type"] == "text"
    assert [truth[hit["path"]] for hit in red["results"]] == ["red circle"] * 3
    scores = [hit["score"] for hit in red["results"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert truth[blue["results"][0]["path"]] == "blue star"


def test_an_image_query_finds_itself_first(world):
    images, out, _ = world
    query = sorted(images.iterdir())[5]
    (hit, *_), = [r["results"] for r in search_json(out, "--image", query, "-k", "2")]
    assert hit["path"] == str(query) and hit["score"] == pytest.approx(1.0, abs=2e-3)  # float16 storage


def test_exact_search_matches_brute_force_across_shards_and_chunks(tmp_path):
    """Random float32 vectors in uneven shards, scored in chunks that cross shard ends."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(53, 16)).astype(np.float32)
    manifest = {"format": mf.FORMAT, "layout": "parquet", "dim": 16, "dtype": "float32", "normalize": False,
                "model": {"identity": "x"}, "sets": {}}
    writer = sh.ShardWriter(tmp_path, manifest, "image", shard_size=20)
    for i, v in enumerate(data):
        writer.add(f"img{i}", v, width=1, height=1)
    writer.flush()
    import torch

    queries = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(4, 16)).astype(np.float32)), dim=-1)
    scores, ids = exact_search(tmp_path, manifest, queries, k=7, chunk_size=6)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    expected = np.argsort(-(queries.numpy() @ unit.T), axis=1)[:, :7]
    assert ids.tolist() == expected.tolist()
    assert np.allclose(scores, np.take_along_axis(queries.numpy() @ unit.T, expected, axis=1), atol=1e-5)
    assert sh.keys_of(tmp_path, manifest, "image", [52, 0, 21]) == ["img52", "img0", "img21"]


def test_faiss_and_exact_agree_and_the_index_is_reused_until_the_collection_changes(world, tmp_path):
    pytest.importorskip("faiss")
    images, shared, _ = world
    out = tmp_path / "E"
    shutil.copytree(shared, out)  # this test grows its collection: leave the shared one as it is
    queries = ["--text", "red circle", "--text", "green circle", "--text", "purple star"]
    exact = search_json(out, *queries, "-k", "5")
    approx = search_json(out, *queries, "-k", "5", "--index", "faiss", "--faiss-key", "IVF4,Flat")
    assert [r["results"][0]["path"] for r in approx] == [r["results"][0]["path"] for r in exact]
    meta_file = out / "index" / "image.json"
    meta = json.loads(meta_file.read_text())
    assert meta["key"] == "IVF4,Flat" and meta["rows"] == 24 and meta["recall"] >= 0.95
    built = (out / "index" / "image.faiss").stat().st_mtime_ns
    search_json(out, *queries, "--index", "faiss", "--faiss-key", "IVF4,Flat")
    assert (out / "index" / "image.faiss").stat().st_mtime_ns == built  # reused
    # the collection grows (resume with one more image): the index is rebuilt over every row
    extra = tmp_path / "more"
    extra.mkdir()
    Image.open(sorted(images.iterdir())[0]).save(extra / "copy.png")
    embed([str(images), str(extra)], out, shard_size=10, resume=True, workers=0)
    search_json(out, *queries, "--index", "faiss", "--faiss-key", "IVF4,Flat")
    assert json.loads(meta_file.read_text())["rows"] == 25


def test_index_choice_follows_autofaiss_but_keeps_flat_codes_while_they_fit():
    assert nb_clusters(100_000) == 1024  # 4 * sqrt(1e5) = 1265 -> nearest power of two
    assert nb_clusters(5_000_000) == 16_384
    assert index_key(999, 64, 4 * 2**30) == "Flat"
    assert index_key(100_000, 64, 4 * 2**30) == "IVF1024,Flat"
    # 1 M x 512 float32 = 2 GB fits 4G: flat codes (autofaiss would quantize from 1 M; clipkit keeps recall)
    assert index_key(1_000_000, 512, 4 * 2**30) == "IVF16384,Flat"
    # 5 M x 512 = 10 GB does not: PQ256 is the largest m < 512, y = (min(512 // 256, 6) + 1) * 256
    assert index_key(5_000_000, 512, 4 * 2**30) == "OPQ256_768,IVF16384_HNSW32,PQ256x8"
    # 20 k x 64 over 1 MiB: IVF-Flat needs 5.3 MB; compression target 4.88: PQ48 gives 4.57, PQ32 6.4
    assert index_key(20_000, 64, 2**20) == "OPQ32_96,IVF512,PQ32x8"


def test_contact_sheet_per_query(world, tmp_path):
    _, out, _ = world
    sheets = tmp_path / "sheets"
    records = search_json(out, "--text", "red circle", "--text", "red circle!", "-k", "4", "--out-dir", sheets)
    files = [Path(r["files"]["sheet"]) for r in records]
    assert files[0].name == "red_circle.search.png" and files[0] != files[1]
    with Image.open(files[0]) as sheet:
        assert sheet.size[0] == 4 * 128 and sheet.size[1] > 128


def test_usage_errors_are_one_line(world, tmp_path, tiny_model_dir):
    _, out, _ = world
    res = invoke("search", out, "--text", "red circle", "-m", tiny_model_dir)
    assert res.exit_code == 2
    assert res.output.strip() == (f"Error: search: {out} was embedded with -m shapes-clip, not -m "
                                  f"{Path(tiny_model_dir).resolve()}: queries are embedded with the collection's "
                                  "model: leave out -m")
    res = invoke("search", tmp_path, "--text", "x")
    assert res.exit_code == 2 and "holds no manifest.json" in res.output
    res = invoke("search", out)
    assert res.exit_code == 2 and "give a query" in res.output
    res = invoke("search", out, "--image", tmp_path / "missing.png")
    assert res.exit_code == 2 and "no such file" in res.output


def test_search_config_rejects_bad_values():
    from clipkit.errors import UsageError

    with pytest.raises(UsageError, match="--index-memory"):
        SearchConfig.make(index_memory="lots")
    with pytest.raises(UsageError, match="--top-k"):
        SearchConfig.make(top_k=0)


def test_an_unnormalised_collection_is_searched_by_cosine(world, tmp_path):
    images, out, _ = world
    raw = tmp_path / "raw"
    embed(str(images), raw, normalize=False, dtype="float32", workers=0)
    for index in ("exact", "faiss"):
        (normal,) = search_json(out, "--text", "red circle", "-k", "5", "--index", index)
        (unnormal,) = search_json(raw, "--text", "red circle", "-k", "5", "--index", index)
        assert [h["path"] for h in unnormal["results"]] == [h["path"] for h in normal["results"]]
        assert np.allclose([h["score"] for h in unnormal["results"]], [h["score"] for h in normal["results"]],
                           atol=2e-3)  # float16 against float32 storage
