"""A subset of the integration tests, run against Podman's Docker-compatible API: the same code
path, another engine (DOCKER_HOST names Podman's socket)."""

from __future__ import annotations

import pytest
import test_bad_input
import test_code_cache
import test_ends
import test_run
import test_sandbox
import test_users
from conftest import Env, podman_client

BB = "anna-run/busybox:latest"


class PodmanEnv(Env):
    def __init__(self, base: Env, host: str) -> None:
        super().__init__(base.root, base.store)
        self.host = host

    def environ(self, **extra: str) -> dict[str, str]:
        return {**super().environ(), "DOCKER_HOST": self.host, **extra}


@pytest.fixture
def penv(env, podman) -> PodmanEnv:
    return PodmanEnv(env, podman)


@pytest.fixture
def papi(podman):
    return podman_client(podman)


@pytest.fixture
def pours(papi, penv):
    from conftest import project_label, run_resources

    yield lambda: run_resources(papi, penv.root)
    for container in papi.containers(all=True, filters={"label": project_label(penv.root)}):
        papi.remove_container(container["Id"], force=True, v=True)
    for volume in (papi.volumes(filters={"label": project_label(penv.root)}) or {}).get("Volumes") or []:
        papi.remove_volume(volume["Name"], force=True)


def test_success_record_and_streams(penv, pours):
    test_run.test_success_record_and_streams(penv, BB)


def test_one_shell_stop_at_first_failure(penv, pours):
    test_run.test_one_shell_stop_at_first_failure(penv, BB)


def test_payload_variables_and_read_only_mount(penv, pours):
    test_run.test_payload_variables_and_read_only_mount(penv, BB)


def test_secrets_are_masked_everywhere(penv, pours):
    test_run.test_secrets_are_masked_everywhere(penv, BB)


def test_artifacts_result_and_globs(penv, pours):
    test_run.test_artifacts_result_and_globs(penv, BB)


def test_symlinks_out_of_the_workspace_are_never_followed(penv, pours):
    test_run.test_symlinks_out_of_the_workspace_are_never_followed(penv, BB)


def test_timeout(penv, papi, pours):
    test_ends.test_timeout_ends_a_job_that_ignores_sigterm(penv, BB, papi)


def test_nothing_created_on_a_config_error(penv, pours):
    test_bad_input.test_unknown_template_variable(penv, pours)


def test_container_settings_and_no_bind_mounts(penv, papi, pours):
    test_sandbox.test_container_settings(penv, BB, papi)


def test_jobs_cannot_do_privileged_things(penv, pours):
    test_sandbox.test_jobs_cannot_do_privileged_things(penv, BB)


def test_nothing_left_after_a_run(penv, pours):
    test_sandbox.test_nothing_left_after_a_run(penv, BB, pours)


def test_a_non_root_user(penv, pours):
    test_users.check_a_user_given_by_option(penv, BB)


def test_the_code_kept_in_the_engine(penv, papi, pours):
    shas = test_code_cache.check_the_tree_as_packed(penv)
    try:
        for sha in shas:
            assert len(papi.images(filters={"label": f"io.anna-run.code.package={sha}"})) == 1
    finally:
        for sha in shas:
            for image in papi.images(filters={"label": f"io.anna-run.code.package={sha}"}):
                papi.remove_image(image["Id"], force=True)
