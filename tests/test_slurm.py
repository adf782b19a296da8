"""The workflow on a real SLURM cluster, not a mock: one node on this machine.

The test installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing
(as root, as in CI), starts munged, slurmctld and slurmd itself with a one-node slurm.conf in a
temporary directory (no systemd, no cgroups, no slurmdbd) and runs the tiny end-to-end config
through ``snakemake --profile tests/slurm/profile``: every job is a SLURM job submitted by
snakemake-executor-plugin-slurm. Then: a failing job is reported and Snakemake exits non-zero;
a training job requeued by SLURM, as on preemption, resumes from its SIGTERM checkpoint. The
daemons are stopped by PID at teardown, also when a test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from slurm.cluster import Cluster, ensure_slurm

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "workflow" / "config.yaml"
OVERLAY = ROOT / "tests" / "slurm" / "config.yaml"
PROFILE = ROOT / "tests" / "slurm" / "profile"
FACILITY_PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
#: facility-profile keys the test profile leaves out or sets otherwise (one node)
FACILITY_ONLY = {"jobs", "latency-wait"}
#: test-profile keys for a cluster without slurmdbd (see tests/slurm/profile/config.yaml)
TEST_ONLY = {
    "slurm-status-command",
    "slurm-no-account",
    "slurm-init-seconds-before-status-checks",
    "slurm-keep-successful-logs",
}

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def cluster():
    tools = ensure_slurm()
    c = Cluster(Path(tempfile.mkdtemp(prefix="vxslurm-", dir="/tmp")), tools)
    try:
        try:
            c.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            pytest.fail(f"could not start the one-node SLURM cluster: {exc}")
        yield c
    finally:
        c.stop()
        shutil.rmtree(c.base, ignore_errors=True)


# ---------------------------------------------------------------------- snakemake


def snakemake_cmd(
    workdir: Path, *args: str, targets: Sequence[str] = (), configfiles=(TINY, OVERLAY)
) -> list[str]:
    # targets first: --configfile takes one or more values and would swallow them
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    return [*cmd, "--profile", str(PROFILE), *args, "--configfile", *map(str, configfiles)]


class Snakemake:
    """A Snakemake run in the background on the cluster; its console goes to ``<workdir>.out``."""

    def __init__(self, cluster: Cluster, workdir: Path, *args: str, **kw):
        self.cluster, self.out = cluster, workdir.with_name(workdir.name + ".out")
        with open(self.out, "w") as fh:
            self.proc = subprocess.Popen(
                snakemake_cmd(workdir, *args, **kw),
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=cluster.env,
                cwd=workdir,
            )

    @property
    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait(self, timeout: float = 900) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"snakemake did not finish in {timeout:.0f} s:\n{self.text[-4000:]}\n{self.cluster.report()}"
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def submissions(text: str) -> list[tuple[str, str]]:
    """(rule, SLURM job id) of every job Snakemake submitted, from its console."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", text)
    return [(rule, jobid) for jobid, rule in found]


def finished(text: str) -> Counter:
    """Rule -> number of jobs Snakemake saw finish, from its console."""
    return Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", text))


def write_sheet(workdir: Path, rows: Sequence[str]) -> None:
    header = (ROOT / "config" / "movies.tsv").read_text().splitlines()[0]
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "movies.tsv").write_text("\n".join([header, *rows]) + "\n")


