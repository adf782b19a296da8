"""A one-node SLURM cluster on this machine for tests/test_slurm.py: munged, slurmctld and
slurmd started as child processes with their state, logs and slurm.conf in a temporary
directory (no systemd, no cgroups, no slurmdbd), stopped by PID."""

from __future__ import annotations

import getpass
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
TOOLS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
NODE = "vxnode"


def unavailable(reason: str) -> None:
    """Skip the test, except in CI (env CI=true), where a missing cluster is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"SLURM test cannot run in CI: {reason}")
    pytest.skip(reason)


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t, path=SEARCH_PATH) is None]


def ensure_slurm() -> dict[str, str]:
    """The SLURM and munge programs, installed from Debian's packages when missing (root)."""
    if missing_tools():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            unavailable(
                f"{', '.join(missing_tools())} missing; installing {' '.join(PACKAGES)} needs root and apt-get"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
            if proc.returncode != 0:
                unavailable(f"`{' '.join(cmd)}` failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        if missing_tools():
            unavailable(f"{', '.join(missing_tools())} still missing after installing {' '.join(PACKAGES)}")
    if os.geteuid() != 0:
        unavailable("slurmd must run as root to start jobs as their user")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        unavailable('snakemake-executor-plugin-slurm is not installed: pip install -e ".[test]"')
    return {t: shutil.which(t, path=SEARCH_PATH) for t in TOOLS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mem_total_mb() -> int:
    text = Path("/proc/meminfo").read_text()
    return int(re.search(r"MemTotal:\s+(\d+) kB", text).group(1)) // 1024


class Cluster:
    """munged, slurmctld and slurmd of a one-node cluster under ``base``, run as child processes."""

    def __init__(self, base: Path, tools: dict[str, str]):
        self.base, self.tools = base, tools
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = base / "slurm.conf"
        for d in ("state", "spool", "log", "munge", "bin"):
            (base / d).mkdir()
        base.chmod(0o755)  # munged: every directory above its socket must be searchable by all
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_"))
        }
        # the jobstep plugin runs each job through srun with SLURM_* removed from its
        # environment: a real cluster's srun finds /etc/slurm/slurm.conf, this one needs a shim
        shim = base / "bin" / "srun"
        shim.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{tools["srun"]}" "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = os.pathsep.join([str(base / "bin"), env.get("PATH", "")])
        env["SLURM_CONF"] = str(self.conf)
        self.env = env

    def write_conf(self) -> None:
        host, base, user = socket.gethostname(), self.base, getpass.getuser()
        cpus, mem = os.cpu_count() or 1, int(0.9 * mem_total_mb())
        ctld_port = free_port()
        slurmd_port = next(p for p in iter(free_port, None) if p != ctld_port)
        self.conf.write_text(
            f"""\
ClusterName=voxloctest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge/socket
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# finished jobs stay visible to squeue (the profile's status command) this long
MinJobAge=600
KillWait=10
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""
        )

    # ------------------------------------------------------------------ processes

    def spawn(self, name: str, cmd: Sequence[str]) -> None:
        out = open(self.base / "log" / f"{name}.out", "w")  # noqa: SIM115 (closed with the process)
        self.procs[name] = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        out.close()  # the child holds its own descriptor

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}\n{self.report()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.report()}")

    def cmd(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=self.env)

    def start(self) -> None:
        t = self.tools
        key = self.base / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        sock = self.base / "munge" / "socket"
        m = self.base / "munge"
        self.spawn(
            "munged",
            [t["munged"], "-F", f"--key-file={key}", f"--socket={sock}", f"--pid-file={m}/munged.pid",
             f"--log-file={self.base}/log/munged.log", f"--seed-file={m}/munged.seed"],
        )  # fmt: skip
        self.wait_for("the munge socket", sock.exists, 30)
        self.write_conf()
        self.spawn("slurmctld", [t["slurmctld"], "-D", "-i", "-f", str(self.conf)])
        self.wait_for("slurmctld", lambda: "is UP" in self.cmd(t["scontrol"], "ping").stdout, 60)
        self.spawn("slurmd", [t["slurmd"], "-D", "-N", NODE, "-f", str(self.conf)])
        self.wait_for("the node to be idle", lambda: self.node_state() == "idle", 90)

    def node_state(self) -> str:
        return self.cmd(self.tools["sinfo"], "-h", "-N", "-o", "%T").stdout.strip()

    def stop(self) -> None:
        """Cancel what is left of the jobs, then stop slurmd, slurmctld and munged by PID."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                self.cmd(self.tools["scancel"], "--full", "-u", getpass.getuser())
                end = time.monotonic() + 60
                while (
                    time.monotonic() < end
                    and self.cmd(
                        self.tools["squeue"], "-h", "-t", "PENDING,RUNNING,COMPLETING,SUSPENDED"
                    ).stdout.strip()
                ):
                    time.sleep(1)
            except (subprocess.SubprocessError, OSError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)

    # ------------------------------------------------------------------ inspection

    def report(self) -> str:
        """The tails of the daemons' logs, for failure messages."""
        parts = []
        for path in sorted((self.base / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-40:]
            parts.append(f"----- {path.name} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(parts)

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job slurmctld still knows (MinJobAge): id -> comment, state, cpus, memory, time limit."""
        proc = self.cmd(self.tools["squeue"], "-h", "--states=all", "-o", "%i|%k|%T|%C|%m|%l")
        assert proc.returncode == 0, proc.stderr
        rows = [line.split("|") for line in proc.stdout.splitlines() if line.strip()]
        return {
            r[0]: dict(zip(("comment", "state", "cpus", "mem", "time"), r[1:], strict=True)) for r in rows
        }
