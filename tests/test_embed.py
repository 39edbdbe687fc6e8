"""`clipkit embed`: shards, manifest, layouts, resume, error records and the usage errors a user meets."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import make_image
from PIL import Image
from typer.testing import CliRunner

from clipkit.cli.app import app
from clipkit.collection import manifest as mf
from clipkit.collection import shards as sh
from clipkit.collection.embed import EmbedPredictor, embed

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def images(tmp_path):
    """Seven small images of different sizes and colours."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(7):
        make_image(folder / f"im{i}.png", (30 * i, 200 - 25 * i, 90), size=(40 + 4 * i, 32 + 2 * i))
    return folder


def table_of(folder, manifest, set_name="image"):
    """Every shard of a set as one list of row dicts (keys, sizes, float32 embeddings), in manifest order."""
    rows = []
    for shard in manifest["sets"][set_name]["shards"]:
        files = shard["files"]
        meta = pq.read_table(folder / files.get("metadata", files["embeddings"])).to_pylist()
        if "metadata" in files:
            matrix = np.load(folder / files["embeddings"])
            for row, vector in zip(meta, matrix, strict=True):
                row["embedding"] = vector
        rows += meta
    return rows


def test_parquet_shards_hold_the_models_embeddings_and_sizes(images, tmp_path):
    from clipkit.registry import load_model

    out = tmp_path / "E"
    summary = embed(str(images), out, shard_size=3, workers=0)
    assert summary["images"] == 7 and summary["errors"] == 0 and summary["rows"] == {"image": 7}
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["sets"]["image"]["shards"]] == [3, 3, 1]
    assert manifest["model"]["spec"] == "shapes-clip" and manifest["model"]["identity"].startswith("shapes-clip:")
    assert (manifest["dim"], manifest["dtype"], manifest["normalize"], manifest["layout"]) == \
        (64, "float16", True, "parquet")
    schema = pq.read_schema(out / "img_emb" / "img_emb_00000.parquet")
    assert str(schema.field("embedding").type) == "fixed_size_list<element: halffloat>[64]"
    rows = table_of(out, manifest)
    assert sorted(r["image_path"] for r in rows) == sorted(str(p) for p in images.iterdir())
    model = load_model("shapes-clip", device="cpu")
    for row in rows:
        image = Image.open(row["image_path"]).convert("RGB")
        assert (row["width"], row["height"]) == image.size
        expected = model.encode_image(model.preprocess(image)[None])[0].numpy()
        stored = np.asarray(row["embedding"], dtype=np.float32)
        assert np.abs(stored - expected).max() < 2e-3  # float16 storage
        assert abs(np.linalg.norm(stored) - 1) < 2e-3


def test_clip_retrieval_layout_pairs_npy_rows_with_metadata_rows(images, tmp_path):
    out = tmp_path / "E"
    res = invoke("embed", images, "-o", out, "--layout", "clip-retrieval", "--dtype", "float32",
                 "--shard-size", "4", "-q", "-j", "0")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == ["img_emb_00000.npy", "img_emb_00001.npy"]
    assert sorted(p.name for p in (out / "metadata").iterdir()) == ["metadata_00000.parquet",
                                                                     "metadata_00001.parquet"]
    first = np.load(out / "img_emb" / "img_emb_00000.npy")
    assert first.shape == (4, 64) and first.dtype == np.float32
    # row i of the npy file is the image named in row i of the metadata file: compare with the parquet layout
    parquet = tmp_path / "P"
    assert invoke("embed", images, "-o", parquet, "--dtype", "float32", "-q", "-j", "0").exit_code == 0
    by_path = {r["image_path"]: np.asarray(r["embedding"]) for r in table_of(parquet, mf.read_manifest(parquet))}
    for row in table_of(out, mf.read_manifest(out)):
        assert np.allclose(row["embedding"], by_path[row["image_path"]], atol=1e-5)


def test_no_normalize_keeps_raw_norms(images, tmp_path):
    out = tmp_path / "E"
    embed(str(images), out, normalize=False, dtype="float32", workers=0)
    norms = [np.linalg.norm(r["embedding"]) for r in table_of(out, mf.read_manifest(out))]
    assert min(abs(n - 1) for n in norms) > 0.05


def test_corrupt_image_is_an_error_record_and_the_run_goes_on(image_dir, tmp_path):
    out = tmp_path / "E"
    res = invoke("embed", image_dir, "-o", out, "-j", "0")
    assert res.exit_code == 1
    summary = json.loads(res.stdout)
    assert summary["images"] == 3 and summary["errors"] == 1
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["path"] for e in errors] == [str(image_dir / "broken.jsonl").replace(".jsonl", ".jpg")]
    assert "broken.jpg" in res.output  # named on stderr too
    assert len(table_of(out, mf.read_manifest(out))) == 3


def _interrupt_after(monkeypatch, calls):
    """Make the predictor raise KeyboardInterrupt (Ctrl-C) on its ``calls``-th batch."""
    seen = []
    original = EmbedPredictor.predict

    def predict(self, samples):
        seen.append(1)
        if len(seen) == calls:
            raise KeyboardInterrupt
        return original(self, samples)

    monkeypatch.setattr(EmbedPredictor, "predict", predict)


