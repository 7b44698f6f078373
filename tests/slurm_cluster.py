"""A throwaway single-node SLURM for tests and benchmarks.

Follows ``../shared/slurm_local.md``: Debian's ``munge``, ``slurmctld``, ``slurmd`` and
``slurm-client``, no accounting database, ``proctrack/linuxproc`` (no cgroups, so it
runs in containers). Spool, state and logs live in one work folder and the daemons
listen on free ports. The config must sit at SLURM's default path
(``/etc/slurm/slurm.conf``): the Snakemake jobstep executor removes every ``SLURM_*``
variable, ``SLURM_CONF`` included, before its nested ``srun``. So the cluster refuses
to start where a ``slurm.conf`` it did not write exists (a real SLURM is never
touched), and removes its own on stop.

The daemons run in the foreground as child processes and are stopped by their PIDs.
``munged`` is started only when no working one answers; it is then stopped too.

Usage::

    with SlurmCluster(tmp_path / "slurm") as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env)

:class:`SlurmUnavailable` says why a cluster cannot be started (not root, packages
missing and not installable, a daemon not coming up); tests turn it into a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
DAEMONS = {"slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
MUNGED = "/usr/sbin/munged"
MUNGE_RUN_DIRS = ["/run/munge", "/var/log/munge", "/var/lib/munge"]

CONF_PATH = Path("/etc/slurm/slurm.conf")
CONF_MARK = "# written by fiberprep tests/slurm_cluster.py; removed when its cluster stops"
SLURM_CONF = CONF_MARK + """
ClusterName=fiberpreptest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmdSpoolDir={state}/slurmd
StateSaveLocation={state}/slurmctld
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be started here; the message says why and what would fix it."""


def _run(cmd, timeout=60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def _missing_commands() -> list[str]:
    needed = [DAEMONS["slurmctld"], DAEMONS["slurmd"], MUNGED, "sbatch", "squeue", "munge"]
    return [c for c in needed if shutil.which(c) is None]


def ensure_installed() -> None:
    """Install the Debian/Ubuntu SLURM and munge packages when they are missing.

    Raises
    ------
    SlurmUnavailable
        When they are missing and cannot be installed (not root, no apt-get, or
        apt-get failed), with apt's last lines.
    """
    missing = _missing_commands()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmUnavailable(
            f"SLURM not installed ({', '.join(missing)} missing) and not installable "
            "here (needs root and apt-get): apt-get install " + " ".join(PACKAGES)
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *PACKAGES]):
        done = _run(cmd, timeout=600, env=env)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-5:])
            raise SlurmUnavailable(f"{' '.join(cmd)} failed:\n{tail}")
    if missing := _missing_commands():
        raise SlurmUnavailable(f"still missing after apt-get install: {missing}")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_resources() -> tuple[int, int]:
    """CPUs and memory (MB) that ``slurmd -C`` detects on this machine."""
    out = _run([DAEMONS["slurmd"], "-C"]).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return int(fields.get("CPUs", os.cpu_count() or 1)), int(fields.get("RealMemory", 2000))


def _munge_works() -> bool:
    try:
        cred = _run(["munge", "-n"], timeout=10)
        return cred.returncode == 0 and _run(["unmunge"], input=cred.stdout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class SlurmCluster:
    """Single-node SLURM (controller + node + munge) for the lifetime of a ``with``.

    Parameters
    ----------
    workdir : path
        Folder for ``slurm.conf``, spool, state and daemon logs (created).
    partition : str
        Name of the one (default) partition.
    mem_fraction : float
        Share of the detected memory the node offers to jobs.
    start_timeout_s : float
        How long to wait for the node to become idle.
    """

    def __init__(self, workdir, partition="debug", mem_fraction=0.8, start_timeout_s=60):
        self.workdir = Path(workdir).absolute()
        self.partition = partition
        self.mem_fraction = mem_fraction
        self.start_timeout_s = start_timeout_s
        self.conf = CONF_PATH
        self.cpus = self.mem_mb = 0
        self._procs: list[tuple[str, subprocess.Popen]] = []

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (and Snakemake) that talk to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Install if needed, write the config, start munged/slurmctld/slurmd, wait idle."""
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmctld/slurmd/munged needs root")
        ensure_installed()
        if self.conf.exists() and not self.conf.read_text().startswith(CONF_MARK):
            raise SlurmUnavailable(
                f"{self.conf} exists (a SLURM is configured here); not overwriting it"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_munge()
            self._write_conf()
            for name in ("slurmctld", "slurmd"):
                log = open(self.workdir / f"{name}.stdout", "w")  # noqa: SIM115
                self._spawn(name, [DAEMONS[name], "-D", "-f", str(self.conf)], log)
            self._wait_idle()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name, cmd, log, **kwargs) -> None:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kwargs)
        log.close()
        self._procs.append((name, proc))

    def _start_munge(self) -> None:
        if _munge_works():
            return
        for d in MUNGE_RUN_DIRS:
            Path(d).mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        os.chmod("/run/munge", 0o755)
        log = open(self.workdir / "munged.stdout", "w")  # noqa: SIM115
        self._spawn("munged", [MUNGED, "--foreground"], log, user="munge", group="munge")
        deadline = time.monotonic() + 10
        while not _munge_works():
            self._check_alive()
            if time.monotonic() > deadline:
                raise SlurmUnavailable("munged started but munge -n | unmunge fails")
            time.sleep(0.2)

    def _write_conf(self) -> None:
        state = self.workdir / "state"
        for sub in ("slurmd", "slurmctld"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        cpus, mem_mb = _node_resources()
        self.cpus, self.mem_mb = cpus, int(mem_mb * self.mem_fraction)
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(
            SLURM_CONF.format(
                host=socket.gethostname().split(".")[0],
                ctld_port=ctld_port,
                slurmd_port=slurmd_port,
                state=state,
                cpus=self.cpus,
                mem_mb=self.mem_mb,
                partition=self.partition,
            )
        )

    def _check_alive(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                out = (self.workdir / f"{name}.stdout").read_text(errors="replace")
                raise SlurmUnavailable(
                    f"{name} exited with code {proc.returncode}: {out.strip()[-500:]}"
                )

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            self._check_alive()
            state = _run(["sinfo", "-h", "-o", "%t"], env=self.env, timeout=10).stdout
            if state.strip() == "idle":
                return
            if time.monotonic() > deadline:
                raise SlurmUnavailable(
                    f"node not idle after {self.start_timeout_s} s (sinfo: {state.strip()!r}); "
                    f"see {self.workdir}/state/*.log"
                )
            time.sleep(0.5)

    def jobs(self) -> list[str]:
        """Ids of the jobs this cluster still knows about (pending, running, recent)."""
        out = _run(["squeue", "-h", "-o", "%i"], env=self.env, timeout=10).stdout
        return out.split()

    def stop(self) -> None:
        """Cancel leftover jobs, then stop the daemons this object started (by PID)."""
        if any(name == "slurmctld" and p.poll() is None for name, p in self._procs):
            if ids := self.jobs():
                _run(["scancel", *ids], env=self.env, timeout=30)
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        if self.conf.exists() and self.conf.read_text().startswith(CONF_MARK):
            self.conf.unlink()
