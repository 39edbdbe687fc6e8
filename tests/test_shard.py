"""``--shard i/N``: N disjoint parts whose union is every input, the same whatever the input order; outputs merge by
concatenation; bad syntax is a one-line usage error before anything heavy is imported."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from conftest import make_image
from typer.testing import CliRunner

from clipkit.runner import collect_inputs


def _keys(items) -> list[str]:
    return [i.key for i in items]


def test_three_shards_partition_the_inputs_in_any_order(tmp_path):
    paths = [f"{tmp_path}/photos/{i // 50}/img_{i:04d}.jpg" for i in range(300)]  # missing files are inputs too
    parts = [set(_keys(collect_inputs(paths, shard=f"{i}/3"))) for i in range(3)]
    assert set().union(*parts) == set(paths)
    assert sum(len(p) for p in parts) == len(paths)  # disjoint
    assert all(60 <= len(p) <= 140 for p in parts), [len(p) for p in parts]  # a hash: roughly even
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    for i in range(3):
        again = collect_inputs(shuffled, shard=(i, 3))
        assert set(_keys(again)) == parts[i]
        assert _keys(again) == [p for p in shuffled if p in parts[i]]  # the given order is kept within a part
    # an input's part does not depend on the other inputs
    assert set(_keys(collect_inputs(paths[:40], shard="1/3"))) == parts[1] & set(paths[:40])
    assert _keys(collect_inputs(paths, shard="0/1")) == paths


def test_dataset_samples_are_sharded_by_sample_key(tmp_path):
    from test_dataset_inputs import scenes, write_scene_shard

    keys = write_scene_shard(tmp_path / "a.tar", scenes(6))
    whole = _keys(collect_inputs(str(tmp_path / "a.tar")))
    assert whole == [f"{tmp_path}/a.tar/{k}" for k in keys]
    parts = [_keys(collect_inputs(str(tmp_path / "a.tar"), shard=f"{i}/2")) for i in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(whole) and not set(parts[0]) & set(parts[1])


@pytest.mark.parametrize("option", [
    *(["--shard", spec] for spec in ["1", "a/b", "3/3", "-1/3", "0/0", "1/2/3", ""]),
    ["--engine", "spark"], ["--input-format", "zip"], ["--ray-concurrency", "2"], ["--ray-gpus", "1"]])
def test_bad_shard_engine_or_format_is_one_line_usage_error_without_torch(option, tmp_path):
    code = (
        "import sys\n"
        f"sys.argv = ['clipkit', 'segment', {str(tmp_path)!r}, '-l', 'a,b', *{option!r}]\n"
        "from clipkit.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    print('EXIT', exc.code)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["EXIT", "2", "NO-TORCH"]
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"Error: {option[0]}") or done.stderr.startswith(f"Error: unknown {option[0]}")


def test_sharded_runs_concatenate_to_the_whole_run(tmp_path, tiny_model_dir):
    from clipkit.cli.app import app

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(7):
        make_image(folder / f"im{i}.png", (30 * i, 200 - 20 * i, 90))
    base = ["classify", str(folder), "-l", "red,green,blue", "-m", str(tiny_model_dir), "-q", "-f", "jsonl"]
    whole = CliRunner().invoke(app, base)
    assert whole.exit_code == 0, whole.output
    parts = []
    for i in range(3):
        out = tmp_path / f"part-{i}.jsonl"
        done = CliRunner().invoke(app, [*base, "--shard", f"{i}/3", "-o", str(out)])
        assert done.exit_code == 0, done.output
        parts.append(out.read_text())
        assert json.loads((tmp_path / f"part-{i}.jsonl.run.json").read_text())["shard"] == f"{i}/3"
    merged = sorted(json.loads(line)["path"] for line in "".join(parts).splitlines())
    assert merged == sorted(json.loads(line)["path"] for line in whole.stdout.splitlines())
    by_path = {json.loads(x)["path"]: json.loads(x) for x in whole.stdout.splitlines()}
    for line in "".join(parts).splitlines():  # the same results (batches differ: float noise only)
        record, alone = json.loads(line), by_path[json.loads(line)["path"]]
        assert [x["label"] for x in record["labels"]] == [x["label"] for x in alone["labels"]]
        assert [x["score"] for x in record["labels"]] == pytest.approx([x["score"] for x in alone["labels"]],
                                                                       abs=1e-5)


def test_a_part_that_no_input_falls_in_is_an_empty_result(tmp_path, tiny_model_dir):
    """With more parts than inputs some parts are empty: each still exits 0 and writes an (empty) file, so a
    fleet of `--shard i/N` jobs never fails on a small collection and the parts still concatenate."""
    from clipkit.cli.app import app

    make_image(tmp_path / "only.png", (200, 30, 30))
    base = ["classify", str(tmp_path / "only.png"), "-l", "red,blue", "-m", str(tiny_model_dir), "-f", "jsonl"]
    sizes = []
    for i in range(4):
        out = tmp_path / f"part-{i}.jsonl"
        done = CliRunner().invoke(app, [*base, "--shard", f"{i}/4", "-o", str(out)])
        assert done.exit_code == 0, done.output
        sizes.append(len(out.read_text().splitlines()))
    assert sorted(sizes) == [0, 0, 0, 1]
