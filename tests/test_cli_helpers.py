"""What ``lrsl-rt``, ``lrsl-rt serve`` and ``--engine ray`` share below them: which bundle directory
(:mod:`lrsl_rt.bundle_dir`) and predicting the good rows of a chunk (:mod:`lrsl_rt.rows`)."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from lrsl_rt import bundle_dir, rows
from lrsl_rt.errors import UsageError


def test_the_docstring_examples_hold():
    for module in (bundle_dir, rows):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_bundle_comes_from_the_flag_then_the_environment_then_the_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv(bundle_dir.BUNDLE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert bundle_dir.resolve_bundle(None) == (None, "the default")
    full, quick = (Path(p) for p in bundle_dir.DEFAULT_BUNDLES)
    quick.mkdir(parents=True)
    assert bundle_dir.resolve_bundle(None) == (quick, "the default")
    full.mkdir(parents=True)
    assert bundle_dir.resolve_bundle(None) == (full, "the default")
    monkeypatch.setenv(bundle_dir.BUNDLE_ENV, str(tmp_path))
    assert bundle_dir.resolve_bundle(None) == (tmp_path, "$LRSL_RT_BUNDLE")
    assert bundle_dir.require_bundle(None) == tmp_path
    assert bundle_dir.resolve_bundle("b") == (Path("b"), "--bundle")


def test_a_missing_bundle_is_one_usage_error_naming_where_it_came_from(monkeypatch, tmp_path):
    monkeypatch.setenv(bundle_dir.BUNDLE_ENV, str(tmp_path / "gone"))
    with pytest.raises(UsageError, match=r"^bundle directory .*gone \(\$LRSL_RT_BUNDLE\) not found; pass"):
        bundle_dir.require_bundle(None)


def test_predict_rows_sends_the_good_texts_in_one_call(tiny_bundle_fp32):
    from lrsl_rt import Reranker

    r = Reranker.from_bundle(tiny_bundle_fp32)
    texts, errors = ["my card", None, "lost card", None], [None, "empty line", None, "x"]
    got = rows.predict_rows(r, texts, errors)
    alone = [p.to_dict() for p in r.predict(["my card", "lost card"])]
    assert got == [alone[0], None, alone[1], None]