def test_resume_after_an_interrupted_run_writes_every_image_once(images, tmp_path, monkeypatch):
    out = tmp_path / "E"
    _interrupt_after(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        embed(str(images), out, shard_size=2, batch_size=1, workers=0)
    monkeypatch.undo()
    manifest = mf.read_manifest(out)
    assert [s["rows"] for s in manifest["sets"]["image"]["shards"]] == [2, 2]  # the 5th image was in no shard
    summary = embed(str(images), out, shard_size=2, resume=True, workers=0)
    assert (summary["images"], summary["skipped"]) == (3, 4)
    paths = [r["image_path"] for r in table_of(out, mf.read_manifest(out))]
    assert sorted(paths) == sorted(str(p) for p in images.iterdir())  # each exactly once


def test_a_shard_written_but_not_in_the_manifest_is_replaced_on_resume(images, tmp_path, monkeypatch):
    """Killed between a shard's rename and the manifest update: the orphan file must not survive as duplicates."""
    out = tmp_path / "E"
    calls = []
    original = sh.write_manifest

    def write_manifest(folder, manifest):
        calls.append(1)
        if len(calls) == 2:  # the second shard's commit: its file is already renamed into place
            raise KeyboardInterrupt
        original(folder, manifest)

    monkeypatch.setattr(sh, "write_manifest", write_manifest)
    with pytest.raises(KeyboardInterrupt):
        embed(str(images), out, shard_size=3, workers=0)
    monkeypatch.undo()
    assert (out / "img_emb" / "img_emb_00001.parquet").exists()
    assert len(mf.read_manifest(out)["sets"]["image"]["shards"]) == 1
    embed(str(images), out, shard_size=3, resume=True, workers=0)
    on_disk = pq.read_table(out / "img_emb").column("image_path").to_pylist()  # what pandas/polars would read
    assert sorted(on_disk) == sorted(str(p) for p in images.iterdir())


def test_existing_collection_needs_resume_and_the_same_options(images, tmp_path, tiny_model_dir):
    out = tmp_path / "E"
    assert invoke("embed", images, "-o", out, "-q", "-j", "0").exit_code == 0
    res = invoke("embed", images, "-o", out, "-q")
    assert res.exit_code == 2 and "already holds an embedding collection (7 rows" in res.output
    res = invoke("embed", images, "-o", out, "--resume", "--dtype", "float32")
    assert res.exit_code == 2
    assert "Error: --resume: " in res.output and "--dtype float16 (this run: float32)" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = invoke("embed", images, "-o", out, "--resume", "-m", tiny_model_dir)
    assert res.exit_code == 2 and "was embedded with -m shapes-clip, not -m " in res.output
    res = invoke("embed", images, "-o", out, "--resume", "-q")  # nothing left to do
    assert res.exit_code == 0 and json.loads(res.stdout)["skipped"] == 7


def test_texts_go_to_their_own_set_and_resume_skips_them(tmp_path):
    from clipkit.registry import load_model

    texts = tmp_path / "texts.txt"
    texts.write_text("red circle\nblue star\n\nred circle\n")
    out = tmp_path / "E"
    res = invoke("embed", "--texts", texts, "-o", out, "-q")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["texts"] == 2
    rows = table_of(out, mf.read_manifest(out), "text")
    assert [r["caption"] for r in rows] == ["red circle", "blue star"]
    model = load_model("shapes-clip", device="cpu")
    expected = model.encode_text(["red circle", "blue star"]).numpy()
    assert np.abs(np.array([r["embedding"] for r in rows], dtype=np.float32) - expected).max() < 2e-3
    texts.write_text("red circle\nblue star\ngreen square\n")
    res = invoke("embed", "--texts", texts, "-o", out, "-q", "--resume")
    assert json.loads(res.stdout)["texts"] == 1
    assert [r["caption"] for r in table_of(out, mf.read_manifest(out), "text")][-1] == "green square"


@pytest.mark.parametrize("argv", [["embed", "--help"], ["search", "--help"], ["embed", "imgs/"],
                                  ["search", "nowhere/", "--text", "a"]])
def test_help_and_usage_errors_do_not_import_torch(argv, tmp_path):
    code = (f"import sys\nsys.argv = ['clipkit', *{argv!r}]\n"
            "from clipkit.cli.app import main\ntry:\n    main()\nexcept SystemExit as e:\n    print(e.code)\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    lines = res.stdout.strip().splitlines()
    assert lines[-1] == "NO-TORCH"
    if "--help" not in argv:
        assert lines[-2] == "2" and res.stderr.startswith("Error: ")


def test_a_folder_with_foreign_shards_is_refused_and_left_alone(images, tmp_path):
    out = tmp_path / "clip-retrieval-output"
    (out / "img_emb").mkdir(parents=True)
    (out / "img_emb" / "img_emb_0.npy").write_bytes(b"theirs")
    res = invoke("embed", images, "-o", out, "-q")
    assert res.exit_code == 2 and "already holds files but" in res.output
    assert (out / "img_emb" / "img_emb_0.npy").read_bytes() == b"theirs"
    assert not (out / "manifest.json").exists()
