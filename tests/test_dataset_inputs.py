"""Dataset inputs: webdataset tar shards and Hugging Face datasets feed every command like files do.

The shards are written here with webdataset's own ``TarWriter``; the images are fresh single-object shapes-world
scenes, so the bundled shapes-clip must name each scene's object. Broken samples become error records.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipkit.registry import bundled_models
from clipkit.runner import collect_inputs, decode

needs_shapes_clip = pytest.mark.skipif("shapes-clip" not in bundled_models(), reason="shapes-clip not bundled")
N_SCENES = 5


def scenes(n: int = N_SCENES, seed: int = 7) -> list:
    from clipkit.world import SceneConfig, generate_scene

    return [generate_scene(seed, i, SceneConfig(size=(160, 128)), n_objects=1) for i in range(n)]


def jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_scene_shard(path: Path, items: list, corrupt_at: int | None = None, ext: str = "jpg") -> list[str]:
    """A webdataset shard of ``items`` (scenes) keyed 000000…, a text member beside each image, and a corrupt JPEG
    at position ``corrupt_at``; returns the sample keys in order."""
    import webdataset as wds

    keys = []
    with wds.TarWriter(str(path)) as writer:
        for i, scene in enumerate(items):
            if i == corrupt_at:
                writer.write({"__key__": "broken", ext: b"\xff\xd8\xff\xe0 not really a jpeg", "txt": "broken"})
                keys.append("broken")
            data = jpeg(scene.image) if ext == "jpg" else _png(scene.image)
            writer.write({"__key__": f"{i:06d}", ext: data, "txt": scene.caption})
            keys.append(f"{i:06d}")
    return keys


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def shapes_clip():
    from clipkit.registry import load_model

    return load_model("shapes-clip", device="cpu", offline=True)


@pytest.fixture(scope="module")
def world():
    return scenes()


def _labels() -> list[str]:
    from clipkit.world import CATEGORIES

    return list(CATEGORIES)


def _by_path(results) -> dict[str, object]:
    return {r.path: r for r in results}


@needs_shapes_clip
def test_webdataset_shard_gives_labels_for_good_samples_and_one_error_record(tmp_path, shapes_clip, world):
    import clipkit

    shard = tmp_path / "shard-00000.tar"
    write_scene_shard(shard, world, corrupt_at=2)
    results = clipkit.classify(str(shard), _labels(), model=shapes_clip, top_k=1)
    assert [r.path for r in results] == [f"{shard}/{k}" for k in
                                         ["000000", "000001", "broken", "000002", "000003", "000004"]]
    errors = [r for r in results if hasattr(r, "error")]
    assert [e.path for e in errors] == [f"{shard}/broken"]
    assert re.match(r"cannot decode image|not an image", errors[0].error)
    got = {r.path.rsplit("/", 1)[1]: r.labels[0] for r in results if not hasattr(r, "error")}
    assert got == {f"{i:06d}": scene.names[0] for i, scene in enumerate(world)}


@needs_shapes_clip
def test_hf_save_to_disk_dataset_dict_and_dataset_give_row_keys_and_labels(tmp_path, shapes_clip, world):
    import datasets

    import clipkit

    features = datasets.Features({"picture": datasets.Image(), "caption": datasets.Value("string")})
    rows = {"picture": [s.image for s in world], "caption": [s.caption for s in world]}
    whole = datasets.Dataset.from_dict(rows, features=features)
    dd = datasets.DatasetDict({"train": whole.select(range(3)), "test": whole.select(range(3, N_SCENES))})
    dd.save_to_disk(str(tmp_path / "dd"))
    results = clipkit.classify(str(tmp_path / "dd"), _labels(), model=shapes_clip, top_k=1)
    expected = [f"{tmp_path / 'dd'}/train/{i}" for i in range(3)] + [f"{tmp_path / 'dd'}/test/{i}" for i in range(2)]
    assert [r.path for r in results] == expected
    assert [r.labels[0] for r in results] == [s.names[0] for s in world]
    # one split's folder is a dataset of its own; a column that is not there is a usage error naming the columns
    test_only = clipkit.classify(str(tmp_path / "dd" / "test"), _labels(), model=shapes_clip, top_k=1,
                                 image_column="picture")
    assert [r.labels[0] for r in test_only] == [s.names[0] for s in world[3:]]
    from clipkit.errors import UsageError

    with pytest.raises(UsageError, match=r"no column 'image'.*picture, caption"):
        clipkit.classify(str(tmp_path / "dd"), _labels(), model=shapes_clip, image_column="image")


@needs_shapes_clip
def test_hf_imagefolder_rows_are_its_files_with_the_same_results_as_files(tmp_path, shapes_clip, world):
    import clipkit

    folder = tmp_path / "imgs"
    for i, scene in enumerate(world):
        (folder / scene.names[0].split()[1]).mkdir(parents=True, exist_ok=True)
        scene.image.save(folder / scene.names[0].split()[1] / f"s{i}.png")
    as_hf = clipkit.classify(str(folder), _labels(), model=shapes_clip, input_format="hf")
    as_files = clipkit.classify(str(folder), _labels(), model=shapes_clip)
    assert sorted(r.path for r in as_hf) == sorted(r.path for r in as_files)
    assert len(as_hf) == N_SCENES
    files = _by_path(as_files)
    for result in as_hf:
        assert result.labels == files[result.path].labels
        assert result.scores.tolist() == pytest.approx(files[result.path].scores.tolist(), abs=1e-6)


def test_image_key_is_chosen_like_clip_retrieval_and_missing_images_are_error_records(tmp_path):
    import webdataset as wds

    shard = tmp_path / "mixed.tar"
    world = scenes(2)
    with wds.TarWriter(str(shard)) as writer:
        writer.write({"__key__": "a", "png": _png(world[0].image), "jpg": jpeg(world[1].image)})
        writer.write({"__key__": "b", "png": _png(world[1].image), "json": b"{}"})
        writer.write({"__key__": "c", "txt": b"caption only"})
    default = collect_inputs(str(shard))
    assert [i.key for i in default] == [f"{shard}/a", f"{shard}/b", f"{shard}/c"]
    assert default[0].source.name == "a.jpg"  # jpg before png, as open_clip and clip-retrieval prefer
    assert decode(default[1]).size == (160, 128)
    with pytest.raises(Exception, match=r"sample has no image: an image member is missing \(it has txt\)"):
        decode(default[2])
    only_png = collect_inputs(str(shard), image_column="png")
    assert only_png[0].source.name == "a.png"
    with pytest.raises(Exception, match=r"a \.png member is missing \(it has txt\)"):
        decode(only_png[2])


def test_compressed_and_truncated_shards_are_read_without_extracting(tmp_path):
    world = scenes(3)
    plain = tmp_path / "s.tar"
    write_scene_shard(plain, world)
    gz = tmp_path / "s.tar.gz"
    import gzip

    gz.write_bytes(gzip.compress(plain.read_bytes()))
    pixels = [decode(i).tobytes() for i in collect_inputs(str(plain))]
    assert [decode(i).tobytes() for i in collect_inputs(str(gz))] == pixels
    # a shard cut in the middle of its third image: the samples before it decode, the rest are error records
    data = plain.read_bytes()
    with tarfile.open(plain) as archive:
        third = [m for m in archive.getmembers() if m.name.endswith(".jpg")][2]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: third.offset_data + 100])
    items = collect_inputs(str(cut))
    assert decode(items[0]).size == (160, 128) and decode(items[1]).size == (160, 128)
    with pytest.raises(Exception, match=r"truncated|cannot read the tar shard"):
        for item in items[2:]:
            decode(item)
    missing = collect_inputs(str(tmp_path / "nope.tar"))
    assert [i.key for i in missing] == [str(tmp_path / "nope.tar")]
    with pytest.raises(Exception, match="no such file"):
        decode(missing[0])


def test_folder_of_shards_and_brace_patterns_with_input_format_webdataset(tmp_path):
    (tmp_path / "shards").mkdir()
    for n in range(3):
        write_scene_shard(tmp_path / "shards" / f"{n:05d}.tar", scenes(2, seed=n))
    folder = collect_inputs(str(tmp_path / "shards"), input_format="webdataset")
    assert len(folder) == 6 and folder[0].key == f"{tmp_path}/shards/00000.tar/000000"
    braces = collect_inputs(f"{tmp_path}/shards/{{00001..00002}}.tar")
    assert [i.key for i in braces] == [i.key for i in folder[2:]]
    # as files, a folder of shards holds no images: the usual usage error
    from clipkit.errors import UsageError

    with pytest.raises(UsageError, match="no input images"):
        collect_inputs(str(tmp_path / "shards"), input_format="files")


def test_cli_reads_a_shard_resumes_by_sample_key_and_names_artefacts_by_sample(tmp_path, tiny_model_dir):
    from clipkit.cli.app import app

    shard = tmp_path / "data.tar"
    write_scene_shard(shard, scenes(3), corrupt_at=1)
    out = tmp_path / "seg.jsonl"
    args = ["segment", str(shard), "-l", "red circle,blue square", "-m", str(tiny_model_dir), "-o", str(out),
            "-d", str(tmp_path / "pics"), "-q"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output  # one input failed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in records] == [f"{shard}/{k}" for k in ["000000", "broken", "000001", "000002"]]
    assert "error" in records[1]
    assert sorted(p.name for p in (tmp_path / "pics").glob("*.mask.png")) == [
        f"{k}.mask.png" for k in ["000000", "000001", "000002"]]
    # --resume keeps the three results and retries only the broken sample
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 1
    resumed = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in resumed] == [r["path"] for r in records if "error" not in r] + [f"{shard}/broken"]
