import os
import signal
import socket
import subprocess
import sys
import tempfile

import pytest
import torch

# Unit tests must be quick and deterministic whatever the machine: the smallest budget, and one
# intra-op thread. Their tensors are small, so a second thread only adds synchronisation, and on
# a busy 2-core machine waiting for it made some tests 20-1000x slower.
os.environ.setdefault("GENAI_COURSE_PROFILE", "smoke")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_unet():
    """Factory of U-Nets small enough for unit tests, in eval mode: two levels (8x8 -> 4x4 for
    8x8 inputs), attention at the lower one, no dropout; keyword arguments override the
    UNetConfig fields."""
    from genai_course.models.unet import UNet, UNetConfig

    def make(**kw) -> UNet:
        cfg = dict(
            base_width=8,
            channel_mults=(1, 2),
            attention_levels=(1,),
            attention_heads=2,
            norm_groups=4,
            dropout=0.0,
        )
        return UNet(UNetConfig(**{**cfg, **kw})).eval()

    return make


# -- many processes on one machine -------------------------------------------------------------

# What a launcher sets for its workers: a test run from inside torchrun must not pass them on.
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _loopback_problem() -> str | None:
    """None when one byte goes through a TCP connection on 127.0.0.1, else what failed."""
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            server.settimeout(5)
            with socket.create_connection(server.getsockname(), timeout=5) as client:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(5)
                    client.sendall(b"x")
                    if conn.recv(1) != b"x":
                        return "a byte sent to 127.0.0.1 did not arrive"
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    return None


@pytest.fixture
def loopback() -> None:
    """Fail, naming what is missing, unless TCP on 127.0.0.1 works: torchrun's rendezvous and
    the gloo backend need it, and without it the workers would wait for each other until their
    timeout. A failure rather than a skip, so that CI cannot pass without running them."""
    problem = _loopback_problem()
    if problem:
        pytest.fail(
            "this test starts processes that talk over TCP on the loopback interface "
            f"127.0.0.1, which does not work here ({problem}); bring the loopback interface "
            "up (ip link set lo up) or leave the multi-process tests out with -m 'not slow'",
            pytrace=False,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """The processes started by ``pid`` and by them, from Linux's /proc (empty elsewhere)."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in map(int, f.read().split()):
                    found += [child, *_descendants(child)]
    except OSError:
        pass
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill torchrun and its workers. They run in sessions of their own, so killing a process
    group would miss them: their ids are read before torchrun dies and they are reparented."""
    workers = _descendants(proc.pid)
    if not workers:  # no /proc: torchrun passes SIGTERM on to its workers and waits for them
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:  # already gone
            pass
    proc.wait()


@pytest.fixture
def torchrun(loopback):
    """``torchrun(*args, nproc=2, timeout=180)``: run ``python -m torch.distributed.run
    --nproc_per_node=NPROC --master_port=<a free port> ARGS`` with one thread per process and
    return the CompletedProcess (text output captured). A run still going after ``timeout``
    seconds is killed with all its workers and the test fails with the end of its output."""

    def run(*args: str, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
        env["OMP_NUM_THREADS"] = "1"
        launcher = [f"--nproc_per_node={nproc}", f"--master_port={_free_port()}"]
        cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, *args]
        # Files, not pipes: a worker that outlived a kill would hold a pipe open.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_tree(proc)
                timed_out = True
            out.seek(0), err.seek(0)
            stdout, stderr = out.read(), err.read()
        if timed_out:
            pytest.fail(
                f"torchrun with {nproc} processes was still running after {timeout:g} s and was "
                "killed with its workers; 127.0.0.1 accepted a connection, so the workers were "
                f"probably waiting for each other. Command: {' '.join(cmd)}\n"
                f"End of its output:\n{(stdout + stderr)[-3000:]}",
                pytrace=False,
            )
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)

    return run
