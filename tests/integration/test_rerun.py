"""`anna-run rerun` repeats a run exactly, and `anna-run images` shows what runs used."""

from __future__ import annotations

import json

BB = "anna-run/busybox:latest"

YML = f"""
environment: {{image: {BB}}}
t:
  job: ['mkdir -p out; cat data.txt > out/r.txt; echo "$X $API_KEY" >> out/r.txt; cat $PAYLOAD_PATH >> out/r.txt']
  output: {{result: out/r.txt}}
"""


def test_rerun_repeats_code_payload_image_and_variables(env, busybox):
    env.project(YML, {"data.txt": "one\n", "p.json": '{"P": 1}'})
    res = env.run("t", "--var", "X=1", "--secret", "API_KEY=abcdefgh", "--payload", "p.json", "--network", "none")
    assert res.returncode == 0, res.output
    original = env.last()
    (env.root / "data.txt").write_text("two\n")  # the working tree changes; the rerun must not see it
    (env.root / "askanna.yml").write_text(YML.replace("cat data.txt", "echo changed"))
    missing = env.run("rerun", original["id"])
    assert missing.returncode == 2 and "API_KEY" in missing.stderr
    again = env.run("rerun", original["id"][:8], "--secret", "API_KEY=abcdefgh")
    assert again.returncode == 0, again.output
    rerun = env.last()
    assert rerun["id"] != original["id"] and rerun["rerun_of"] == original["id"]
    assert rerun["result"]["sha256"] == original["result"]["sha256"]
    assert rerun["package"] == original["package"] and rerun["payload"] == original["payload"]
    assert rerun["image"]["id"] == original["image"]["id"]
    assert rerun["variables"] == original["variables"] == {"X": "1", "API_KEY": "***", "P": "1"}
    assert env.run("result").stdout == 'one\n1 abcdefgh\n{"P": 1}'


def test_rerun_of_a_built_image_that_is_gone(env, busybox, api):
    env.project(
        """
        environment: {build: Dockerfile}
        t: {job: [cat /stamp]}
        """,
        {"Dockerfile": f"FROM {BB}\nRUN echo built > /stamp\n"},
    )
    assert env.run("t", "--network", "none").returncode == 0
    original = env.last()
    api.remove_image(original["image"]["id"], force=True)
    res = env.run("rerun", original["id"])
    assert res.returncode == 125 and "gone" in res.stderr and "Traceback" not in res.output


def test_images_lists_what_runs_used_and_prune_keeps_others(env, busybox, api):
    env.project(
        """
        environment: {build: Dockerfile}
        t: {job: [echo hi]}
        """,
        {"Dockerfile": f"FROM {BB}\nLABEL purpose=test\n"},
    )
    assert env.run("t", "--network", "none").returncode == 0
    built = env.last()["image"]["id"]
    listed = json.loads(env.run("images", "--json").stdout)
    row = next(r for r in listed if r["id"] == built)
    assert row["runs"] == 1 and row["built"] and row["size"] and row["last_used"]
    dry = json.loads(env.run("images", "prune", "--dry-run", "--json").stdout)
    assert built in {r["id"] for r in dry}
    assert env.run("images", "prune").returncode == 0
    assert built not in {image["Id"] for image in api.images()}
    assert api.inspect_image(BB)  # not ours to prune


def test_rerun_refuses_what_a_run_refuses(env, busybox):
    """A rerun goes through the same checks as a new run: a secret given again whose value
    would be code in `$(( ))` is refused, and nothing runs."""
    env.project(
        f"""
        environment: {{image: {BB}}}
        t: {{job: ['echo $(( {{{{ N }}}} + 1 ))']}}
        """
    )
    res = env.run("t", "--secret", "N=41", "--network", "none")
    assert res.returncode == 0 and "42" in res.stdout, res.output
    original = env.last()
    before = len(env.records())
    refused = env.run("rerun", original["id"], "--secret", "N=a[$(touch /tmp/pwned)]")
    assert refused.returncode == 2 and "$(( ))" in refused.stderr, refused.output
    assert "Traceback" not in refused.output and len(env.records()) == before
    again = env.run("rerun", original["id"], "--secret", "N=1")
    assert again.returncode == 0 and "2" in again.stdout, again.output
