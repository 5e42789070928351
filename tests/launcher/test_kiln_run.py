"""Tests of tools/kiln-run, the launcher, with small Python programs (rank_child.py) as ranks.

They check the environment each rank gets, output prefixing and per-rank logs (with a
log on /dev/full and on a full 64 KiB tmpfs: a write error is reported and the launcher
exits non-zero), and the fault handling: a failing or signalled rank stops the job,
Ctrl-C/SIGTERM stop it, a rank that ignores SIGTERM is killed after the grace period, and
no process outlives the launcher, not even when the launcher itself is killed with SIGKILL. Every test finds the
processes it must see gone from the pid files the ranks write.

usage: [KILN_RUN=path/to/kiln-run] python3 test_kiln_run.py [unittest options, test names]
(the launcher under test is $KILN_RUN, else tools/kiln-run of this checkout)
"""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
KILN_RUN = os.environ.get("KILN_RUN") or os.path.join(HERE, "..", "..", "tools", "kiln-run")
CHILD = os.path.join(HERE, "rank_child.py")
# Bounds on waiting, so that a broken launcher fails a test instead of hanging it.
LAUNCHER_TIMEOUT = 60
WAIT_TIMEOUT = 20


def alive(pid):
    """True while pid names a process that is not a zombie (an orphan's zombie may linger
    when PID 1 does not reap, but it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return False
    return s[s.rfind(b")") + 2:s.rfind(b")") + 3] not in (b"Z", b"X")


def test_env():
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KILN_NUM_THREADS", "KILN_RUN_GRACE_PERIOD", "RANK",
              "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


class LauncherTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kiln_run_test_")
        self.launcher = None

    def tearDown(self):
        # Whatever a failed test left behind goes, by pid.
        if self.launcher is not None and self.launcher.poll() is None:
            self.launcher.kill()
            self.launcher.wait()
        for pid in self.pids_in("pid.") + self.pids_in("grandchild."):
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------

    def command(self, options, specs):
        return ([sys.executable, KILN_RUN] + options + [sys.executable, CHILD, self.dir] + specs)

    def run_launcher(self, options, specs, env=None):
        """Runs kiln-run to the end; returns (exit code, stdout, stderr, seconds)."""
        t0 = time.monotonic()
        # Bytes, decoded by hand: text mode would turn the '\r' under test into '\n'.
        p = subprocess.run(self.command(options, specs), cwd=self.dir, env=env or test_env(),
                           capture_output=True, timeout=LAUNCHER_TIMEOUT)
        return (p.returncode, p.stdout.decode(), p.stderr.decode(), time.monotonic() - t0)

    def start_launcher(self, options, specs):
        self.launcher = subprocess.Popen(self.command(options, specs), cwd=self.dir,
                                         env=test_env(), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
        return self.launcher

    def pids_in(self, prefix):
        pids = []
        for name in sorted(os.listdir(self.dir)) if os.path.isdir(self.dir) else []:
            if name.startswith(prefix) and not name.endswith(".tmp"):
                with open(os.path.join(self.dir, name)) as f:
                    pids.append(int(f.read()))
        return pids

    def wait_for_files(self, names):
        deadline = time.monotonic() + WAIT_TIMEOUT
        while time.monotonic() < deadline:
            if all(os.path.exists(os.path.join(self.dir, n)) for n in names):
                return
            time.sleep(0.02)
        self.fail(f"ranks did not write {names} within {WAIT_TIMEOUT} s")

    def env_of(self, rank):
        with open(os.path.join(self.dir, f"env.{rank}.json")) as f:
            return json.load(f)

    def assert_all_gone(self, world, grandchildren=()):
        pids = self.pids_in("pid.")
        self.assertEqual(len(pids), world, "every rank should have written its pid")
        left = [p for p in pids if alive(p)]
        self.assertEqual(left, [], "rank processes still running after kiln-run returned")
        left = [p for p in self.pids_in("grandchild.") if alive(p)]
        self.assertEqual(left, [], "processes started by ranks still running")

    def has_term(self, rank):
        return os.path.exists(os.path.join(self.dir, f"term.{rank}"))

    # -- environment ---------------------------------------------------------------------

    def test_env_single_node(self):
        rc, out, err, _ = self.run_launcher(["--nproc-per-node", "3"], ["*=done"])
        self.assertEqual(rc, 0, err)
        envs = [self.env_of(r) for r in range(3)]
        for r, e in enumerate(envs):
            self.assertEqual(e["RANK"], str(r))
            self.assertEqual(e["LOCAL_RANK"], str(r))
            self.assertEqual(e["WORLD_SIZE"], "3")
            self.assertEqual(e["LOCAL_WORLD_SIZE"], "3")
            self.assertEqual(e["GROUP_RANK"], "0")
            self.assertEqual(e["MASTER_ADDR"], "127.0.0.1")
            self.assertEqual(e["OMP_NUM_THREADS"], "1")
            self.assertEqual(e["OPENBLAS_NUM_THREADS"], "1")
            self.assertGreaterEqual(int(e["KILN_NUM_THREADS"]), 1)
            self.assertEqual(e["argv"], ["*=done"])
        ports = {e["MASTER_PORT"] for e in envs}
        self.assertEqual(len(ports), 1, "all ranks must share one MASTER_PORT")
        self.assertTrue(1 <= int(ports.pop()) <= 65535)
        self.assertEqual(err.count("OMP_NUM_THREADS=1"), 1, err)

    def test_env_multi_node_torchrun_spelling(self):
        rc, out, err, _ = self.run_launcher(
            ["--nnodes", "2", "--node_rank", "1", "--master_addr", "10.1.2.3",
             "--master_port", "23456", "--nproc_per_node", "2", "--no_python"], ["*=done"])
        self.assertEqual(rc, 0, err)
        for local in range(2):
            e = self.env_of(2 + local)
            self.assertEqual(e["RANK"], str(2 + local))
            self.assertEqual(e["LOCAL_RANK"], str(local))
            self.assertEqual(e["WORLD_SIZE"], "4")
            self.assertEqual(e["LOCAL_WORLD_SIZE"], "2")
            self.assertEqual(e["GROUP_RANK"], "1")
            self.assertEqual(e["GROUP_WORLD_SIZE"], "2")
            self.assertEqual(e["MASTER_ADDR"], "10.1.2.3")
            self.assertEqual(e["MASTER_PORT"], "23456")

    def test_multi_node_default_port(self):
        rc, out, err, _ = self.run_launcher(
            ["--nnodes", "2", "--node-rank", "0", "--master-addr", "127.0.0.1"], ["*=done"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.env_of(0)["MASTER_PORT"], "29500")
        self.assertEqual(self.env_of(0)["WORLD_SIZE"], "2")

    def test_thread_env_left_to_user(self):
        env = test_env()
        env["OMP_NUM_THREADS"] = "4"
        rc, out, err, _ = self.run_launcher(["--nproc-per-node", "2"], ["*=done"], env=env)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.env_of(1)["OMP_NUM_THREADS"], "4")
        self.assertIsNone(self.env_of(1)["OPENBLAS_NUM_THREADS"])
        self.assertIsNotNone(self.env_of(1)["KILN_NUM_THREADS"])
        # One rank on the node: nothing to oversubscribe, nothing set.
        rc, out, err, _ = self.run_launcher([], ["*=done"])
        self.assertEqual(rc, 0, err)
        self.assertIsNone(self.env_of(0)["OMP_NUM_THREADS"])

    # -- output --------------------------------------------------------------------------

    def test_output_prefixed_by_rank(self):
        rc, out, err, _ = self.run_launcher(["--nproc-per-node", "2"], ["*=print"])
        self.assertEqual(rc, 0, err)
        for r in range(2):
            self.assertIn(f"[rank {r}] out line from {r}\n", out)
            self.assertIn(f"[rank {r}] err line from {r}\n", err)
            # A '\r' ends a line too, and the '\n' after it adds no empty line.
            self.assertIn(f"[rank {r}] progress 1 of {r}\r[rank {r}] progress 2 of {r}\r\n", out)
            # The last line, without a newline, is not lost.
            self.assertIn(f"[rank {r}] tail of {r}\n", out)
        self.assertNotIn("err line", out)
        self.assertNotIn("out line", err)
        for line in out.replace("\r", "\n").splitlines():
            if line:
                self.assertRegex(line, r"^\[rank [01]\] ")

    def test_log_dir(self):
        logs = os.path.join(self.dir, "logs")
        rc, out, err, _ = self.run_launcher(["--nproc-per-node", "2", "--log-dir", logs],
                                            ["*=print"])
        self.assertEqual(rc, 0, err)
        self.assertNotIn("line from", out + err)
        self.assertIn(logs, err, "kiln-run should say where the logs go")
        for r in range(2):
            with open(os.path.join(logs, f"rank_{r}.log")) as f:
                log = f.read()
            self.assertIn(f"out line from {r}\n", log)
            self.assertIn(f"err line from {r}\n", log)
            self.assertNotIn(f"from {1 - r}", log)

    def test_log_dir_keeps_output_unchanged(self):
        # The launcher copies each rank's output into its log: byte for byte, no prefix,
        # '\r' kept, the last line without a newline kept as it is.
        logs = os.path.join(self.dir, "logs")
        rc, out, err, _ = self.run_launcher(["--log-dir", logs], ["*=print"])
        self.assertEqual(rc, 0, err)
        with open(os.path.join(logs, "rank_0.log"), "rb") as f:
            log = f.read()
        self.assertIn(b"progress 1 of 0\rprogress 2 of 0\r\n", log)
        self.assertTrue(log.endswith(b"tail of 0"), log)
        self.assertNotIn(b"[rank", log)

    @unittest.skipUnless(os.path.exists("/dev/full"), "no /dev/full")
    def test_log_dir_write_error_is_reported(self):
        # rank_0.log is a symlink to /dev/full: every write to it fails with ENOSPC, as on
        # a full disk. The job still runs to the end (rank 1's log is whole), but kiln-run
        # names the file and the error and exits non-zero although both ranks succeeded.
        logs = os.path.join(self.dir, "logs")
        os.mkdir(logs)
        full_log = os.path.join(logs, "rank_0.log")
        os.symlink("/dev/full", full_log)
        rc, out, err, _ = self.run_launcher(["--nproc-per-node", "2", "--log-dir", logs],
                                            ["*=print"])
        print(f"\n  log on /dev/full -> kiln-run exited {rc}; stderr:\n{err}", file=sys.stderr)
        self.assertEqual(rc, 1, err)
        self.assertIn(f"cannot write {full_log}, the log of rank 0", err)
        self.assertIn("No space left on device", err)
        self.assertRegex(err, rf"error: {full_log} \(rank 0\) is incomplete: write failed: No space "
                              r"left on device; 0 bytes written, \d+ bytes of output lost")
        self.assertNotIn("rank_1.log (rank 1) is incomplete", err)
        with open(os.path.join(logs, "rank_1.log")) as f:
            log = f.read()
        self.assertIn("out line from 1\n", log)
        self.assertTrue(log.endswith("tail of 1"))
        self.assert_all_gone(2)
        # A failed rank's exit code still comes first.
        shutil.rmtree(self.dir)
        os.makedirs(logs)
        os.symlink("/dev/full", full_log)
        rc, out, err, _ = self.run_launcher(["--nproc-per-node", "2", "--log-dir", logs],
                                            ["1=exit:4", "*=sleep"])
        self.assertEqual(rc, 4, err)
        self.assertIn("[rank 1] rank 1 gives up with exit code 4\n", err)

    def test_log_dir_on_a_full_tmpfs(self):
        # A real full disk: a 64 KiB tmpfs as --log-dir, a rank writing 300 KB. The log
        # holds what fitted, whole; kiln-run says how much was written and lost, exit 1.
        logs = os.path.join(self.dir, "logs")
        os.mkdir(logs)
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", logs],
                           capture_output=True, text=True)
        if m.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs here: {m.stderr.strip()}")
        try:
            rc, out, err, _ = self.run_launcher(["--log-dir", logs], ["*=print-big"])
            self.assertEqual(rc, 1, err)
            self.assertIn("No space left on device", err)
            log = os.path.join(logs, "rank_0.log")
            match = re.search(
                rf"{log} \(rank 0\) is incomplete: write failed: No space left on device; "
                r"(\d+) bytes written, (\d+) bytes of output lost", err)
            self.assertIsNotNone(match, err)
            written, lost = int(match.group(1)), int(match.group(2))
            self.assertGreater(written, 0)
            self.assertGreater(lost, 0)
            self.assertEqual(written + lost, 300 * 1000)
            self.assertEqual(os.path.getsize(log), written)
            with open(log, "rb") as f:
                self.assertTrue(f.read().startswith(b"000000 xxx"))
        finally:
            subprocess.run(["umount", logs], capture_output=True)

    @unittest.skipUnless(os.path.exists("/dev/full"), "no /dev/full")
    def test_stdout_write_error_is_reported(self):
        # kiln-run's own stdout on a full disk: the ranks' output is lost, and kiln-run
        # says so and exits non-zero. (A closed pipe, as under `| head`, only drops it.)
        with open("/dev/full", "wb") as full:
            p = subprocess.run(self.command(["--nproc-per-node", "2"], ["*=print"]),
                               cwd=self.dir, env=test_env(), stdout=full,
                               stderr=subprocess.PIPE, timeout=LAUNCHER_TIMEOUT)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("cannot write the ranks' output to kiln-run's stdout", err)
        self.assertIn("No space left on device", err)
        self.assert_all_gone(2)

    # -- failures ------------------------------------------------------------------------

    def test_failing_rank_stops_the_others(self):
        rc, out, err, seconds = self.run_launcher(["--nproc-per-node", "3"],
                                                  ["1=exit:3", "*=sleep"])
        print(f"\n  failing rank -> kiln-run exited {rc} after {seconds:.2f} s", file=sys.stderr)
        self.assertNotEqual(rc, 0)
        self.assertEqual(rc, 3, "kiln-run should exit with the failed rank's code")
        self.assertLess(seconds, 30)
        self.assertRegex(err, r"rank 1 \(local rank 1\) on host \S+ failed: exit code 3")
        self.assert_all_gone(3)
        self.assertTrue(self.has_term(0) and self.has_term(2),
                        "the other ranks should be stopped with SIGTERM first")

    def test_rank_killed_by_signal(self):
        rc, out, err, _ = self.run_launcher(["--nproc-per-node", "2"],
                                            [f"0=signal:{int(signal.SIGSEGV)}", "*=sleep"])
        self.assertEqual(rc, 128 + signal.SIGSEGV, err)
        self.assertRegex(err, r"rank 0 \(local rank 0\) on host \S+ failed: killed by signal "
                              rf"{int(signal.SIGSEGV)} \(SIGSEGV\)")
        self.assert_all_gone(2)

    def test_failure_with_log_dir_shows_the_log(self):
        logs = os.path.join(self.dir, "logs")
        rc, out, err, _ = self.run_launcher(["--nproc-per-node", "2", "--log-dir", logs],
                                            ["1=exit:5", "*=sleep"])
        self.assertEqual(rc, 5, err)
        self.assertRegex(err, r"rank 1 \(local rank 1\) on host \S+ failed: exit code 5")
        self.assertIn(os.path.join(logs, "rank_1.log"), err)
        self.assertIn("[rank 1] rank 1 gives up with exit code 5\n", err,
                      "the end of the failed rank's log should be shown")
        self.assert_all_gone(2)

    def test_rank_ignoring_sigterm_is_killed_after_grace(self):
        rc, out, err, _ = self.run_launcher(["--nproc-per-node", "2", "--grace-period", "1"],
                                            ["0=exit:1", "1=ignore-term"])
        self.assertEqual(rc, 1, err)
        self.assertTrue(self.has_term(1), "SIGTERM should come before SIGKILL")
        self.assertIn("SIGKILL", err)
        self.assert_all_gone(2)

    def test_processes_started_by_ranks_are_stopped(self):
        rc, out, err, _ = self.run_launcher(["--nproc-per-node", "2"],
                                            ["0=exit:2", "1=grandchild"])
        self.assertEqual(rc, 2, err)
        self.wait_for_files(["grandchild.1"])
        self.assert_all_gone(2)
        # A rank that exits 0 but leaves a process behind: the job succeeded, the process
        # still goes.
        shutil.rmtree(self.dir)
        os.mkdir(self.dir)
        rc, out, err, _ = self.run_launcher(["--grace-period", "1"], ["0=grandchild-exit"])
        self.assertEqual(rc, 0, err)
        self.assertIn("left processes behind", err)
        self.assert_all_gone(1)

    # -- the launcher stopped from outside -----------------------------------------------

    def stop_launcher_with(self, sig, expected_rc):
        p = self.start_launcher(["--nproc-per-node", "2"], ["*=sleep"])
        self.wait_for_files(["pid.0", "pid.1"])
        p.send_signal(sig)
        try:
            out, err = p.communicate(timeout=LAUNCHER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail(f"kiln-run did not exit after {signal.Signals(sig).name}")
        self.assertEqual(p.returncode, expected_rc, err)
        self.assertIn(signal.Signals(sig).name, err)
        self.assert_all_gone(2)
        self.assertTrue(self.has_term(0) and self.has_term(1))

    def test_sigint_stops_all(self):
        self.stop_launcher_with(signal.SIGINT, 130)

    def test_sigterm_stops_all(self):
        self.stop_launcher_with(signal.SIGTERM, 143)

    def test_sigkill_of_launcher_leaves_no_orphans(self):
        p = self.start_launcher(["--nproc-per-node", "2"], ["*=ignore-term"])
        self.wait_for_files(["pid.0", "pid.1"])
        pids = self.pids_in("pid.")
        self.assertTrue(all(alive(pid) for pid in pids))
        p.kill()
        p.communicate()
        # PR_SET_PDEATHSIG delivers SIGKILL to the ranks when the launcher dies; they are
        # gone a moment later.
        deadline = time.monotonic() + WAIT_TIMEOUT
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual([pid for pid in pids if alive(pid)], [],
                         "ranks outlived a SIGKILLed launcher")

    # -- arguments -----------------------------------------------------------------------

    def run_args(self, args):
        p = subprocess.run([sys.executable, KILN_RUN] + args, cwd=self.dir, env=test_env(),
                           capture_output=True, text=True, timeout=LAUNCHER_TIMEOUT)
        return p.returncode, p.stderr

    def test_bad_arguments(self):
        cases = [
            (["--nnodes", "2", "--node-rank", "2", "--master-addr", "h", "true"], 2,
             r"--node-rank 2 is out of range"),
            (["--nnodes", "2", "--node-rank", "1", "true"], 2, r"needs --master-addr"),
            (["--nproc-per-node", "0", "true"], 2, r"at least 1"),
            (["--nproc-per-node", "two", "true"], 2, r"--nproc-per-node"),
            (["--nnodes", "1:4", "true"], 2, r"elastic"),
            (["--master-port", "70000", "true"], 2, r"1\.\.65535"),
            (["--grace-period", "-1", "true"], 2, r"--grace-period"),
            (["--standalone", "--nnodes", "2", "--master-addr", "h", "true"], 2, r"single-node"),
            (["--nproc-per-node", "2"], 2, r"no PROGRAM"),
            (["no-such-program-kiln-run-test"], 127, r"no-such-program-kiln-run-test"),
            ([os.path.join(self.dir, "missing")], 127, r"no such file"),
        ]
        for args, code, message in cases:
            with self.subTest(args=args):
                rc, err = self.run_args(args)
                self.assertEqual(rc, code, err)
                self.assertRegex(err, message)

    def test_help(self):
        p = subprocess.run([sys.executable, KILN_RUN, "--help"], capture_output=True, text=True,
                           timeout=LAUNCHER_TIMEOUT)
        self.assertEqual(p.returncode, 0)
        for word in ("--nproc-per-node", "--nnodes", "--node-rank", "--master-addr",
                     "--log-dir", "--grace-period", "LOCAL_RANK", "SIGKILL"):
            self.assertIn(word, p.stdout)

    def test_script_runs_by_itself(self):
        mode = os.stat(KILN_RUN).st_mode
        self.assertTrue(mode & stat.S_IXUSR, "tools/kiln-run should be executable")
        with open(KILN_RUN) as f:
            self.assertEqual(f.readline().strip(), "#!/usr/bin/env python3")
        p = subprocess.run([KILN_RUN, "true"], capture_output=True, text=True,
                           timeout=LAUNCHER_TIMEOUT)
        self.assertEqual(p.returncode, 0, p.stderr)


if __name__ == "__main__":
    KILN_RUN = os.path.abspath(KILN_RUN)
    unittest.main(verbosity=2)
