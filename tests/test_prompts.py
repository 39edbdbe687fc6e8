"""The prompt-template engine: template sets, label parsing, ensembling and the on-disk cache."""

import pytest
import torch
import torch.nn.functional as F

from clipkit import prompts
from clipkit.errors import UsageError


def test_named_template_sets_have_the_published_sizes():
    sets = prompts.template_sets()
    assert len(sets["openai"]) == 80 and len(sets["simple"]) == 7 and sets["none"] == ["{}"]
    assert all(t.count("{}") == 1 for t in sets["openai"])


def test_templates_from_file_inline_and_list(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a photo of a {label}.\n# a comment\n\nart of {}\n")
    assert prompts.resolve_templates(str(path)) == ["a photo of a {}.", "art of {}"]
    assert prompts.resolve_templates("a sketch of a {}") == ["a sketch of a {}"]
    assert prompts.resolve_templates(["{}", "x {label}"]) == ["{}", "x {}"]


@pytest.mark.parametrize("spec", ["no placeholder here {x}", "twice {} {}"])
def test_bad_templates_are_usage_errors(spec):
    with pytest.raises(UsageError, match="placeholder"):
        prompts.resolve_templates(spec)


def test_unknown_template_set_is_a_clear_error():
    with pytest.raises(UsageError, match="unknown template set 'fancy'"):
        prompts.resolve_templates("fancy")


def test_parse_labels_from_string_and_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("red circle\n\nblue square\n")
    assert prompts.parse_labels(" cat , dog") == ["cat", "dog"]
    assert prompts.parse_labels("cat", path) == ["cat", "red circle", "blue square"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [("cat,,dog", "empty label in --labels: remove the stray comma or blank entry"),
     ("cat, ,dog", "empty label in --labels: remove the stray comma or blank entry"),
     ("cat,dog,cat", "duplicate label 'cat': each label must appear once"),
     (None, "no labels given: use --labels a,b,c or --labels-file FILE")],
)
def test_bad_labels_are_usage_errors_with_exact_messages(labels, message):
    with pytest.raises(UsageError) as info:
        prompts.parse_labels(labels)
    assert str(info.value) == message


def test_ensemble_is_mean_of_normalised_template_embeddings(tiny_model):
    templates = ["a photo of a {}.", "a drawing of a {}."]
    got = prompts.text_embeddings(tiny_model, ["cat", "dog"], templates, cache=False)
    for row, label in zip(got, ["cat", "dog"], strict=True):
        per_template = tiny_model.encode_text([t.format(label) for t in templates])
        expected = F.normalize(per_template.mean(0), dim=-1)
        assert torch.allclose(row, expected, atol=1e-6)
    assert torch.allclose(got.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_disk_cache_is_used_on_the_second_run(tiny_model, monkeypatch):
    first = prompts.text_embeddings(tiny_model, ["cat", "dog"], "simple")
    files = list((prompts.cache_dir() / "text").glob("*.npy"))
    assert len(files) == 2
    prompts._MEMORY.clear()

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(prompts, "_encode_labels", fail)
    again = prompts.text_embeddings(tiny_model, ["cat", "dog"], "simple")
    assert torch.equal(first, again)


def test_cache_key_depends_on_templates_model_and_precision(tiny_model):
    a = prompts._key(tiny_model.identity, "fp32", ["{}"], "cat")
    assert a != prompts._key(tiny_model.identity, "fp32", ["a {}"], "cat")
    assert a != prompts._key("other-model", "fp32", ["{}"], "cat")
    assert a != prompts._key(tiny_model.identity, "bf16", ["{}"], "cat")


def test_cache_is_best_effort_and_rebuilds_corrupt_entries(tiny_model, tmp_path, monkeypatch, capsys):
    """A read-only cache warns once and the run goes on; a corrupt (NaN) entry is recomputed, never returned."""
    import numpy as np

    monkeypatch.setenv("CLIPKIT_CACHE_DIR", str(tmp_path / "cache"))
    prompts._MEMORY.clear()
    good = prompts.text_embeddings(tiny_model, ["cat"], "none")
    [entry] = (tmp_path / "cache" / "text").glob("*.npy")
    np.save(entry, np.full(good.shape[1], np.nan, np.float32))
    prompts._MEMORY.clear()
    torch.testing.assert_close(prompts.text_embeddings(tiny_model, ["cat"], "none"), good)
    monkeypatch.setenv("CLIPKIT_CACHE_DIR", "/proc/no-such-dir")  # not writable, even as root
    prompts._MEMORY.clear()
    torch.testing.assert_close(prompts.text_embeddings(tiny_model, ["cat", "dog"], "none")[:1], good)
    assert capsys.readouterr().err.count("warning: text-embedding cache") == 1


def test_labels_file_bom_and_bad_encoding(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffcat\ndog\n".encode())
    assert prompts.parse_labels(labels_file=path) == ["cat", "dog"]
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(UsageError, match="not UTF-8 text"):
        prompts.parse_labels(labels_file=path)


def test_labels_quoted_commas_and_case_duplicates():
    assert prompts.parse_labels('cat, "salt, pepper",dog') == ["cat", "salt, pepper", "dog"]
    with pytest.raises(UsageError, match="differ only in case"):
        prompts.parse_labels("Cat,cat")