def write_truncated_movie(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.random.default_rng(3).integers(100, 200, (12, 4, 40, 40)).astype(np.uint16)
    tifffile.imwrite(path, frames, photometric="minisblack", metadata={"axes": "TCYX"})
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """Two Snakemake runs at once on the cluster: the tiny config's default target for one
    movie (demo1), and the header check of a movie whose TIFF is truncated (with one retry)."""
    good, bad = tmp_path_factory.mktemp("good"), tmp_path_factory.mktemp("bad")
    demo1 = [r for r in (ROOT / "config" / "movies.tsv").read_text().splitlines() if r.startswith("demo1\t")]
    write_sheet(good, demo1)
    write_truncated_movie(bad / "data" / "bad.tif")
    write_sheet(bad, ["bad\tdata/bad.tif\t\t\t\t\t\t100\t4"])
    started = []
    try:
        started.append(Snakemake(cluster, good))
        started.append(Snakemake(cluster, bad, "--retries", "1", targets=["results/movies/bad/info.yaml"]))
        for run in started:
            run.wait()
    finally:
        for run in started:
            run.kill()
    return {"good": (good, started[0]), "bad": (bad, started[1])}


@pytest.fixture(scope="module")
def run(runs, cluster):
    workdir, sm = runs["good"]
    assert sm.proc.returncode == 0, f"{sm.text[-6000:]}\n{cluster.report()}"
    return workdir, sm.text


# ------------------------------------------------------------------------- tests


def test_test_profile_is_the_facility_profile_for_a_cluster_without_accounting():
    facility = yaml.safe_load(FACILITY_PROFILE.read_text())
    test = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert facility["executor"] == "slurm"
    assert set(test) - set(facility) == TEST_ONLY
    assert set(facility) - set(test) <= FACILITY_ONLY
    for key in set(facility) - FACILITY_ONLY:
        assert test[key] == facility[key], key
    assert test["slurm-status-command"] == "squeue" and test["slurm-no-account"] is True


def test_facility_profile_plans_a_run_with_the_pip_install(tmp_path):
    """`snakemake --profile profiles/slurm -n` with the pip install (the venv's Snakemake and
    SLURM plugin, no conda on PATH): the profile does not ask for conda (--use-conda does)."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "movies.tsv", tmp_path / "config" / "movies.tsv")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path)]
    cmd += ["--profile", str(FACILITY_PROFILE.parent), "-n", "--configfile", str(TINY)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "conda" not in out.lower(), out[-3000:]
    assert re.search(r"^train_model\s+1$", out, re.M), out[-3000:]
    assert "use-conda" not in yaml.safe_load(FACILITY_PROFILE.read_text())


def test_every_rule_takes_threads_memory_and_time_from_config():
    """A facility tunes every rule in config `resources`: each rule reads its entry, and each
    entry of config.yaml is the schema's default (the schema lists every rule)."""
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    entries = schema["properties"]["resources"]["properties"]
    rules = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for name, body in re.findall(
            r"^(?:rule|checkpoint) (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), re.S | re.M
        ):
            rules[name] = body
    assert rules
    for name, body in rules.items():
        assert f'threads: rule_threads("{name}")' in body, name
        for key in ("mem_mb", "runtime"):
            assert f'{key}=rule_resource("{name}", "{key}")' in body, (name, key)
    assert set(entries) - {"default"} == set(rules)
    shipped = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["resources"]
    assert shipped == {name: entry["default"] for name, entry in entries.items() if name != "default"} | {
        "default": {k: v["default"] for k, v in entries["default"]["properties"].items()}
    }


def test_every_rule_ran_as_a_slurm_job(run, cluster):
    workdir, text = run
    done = finished(text)
    assert done.pop("all") == 1  # the default target runs no command: not a job
    assert Counter(rule for rule, _ in submissions(text)) == done, text[-4000:]
    assert {"demo_beads", "train_model", "movie_info", "localize_chunk", "render_movie"} <= set(done)
    jobs = cluster.jobs()
    for rule, jobid in submissions(text):
        assert jobs[jobid]["state"] == "COMPLETED", (rule, jobs[jobid])
        assert jobs[jobid]["comment"].startswith(f"rule_{rule}"), (rule, jobs[jobid])
        logs = list((workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob(f"{jobid}.log"))
        assert len(logs) == 1, (rule, jobid)  # the SLURM job's output file


def test_outputs_exist_and_nothing_is_left_to_do(run, cluster):
    workdir, _ = run
    for path in (
        "results/calibration/psf.yaml",
        "results/models/quick/model.pt",
        "results/localizations/demo1.parquet",
        "results/render/demo1.png",
        "results/evaluation/summary.tsv",
    ):
        assert (workdir / path).is_file(), path
    dry = Snakemake(cluster, workdir, "-n")
    assert dry.wait(300) == 0 and "Nothing to be done" in dry.text, dry.text[-3000:]


def test_slurm_jobs_get_threads_memory_and_time_from_config(run, cluster):
    jobs = cluster.jobs()
    by_rule = {rule: jobs[jobid] for rule, jobid in submissions(run[1])}
    # tests/slurm/config.yaml: train_model threads 2, mem_mb 2000; runtime: the schema's 720 min
    assert [by_rule["train_model"][k] for k in ("cpus", "mem", "time")] == ["2", "2000M", "12:00:00"]
    # the schema's entries: localize_chunk 2 threads, 2000 MB, 60 min; demo_beads 500 MB, 10 min
    assert [by_rule["localize_chunk"][k] for k in ("cpus", "mem", "time")] == ["2", "2000M", "1:00:00"]
    assert [by_rule["demo_beads"][k] for k in ("cpus", "mem", "time")] == ["1", "500M", "10:00"]


def test_failing_job_is_reported_and_snakemake_exits_nonzero(runs, cluster):
    workdir, sm = runs["bad"]
    text = sm.text
    assert sm.proc.returncode != 0, text[-3000:]
    subs = submissions(text)
    assert [rule for rule, _ in subs] == ["movie_info", "movie_info"], text[-3000:]  # --retries 1
    jobs = cluster.jobs()
    for _, jobid in subs:
        assert jobs[jobid]["state"] == "FAILED", jobs[jobid]
        assert f"SLURM-job '{jobid}' failed, SLURM status is: 'FAILED'" in text, text[-3000:]
        assert list((workdir / ".snakemake" / "slurm_logs").rglob(f"{jobid}.log"))  # kept when failed
    assert "Error in rule movie_info" in text
    log = (workdir / "logs" / "localize" / "bad" / "info.log").read_text()
    assert "data/bad.tif: truncated TIFF" in log, log
    assert not (workdir / "results" / "movies" / "bad" / "info.yaml").exists()


def test_requeued_training_resumes_from_its_checkpoint(run, cluster, tmp_path):
    """SLURM requeues the running train_model job (as it does a preempted one): SIGTERM writes
    the checkpoint, the requeued job continues from it, Snakemake waits for the same job id."""
    workdir = tmp_path / "wd"
    shutil.copytree(run[0], workdir, symlinks=True)  # with timestamps and .snakemake: up to date
    model_dir = workdir / "results" / "models" / "quick"
    (model_dir / "checkpoint.pt").unlink(missing_ok=True)
    epochs = 8  # ~1 s each on a CPU: time to requeue the job while it trains
    longer = tmp_path / "epochs.yaml"
    longer.write_text(f"train:\n  epochs: {epochs}\n")
    sm = Snakemake(
        cluster, workdir, targets=["results/models/quick/model.pt"], configfiles=(TINY, OVERLAY, longer)
    )
    try:
        jobid, end = None, time.monotonic() + 300
        while jobid is None and time.monotonic() < end and sm.proc.poll() is None:
            jobs = cluster.jobs().items()
            running = [
                i for i, j in jobs if j["state"] == "RUNNING" and j["comment"].startswith("rule_train_model")
            ]
            if running and (model_dir / "checkpoint.pt").exists():  # after epoch 1: training
                jobid = running[0]
            time.sleep(0.2)
        assert jobid, f"train_model never ran with a checkpoint:\n{sm.text[-3000:]}\n{cluster.report()}"
        requeue = cluster.cmd(cluster.tools["scontrol"], "requeue", jobid)
        assert requeue.returncode == 0, requeue.stderr
        # the requeued job waits ~2 min (BeginTime) before it may start again; not in a test
        end = time.monotonic() + 60
        while cluster.jobs()[jobid]["state"] != "PENDING" and time.monotonic() < end:
            time.sleep(0.2)
        cluster.cmd(cluster.tools["scontrol"], "update", f"JobId={jobid}", "StartTime=now")
        sm.wait(600)
    finally:
        sm.kill()
    text = sm.text
    assert sm.proc.returncode == 0, f"{text[-4000:]}\n{cluster.report()}"
    assert submissions(text) == [("train_model", jobid)]  # SLURM reran it, not Snakemake
    info = cluster.cmd(cluster.tools["scontrol"], "show", "job", jobid).stdout
    assert "Restarts=1" in info and "JobState=COMPLETED" in info, info
    log = (workdir / "logs" / "train" / "quick.log").read_text()  # the second run's
    m = re.search(r"resuming from results/models/quick/checkpoint\.pt at epoch (\d+), batch (\d+)", log)
    assert m, log[-3000:]
    assert (int(m[1]), int(m[2])) > (0, 0) and int(m[1]) < epochs
    rows = (model_dir / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + epochs  # header + one row per epoch, the first run's included
