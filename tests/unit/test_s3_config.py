"""S3 configuration: the s3:// URL, and endpoint, credentials and retries from the environment."""

from __future__ import annotations

import pytest
from anna_run.errors import ConfigError
from anna_run.store.s3_config import parse_s3_url, s3_config

CREDS = {"ANNA_RUN_S3_ACCESS_KEY": "ak", "ANNA_RUN_S3_SECRET_KEY": "sk"}


# -- s3:// URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://runs", "runs", ""),
        ("s3://runs/", "runs", ""),
        ("s3://my-bucket.example/team/a", "my-bucket.example", "team/a"),
        ("s3://abc/x/", "abc", "x"),
        ("s3://a1b/x_y-z.1", "a1b", "x_y-z.1"),
    ],
)
def test_parse_s3_url(url: str, bucket: str, prefix: str) -> None:
    assert parse_s3_url(url) == (bucket, prefix)


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3:///prefix",
        "s3://ab",
        "s3://Upper",
        "s3://under_score",
        "s3://-leading",
        "s3://trailing-",
        "s3://dou..ble",
        "s3://a.-b",
        "s3://192.168.1.1",
        "s3://" + "a" * 64,
        "s3://bucket//x",
        "s3://bucket/a//b",
        "s3://bucket/../x",
        "s3://bucket/./x",
        "s3://bucket/x?y=1",
        "s3://bucket#frag",
        "s3://user@bucket",
        "s3://bucket/with space",
        "s3://bucket/tab\there",
        "s3:/bucket",
        "S3://bucket",
    ],
)
def test_malformed_s3_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_s3_url(url)


# -- endpoint and credentials -----------------------------------------------------------------------


def test_ours_first_then_aws() -> None:
    env = {
        "ANNA_RUN_S3_ENDPOINT": "http://127.0.0.1:9000",
        "AWS_ENDPOINT_URL": "https://aws.example",
        **CREDS,
        "AWS_ACCESS_KEY_ID": "aws-ak",
        "AWS_SECRET_ACCESS_KEY": "aws-sk",
        "AWS_SESSION_TOKEN": "tok",
        "AWS_REGION": "eu-west-1",
    }
    c = s3_config(env)
    assert (c.endpoint, c.secure, c.access_key, c.secret_key, c.region) == (
        "127.0.0.1:9000",
        False,
        "ak",
        "sk",
        "eu-west-1",
    )
    assert c.session_token is None  # AWS's token never goes with our keys
    assert c.url == "http://127.0.0.1:9000"


def test_aws_variables_when_ours_are_absent() -> None:
    env = {
        "AWS_ENDPOINT_URL": "https://minio.example:9443/",
        "AWS_ACCESS_KEY_ID": "aws-ak",
        "AWS_SECRET_ACCESS_KEY": "aws-sk",
        "AWS_SESSION_TOKEN": "tok",
    }
    c = s3_config(env)
    assert (c.endpoint, c.secure, c.access_key, c.secret_key, c.session_token) == (
        "minio.example:9443",
        True,
        "aws-ak",
        "aws-sk",
        "tok",
    )
    assert c.region is None


def test_defaults_to_aws_over_https() -> None:
    c = s3_config({**CREDS})
    assert (c.endpoint, c.secure, c.attempts) == ("s3.amazonaws.com", True, 5)


def test_endpoint_without_scheme_is_https() -> None:
    assert s3_config({"ANNA_RUN_S3_ENDPOINT": "minio.local:9000", **CREDS}).url == "https://minio.local:9000"


def test_secret_is_not_in_repr() -> None:
    c = s3_config({**CREDS, "ANNA_RUN_S3_SECRET_KEY": "very-secret-value"})
    assert "very-secret-value" not in repr(c)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"ANNA_RUN_S3_ACCESS_KEY": "ak"},
        {"ANNA_RUN_S3_SECRET_KEY": "sk"},
        {"ANNA_RUN_S3_ACCESS_KEY": "ak", "AWS_SECRET_ACCESS_KEY": "sk"},
        {"AWS_ACCESS_KEY_ID": "ak"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "ftp://host"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "http://host:notaport"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "http://host:70000"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "http://host/bucket"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "http://user:pw@host"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "http://"},
        {**CREDS, "ANNA_RUN_S3_RETRIES": "0"},
        {**CREDS, "ANNA_RUN_S3_RETRIES": "many"},
    ],
)
def test_bad_settings_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        s3_config(env)
