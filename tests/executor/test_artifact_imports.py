"""Which URIs dsl.importer may import: below the import roots, in the artifact store."""

from __future__ import annotations

from pathlib import Path

from skit_pipelines.artifact_imports import ImportPolicy


def test_file_uris_below_an_import_root_or_in_the_store_only(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    store.mkdir()
    (data / "link").symlink_to(tmp_path)
    policy = ImportPolicy(roots=(data,), artifacts_root=store)

    assert policy.refusal((data / "a" / "b.csv").as_uri()) is None
    assert policy.refusal((store / "runs" / "r" / "x").as_uri()) is None
    assert policy.refusal("file://localhost" + str(data / "x")) is None
    assert policy.refusal((tmp_path / "x").as_uri()) == (
        f"{(tmp_path / 'x').as_uri()} is outside the import roots ({data})"
    )
    assert "outside the import roots" in (policy.refusal((data / "link" / "x").as_uri()) or "")
    assert "outside the import roots" in (policy.refusal((data / ".." / "x").as_uri()) or "")
    assert (
        policy.refusal("file://host/data/x")
        == "file://host/data/x is not a file:///absolute/path URI"
    )
    assert (
        policy.refusal(str(data / "x"))
        == f"{data / 'x'} is a path, not a URI: write file://{data / 'x'}"
    )


def test_without_import_roots_the_refusal_says_what_to_configure(tmp_path: Path) -> None:
    refusal = ImportPolicy().refusal((tmp_path / "x").as_uri())

    assert refusal is not None and "set SKIT_IMPORT_ROOTS" in refusal


def test_s3_uris_in_the_artifact_stores_bucket_and_prefix_only() -> None:
    policy = ImportPolicy(artifacts_url="s3://bucket/prefix/")

    assert policy.refusal("s3://bucket/prefix/datasets/a.csv") is None
    assert policy.refusal("s3://bucket/prefix") is None
    assert policy.refusal("s3://bucket/other/a.csv") == (
        "s3://bucket/other/a.csv is outside the artifact store s3://bucket/prefix"
    )
    assert policy.refusal("s3://elsewhere/prefix/a.csv") is not None
    assert policy.refusal("s3://bucket/prefix/../x") is not None
    assert "only when the artifact store is on S3" in (
        ImportPolicy().refusal("s3://bucket/prefix/a") or ""
    )


def test_other_schemes_are_refused() -> None:
    for uri in ("gs://b/x", "https://example.com/x", "minio://b/x", ""):
        refusal = ImportPolicy(roots=(Path("/"),)).refusal(uri)
        assert refusal is not None and "imports file:// URIs below its import roots" in refusal
